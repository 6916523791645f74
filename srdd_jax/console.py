"""Which log lines reach the console of `python -m srdd_jax.main`.

By default the console shows the project's own lines (what runs, the data found, progress with
rate and ETA, losses, where files were written) and every library's warnings and errors (their
tracebacks only in the full log, unless `--debug`). Every
line, third-party INFO included (orbax's checkpoint handlers, clu's metric lines, JAX's backend
probing, TensorFlow's start-up notes), also goes to the full log, `WORKDIR/logs/full.log`.
`--all_logs` puts everything on the console, as before.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys

from absl import logging as absl_logging

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
FULL_LOG = "full.log"


def is_project_record(record: logging.LogRecord) -> bool:
    """True for records logged from the srdd_jax package itself."""
    return os.path.abspath(record.pathname).startswith(PACKAGE_DIR + os.sep)


class ProjectOrWarning(logging.Filter):
    """Passes the project's records and any library's warnings and errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or is_project_record(record)


class LibraryTracebacksToTheLog(absl_logging.PythonFormatter):
    """The console's formatter: a library's record that carries a traceback (orbax reporting a
    failed background save, asyncio an exception nobody retrieved) shows its message alone, with
    a pointer to the full log, which keeps the traceback. The run's own error is reported once,
    as `error: ...`."""

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info and not is_project_record(record):
            record = logging.makeLogRecord(dict(record.__dict__, exc_info=None, exc_text=None,
                                                stack_info=None))
            record.msg = f"{record.msg} (traceback in the full log)"
        return super().format(record)


def full_log_path(workdir: str, process_index: int = 0) -> str | None:
    """WORKDIR/logs/full.log (full_process<i>.log on other processes), its folder created; None
    for a remote workdir (gs://), where Python's file handler cannot write."""
    if "://" in workdir:
        return None
    logs = os.path.join(workdir, "logs")
    os.makedirs(logs, exist_ok=True)
    return os.path.join(logs, FULL_LOG if process_index == 0 else f"full_process{process_index}.log")


def route(full_log: str | None, library_tracebacks: bool = False) -> None:
    """Keeps third-party INFO off the console (absl's handler), and libraries' tracebacks unless
    `library_tracebacks`, and sends every record to `full_log` (appended; None: none is
    written). A log write that fails (a full disk) is dropped without a traceback."""
    handler = absl_logging.get_absl_handler()
    handler.addFilter(ProjectOrWarning())
    if not library_tracebacks:
        handler.setFormatter(LibraryTracebacksToTheLog())
    logging.raiseExceptions = False
    if full_log:
        handler = logging.FileHandler(full_log)
        handler.setFormatter(absl_logging.PythonFormatter())
        logging.getLogger().addHandler(handler)


@contextlib.contextmanager
def native_stderr_to(path: str | None):
    """Sends what native code writes to file descriptor 2 during the block into `path` (appended).

    TensorFlow's C++ start-up notes ("oneDNN custom operations are on", ...) are printed this
    way when it is imported, whatever TF_CPP_MIN_LOG_LEVEL says. Python exceptions raised in the
    block still reach the console: they are printed after the block. None: no redirection.
    """
    if path is None:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(path, "ab") as log:
            os.dup2(log.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
