"""Failures the user can fix from the message alone. `python -m srdd_jax.main` prints them as one
error message (what, where, how to fix) and exits with the error's `exit_code` (1, or
`PREEMPTED_EXIT_CODE` for a run stopped by a signal); `--debug` adds the full traceback."""

import errno

# A run stopped by SIGTERM/SIGINT after saving its state: rerunning the command resumes it
# (75 is EX_TEMPFAIL of sysexits.h, "temporary failure, try again").
PREEMPTED_EXIT_CODE = 75


class KnownError(Exception):
    """Base class: the message says what failed, where, and how to fix it."""

    exit_code = 1


class ConfigError(KnownError, ValueError):
    """A config field with a bad value (the message names the field)."""


class MissingFileError(KnownError, FileNotFoundError):
    """A file or directory the run needs is not there."""


class OutputExistsError(KnownError, FileExistsError):
    """An output would overwrite something that must be kept."""


class DamagedCheckpointError(KnownError):
    """A checkpoint, model directory or token cache that does not load, or whose arrays do not
    match the fingerprint recorded when it was saved."""


class IncompatibleCheckpointError(KnownError, ValueError):
    """A checkpoint (or token cache) made by another model config than the run's."""


class DataReadError(KnownError):
    """The input pipeline could not go on: a data worker died, or a whole batch was unreadable."""


class WorkdirHeldError(KnownError):
    """Another run holds the workdir (its lock names the holder)."""


class NoSpaceError(KnownError, OSError):
    """A write failed because its filesystem is full (or over its quota)."""


class PreemptedError(KnownError):
    """The run was asked to stop (SIGTERM/SIGINT) and stopped cleanly: what it finished is saved,
    nothing half-written is left as complete; rerunning the command resumes it."""

    exit_code = PREEMPTED_EXIT_CODE

    def __init__(self, message: str, pending_writes: bool = False):
        super().__init__(message)
        # True when a write was still running at the deadline: the process should end without
        # waiting for it (it is never taken for complete).
        self.pending_writes = pending_writes


_NO_SPACE_SIGNS = ("No space left", "ENOSPC", "Disk quota exceeded", "EDQUOT",
                   "RESOURCE_EXHAUSTED: Error writing")


def is_no_space(error: BaseException) -> bool:
    """Whether `error` (or an error it was raised from) is a write refused for lack of space:
    an OSError with errno ENOSPC/EDQUOT, or a storage library's message saying so (tensorstore
    reports it as RESOURCE_EXHAUSTED)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(sign in str(error) for sign in _NO_SPACE_SIGNS):
            return True
        error = error.__cause__ or error.__context__
    return False


def first_line(error: BaseException) -> str:
    """`Type: first line of the message`, for one-line reports of a caught exception."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"
