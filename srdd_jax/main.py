"""Command line: `python -m srdd_jax.main --config=configs/demo.py --workdir=DIR`.

Every config field can be overridden, e.g. `--config.training.steps=100`; `--config.mode` picks
train_tokenizer, train (trains the tokenizer first unless config.init.tokenizer is set), sample
or convert. The console shows the project's own lines; `--all_logs` adds third-party INFO, which
otherwise goes only to WORKDIR/logs/full.log (see console.py).

Known failures (errors.KnownError: a bad config value, data that disagrees with the model, a
missing file, a damaged or incompatible checkpoint, a non-finite loss, a workdir held by another
run, a full disk) end the run with their message alone, `error: ...` on stderr and exit status 1;
`--debug` shows the full traceback instead. SIGTERM or SIGINT (once) stops the run cleanly
(`preemption`): training saves a checkpoint of the step it reached; the run ends with one line
saying where it resumes and exit status 75 (errors.PREEMPTED_EXIT_CODE). A second signal kills it.
"""

import os
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from srdd_jax import compilation_cache, console, errors, preemption

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "directory for checkpoints, logs and samples",
                               required=True)
_DEBUG = flags.DEFINE_bool("debug", False, "on a known failure (bad config, missing file, damaged "
                           "or incompatible checkpoint, non-finite loss), raise it with its full "
                           "traceback instead of printing its message alone")
_ALL_LOGS = flags.DEFINE_bool("all_logs", False, "also print third-party INFO lines (orbax, clu, JAX, "
                              "TensorFlow) on the console; by default they go only to "
                              "WORKDIR/logs/full.log")


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
    sys.unraisablehook = _drop_event_loop_noise
    multihost = bool(os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("SRDD_MULTIHOST"))
    if multihost:
        jax.distributed.initialize(**distributed_args())
    full_log = None
    if not _ALL_LOGS.value:  # (single host: no backend query yet, so JAX's probing lines are routed)
        full_log = console.full_log_path(_WORKDIR.value, jax.process_index() if multihost else 0)
        console.route(full_log, library_tracebacks=_DEBUG.value)
    with console.native_stderr_to(full_log):
        from srdd_jax import experiment  # imports TensorFlow, whose C++ start-up notes go to the log

    cache = compilation_cache.enable(_CONFIG.value.get("compilation_cache", ""))
    logging.info("JAX %s on %d devices (%d processes); compilation cache: %s", jax.__version__,
                 jax.device_count(), jax.process_count(), cache or "off")
    if full_log:
        logging.info("full log (third-party INFO too): %s; --all_logs prints it here", full_log)
    try:
        with preemption.handle_signals():
            experiment.run(_CONFIG.value, _WORKDIR.value, model_overrides())
    except errors.KnownError as error:
        if _DEBUG.value:
            raise
        logging.flush()
        print(f"error: {error}", file=sys.stderr, flush=True)
        if getattr(error, "pending_writes", False):  # the machine is going away: do not wait
            sys.stdout.flush()
            os._exit(error.exit_code)
        sys.exit(error.exit_code)


def model_overrides() -> dict:
    """The --config.model.* flags given, as {dotted path under config.model: value}."""
    given = config_flags.get_override_values(flags.FLAGS["config"])
    return {path[len("model."):]: value for path, value in given.items() if path.startswith("model.")}


# The coroutine of orbax that reads one array; after one read fails, the others are abandoned.
_ORBAX_ARRAY_READ = "_read_array_index_and_device_put"


def _drop_event_loop_noise(unraisable) -> None:
    """sys.unraisablehook: after a failed orbax read (already reported as one error), its
    leftovers would each print a traceback: tensorstore's callbacks reaching the asyncio loop orbax
    has closed ('RuntimeError: Event loop is closed'), and the abandoned reads of other arrays
    failing as they are closed. Those are dropped; anything else is printed as usual."""
    closed_loop = (isinstance(unraisable.exc_value, RuntimeError)
                   and str(unraisable.exc_value) == "Event loop is closed")
    abandoned_read = getattr(unraisable.object, "__name__", None) == _ORBAX_ARRAY_READ
    if not (closed_loop or abandoned_read):
        sys.__unraisablehook__(unraisable)


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main)
