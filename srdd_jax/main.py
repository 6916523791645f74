"""Command line: `python -m srdd_jax.main --config=configs/demo.py --workdir=DIR`.

Every config field can be overridden, e.g. `--config.training.steps=100`; `--config.mode` picks
train_tokenizer, train (trains the tokenizer first unless config.init.tokenizer is set), sample
or convert.
"""

import os

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from srdd_jax import experiment

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "directory for checkpoints, logs and samples",
                               required=True)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("SRDD_MULTIHOST"):
        jax.distributed.initialize()
    logging.info("JAX %s on %d devices (%d processes)", jax.__version__, jax.device_count(),
                 jax.process_count())
    experiment.run(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main)
