"""Failures the user can fix from the message alone. `python -m srdd_jax.main` prints them as one
error message (what, where, how to fix) and exits 1; `--debug` adds the full traceback."""


class KnownError(Exception):
    """Base class: the message says what failed, where, and how to fix it."""


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


def first_line(error: BaseException) -> str:
    """`Type: first line of the message`, for one-line reports of a caught exception."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"
