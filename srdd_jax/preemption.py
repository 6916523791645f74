"""Stopping cleanly when the machine is about to be taken away (SIGTERM) or the user presses
Ctrl-C (SIGINT).

Cloud TPU and spot GPU machines send SIGTERM shortly before they are reclaimed. Inside
`handle_signals()`, the first SIGTERM or SIGINT only records the request; the work checks it at
points where stopping loses nothing (the training loop after each step, samplers and encoders
between batches), finishes what it must write and raises errors.PreemptedError, which the command
line turns into one line and exit code errors.PREEMPTED_EXIT_CODE. A second signal stops the
process as it would have without the handler (SIGTERM kills it, SIGINT raises KeyboardInterrupt).

In a multi-process run the processes must agree on the step at which they stop, since the save is
a collective: `stop_agreed()` gathers every process's flag (one small all-gather, in the training
loop once per step), so all see the request at the same step, whichever process got the signal.
"""

from __future__ import annotations

import contextlib
import signal
import threading

from srdd_jax import errors, parallel

_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_requested: list[str] = []  # names of the signals received, in order
_previous_handlers: dict = {}  # what handle_signals replaced


def _on_signal(signum, frame) -> None:
    if _requested:  # the second request: what the signal did before (kill, KeyboardInterrupt)
        signal.signal(signum, _previous_handlers.get(signum, signal.SIG_DFL))
        signal.raise_signal(signum)
        return
    _requested.append(signal.Signals(signum).name)


@contextlib.contextmanager
def handle_signals():
    """Within the block, SIGTERM and SIGINT request a clean stop instead of killing the process
    (main thread only; elsewhere the block runs with the handlers as they are)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _requested.clear()
    _previous_handlers.update({sig: signal.signal(sig, _on_signal) for sig in _SIGNALS})
    try:
        yield
    finally:
        for sig in _SIGNALS:
            signal.signal(sig, _previous_handlers.pop(sig))
        _requested.clear()


def request(reason: str = "a request") -> None:
    """Requests a stop as a signal would (for tests and for callers with their own triggers)."""
    if not _requested:
        _requested.append(reason)


def requested() -> str:
    """The signal that requested a stop on this process ('' when none did)."""
    return _requested[0] if _requested else ""


def stop_agreed() -> str:
    """Whether any process has been asked to stop: the first such signal's name, or ''. A
    collective in a multi-process run (every process must call it at the same point)."""
    local = requested()
    if not parallel.any_process(bool(local)):
        return ""
    return local or "a signal on another process"


def check_between_batches(what: str, done: int, total: int, unit: str) -> None:
    """Raises errors.PreemptedError if a stop was requested (on any process; a collective): for
    loops that write their results only at the end, so stopping loses nothing written."""
    signal_name = stop_agreed()
    if signal_name:
        raise errors.PreemptedError(
            f"{what}: stopped by {signal_name} after {done} of {total} {unit}; nothing was written "
            "for them. Rerun the same command to start it again.")
