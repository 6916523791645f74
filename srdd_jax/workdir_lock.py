"""One run per workdir: an advisory lock file that names its holder.

Modes that write the workdir's shared state (training runs, tokenize, distill, convert) take
`WORKDIR/.lock`; modes that only read it and write their own outputs (sample, edit, evaluate) take
`WORKDIR/.lock_<mode>`, so they run beside a training run but not beside themselves. A second run
that finds the lock held stops at once with `errors.WorkdirHeldError` naming the holder (mode,
host, PID, start time) read from the file.

The lock is `fcntl.flock` on a local (or NFS) path: the kernel releases it when the holder's
process ends, however it ends. The file keeps the holder's record until the holder releases it,
so a record found under a free lock was left by a run that ended without releasing it (killed,
machine lost): that stale lock is reported in the log and taken over. Object-store workdirs
(`gs://`) cannot be locked: the lock is skipped there, with a log line saying so. In a
multi-process run process 0 takes the lock for all; every process learns the outcome.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from srdd_jax import errors

WRITER_LOCK = ".lock"


def lock_name(mode: str, writes_shared_state: bool) -> str:
    """The lock file a mode takes: the writers' `.lock`, or `.lock_<mode>` for a mode that writes
    only its own outputs."""
    return WRITER_LOCK if writes_shared_state else f"{WRITER_LOCK}_{mode}"


def holder_record(mode: str) -> dict:
    """What the lock file says about the run that holds it."""
    return {"mode": mode, "host": socket.gethostname(), "pid": os.getpid(),
            "since": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")}


def describe(record: dict) -> str:
    """`mode train, PID 1234 on host h, since 2026-12-05 11:00:00 UTC` (or what the record holds)."""
    if not record:
        return "a run that left no record"
    return (f"mode {record.get('mode', '?')}, PID {record.get('pid', '?')} on host "
            f"{record.get('host', '?')}, since {record.get('since', '?')}")


def _read_record(handle) -> dict:
    handle.seek(0)
    text = handle.read().strip()
    if not text:
        return {}
    try:
        return json.loads(text)
    except ValueError:
        return {"mode": "unknown", "record": text[:200]}


class WorkdirLock:
    """The lock file `path`, held by this process between `acquire` and `release`."""

    def __init__(self, path: str, mode: str):
        self.path, self.mode, self._handle = path, mode, None

    def acquire(self) -> None:
        """Takes the lock, or raises errors.WorkdirHeldError naming its holder. A stale record
        (its run ended without releasing the lock) is reported and replaced."""
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_record(handle)
            handle.close()
            raise errors.WorkdirHeldError(
                f"{os.path.dirname(self.path)} is in use by another run ({describe(holder)}; lock "
                f"file {self.path}). Wait for it to finish or stop it, or use another --workdir."
                ) from None
        stale = _read_record(handle)
        if stale:
            logging.warning("workdir lock %s: taking over a stale lock (%s ended without "
                            "releasing it)", self.path, describe(stale))
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(holder_record(self.mode)))
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        """Empties the record (so the next holder sees no stale lock) and unlocks."""
        if self._handle is None:
            return
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.flush()
        fcntl.flock(self._handle, fcntl.LOCK_UN)
        self._handle.close()
        self._handle = None


def _all_processes_got_it(failure: str) -> str:
    """Process 0's failure message, as every process sees it ('' when the lock was taken)."""
    if jax.process_count() == 1:
        return failure
    code = np.frombuffer(failure.encode()[:1024].ljust(1024, b"\0"), np.uint8)
    received = multihost_utils.broadcast_one_to_all(code)
    return bytes(np.asarray(received)).rstrip(b"\0").decode(errors="replace")


@contextlib.contextmanager
def hold(workdir: str, mode: str, writes_shared_state: bool):
    """Holds the workdir's lock for `mode` while the block runs (see the module docstring)."""
    if "://" in workdir:
        logging.info("workdir lock: %s is not a local path, so this run cannot lock it; make sure "
                     "no other run writes there", workdir)
        yield
        return
    lock = WorkdirLock(os.path.join(workdir, lock_name(mode, writes_shared_state)), mode)
    failure = ""
    if jax.process_index() == 0:
        try:
            lock.acquire()
        except errors.WorkdirHeldError as error:
            failure = str(error)
    failure = _all_processes_got_it(failure)
    if failure:
        raise errors.WorkdirHeldError(failure)
    try:
        yield
    finally:
        lock.release()
