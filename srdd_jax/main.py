"""Command line: `python -m srdd_jax.main --config=configs/demo.py --workdir=DIR`.

Every config field can be overridden, e.g. `--config.training.steps=100`; `--config.mode` picks
train_tokenizer, train (trains the tokenizer first unless config.init.tokenizer is set), sample
or convert.
"""

import os

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from srdd_jax import compilation_cache, experiment

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "directory for checkpoints, logs and samples",
                               required=True)


def distributed_args() -> dict:
    """`num_processes` / `process_id` for `jax.distributed.initialize` from SRDD_NUM_PROCESSES /
    SRDD_PROCESS_ID (set per node by launch/gpu_cluster.py ssh); unset ones are left to JAX's
    auto-detection (Cloud TPU, SLURM, Open MPI). JAX reads JAX_COORDINATOR_ADDRESS itself."""
    args = {}
    for var, name in (("SRDD_NUM_PROCESSES", "num_processes"), ("SRDD_PROCESS_ID", "process_id")):
        value = os.environ.get(var)
        if value is not None:
            if not value.isdigit():
                raise app.UsageError(f"{var} must be a non-negative integer, got {value!r}")
            args[name] = int(value)
    return args


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("SRDD_MULTIHOST"):
        jax.distributed.initialize(**distributed_args())
    cache = compilation_cache.enable(_CONFIG.value.get("compilation_cache", ""))
    logging.info("JAX %s on %d devices (%d processes); compilation cache: %s", jax.__version__,
                 jax.device_count(), jax.process_count(), cache or "off")
    experiment.run(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main)
