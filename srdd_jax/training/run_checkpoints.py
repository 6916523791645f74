"""Checkpoints of a training run (WORKDIR/<run>/<step>/) that a resumed run can trust.

Each step holds three orbax items: `state` (the train state, written asynchronously), `data`
(the data iterator's position) and `integrity` ({'config': the model config that made the run,
'arrays': the state's fingerprints, see `fingerprints`}). `restore` starts from the newest step:

- a run made by another model config is refused (errors.IncompatibleCheckpointError naming the
  differing fields and the ways out);
- a step that does not load or does not match its record is reported in one line and moved aside
  to WORKDIR/damaged/<run>/<step> (never deleted), and the next older step is tried; when none
  verifies, nothing is moved and errors.DamagedCheckpointError lists every step tried.

Every process must call `save`, `restore` and `load_verified` (they are collectives); only
process 0 moves directories.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import threading
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from srdd_jax import checkpoints, config_diff, errors, fingerprints, parallel

DAMAGED_DIR = "damaged"


@dataclasses.dataclass(frozen=True)
class Restored:
    step: int
    state: Any
    data_state: dict


def make_manager(directory: str, keep: int, interval: int,
                 create: bool = True) -> ocp.CheckpointManager:
    """Orbax manager for a training run: keeps `keep` checkpoints, saves every `interval` steps,
    asynchronously; `create=False` for one that only reads."""
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=interval,
                                           enable_async_checkpointing=True, create=create)
    return ocp.CheckpointManager(checkpoints.directory_path(directory), options=options)


@contextlib.contextmanager
def open_manager(directory: str, keep: int, interval: int):
    """make_manager's manager for the block, closed after it (waiting for its saves). When the
    block fails, the failure is what the run reports: an error raised again while closing (the
    same failed save) goes to the log, and a stop whose save did not finish in time
    (errors.PreemptedError with pending_writes) leaves the manager without waiting."""
    manager = make_manager(directory, keep, interval)
    try:
        yield manager
    except errors.PreemptedError as stop:
        if not stop.pending_writes:
            _close_quietly(manager)
        raise
    except BaseException:
        _close_quietly(manager)
        raise
    manager.close()


def _close_quietly(manager: ocp.CheckpointManager) -> None:
    try:
        manager.close()
    except Exception as error:  # the failure being reported, seen again
        logging.info("closing the checkpoints in %s after a failure: %s", manager.directory,
                     errors.first_line(error))


def save(manager: ocp.CheckpointManager, step: int, state, data_state: dict, model_config: dict,
         fingerprint: dict) -> bool:
    """Saves the train state, the data iterator's state and the integrity record at `step`.
    `fingerprint`: fingerprints.tree_fingerprint(state), computed by the caller."""
    record = {"config": model_config, "arrays": fingerprint}
    return manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state),
        integrity=ocp.args.JsonSave(record)), force=True)


def complete_steps(manager: ocp.CheckpointManager, exclude: int | None = None) -> list[int]:
    """The steps whose directories orbax has finalised (a save in progress or cut short lives in
    a temporary directory, never under the step's name), oldest first, read from the disk."""
    if not manager.directory.exists():
        return []
    return sorted(int(p.name) for p in manager.directory.iterdir()
                  if p.name.isdigit() and int(p.name) != exclude)


def wait_for_saves(manager: ocp.CheckpointManager, seconds: float) -> bool:
    """Waits up to `seconds` for the manager's saves in progress; False if they are still running
    (an error raised by the save is raised here)."""
    finished, failure = threading.Event(), []

    def wait():
        try:
            manager.wait_until_finished()
        except BaseException as error:  # handed to the caller's thread
            failure.append(error)
        finally:
            finished.set()

    threading.Thread(target=wait, daemon=True, name="wait_for_saves").start()
    done = finished.wait(seconds)
    if failure:
        raise failure[0]
    return done


def _free_bytes(directory: epath.Path) -> int | None:
    try:
        return shutil.disk_usage(str(directory)).free
    except OSError:
        return None  # not a local filesystem (gs://), or gone


@contextlib.contextmanager
def reporting_no_space(manager: ocp.CheckpointManager, step: int, state):
    """Turns a save that fails for lack of space (orbax reports an asynchronous save's failure at
    the next save or wait, during `step`) into errors.NoSpaceError: the path,
    the free space, the size of the state and the newest complete checkpoint a rerun resumes
    from (orbax never gives a save cut short a step's name, so it is not taken for complete)."""
    try:
        yield
    except Exception as error:
        if not errors.is_no_space(error):
            raise
        free = _free_bytes(manager.directory)
        needed = sum(x.nbytes for x in jax.tree.leaves(state))
        newest = complete_steps(manager)
        resume = (f"checkpoint {newest[-1]}, which is complete" if newest
                  else "step 0 (there is no complete checkpoint)")
        raise errors.NoSpaceError(
            f"no space left on the device for the checkpoints in {manager.directory} (saving at "
            f"step {step}): "
            f"{_megabytes(free) if free is not None else 'unknown'} free, the checkpoint needs "
            f"about {_megabytes(needed)}. Free space (or move the workdir), then rerun the same "
            f"command: it resumes from {resume}.") from None


def _megabytes(count: int) -> str:
    return f"{count / 1e6:.1f} MB"


def step_directory(manager: ocp.CheckpointManager, step: int) -> epath.Path:
    return manager.directory / str(step)


def _has_record(manager: ocp.CheckpointManager, step: int) -> bool:
    return (step_directory(manager, step) / "integrity").exists()


def _read_record(manager: ocp.CheckpointManager, step: int) -> dict | None:
    """The step's integrity record; None when it has none or it does not read."""
    if not _has_record(manager, step):
        return None
    try:
        return manager.restore(step, args=ocp.args.Composite(integrity=ocp.args.JsonRestore()))[
            "integrity"]
    except Exception:  # a damaged record: the step is reported as damaged when it is loaded
        return None


def check_config(manager: ocp.CheckpointManager, model_config: dict, restart_hint: str) -> None:
    """Raises errors.IncompatibleCheckpointError when the newest step with a readable record was
    made by another model config. model_config: {'model': {...}}, so fields read model.x.y."""
    for step in sorted(manager.all_steps(), reverse=True):
        record = _read_record(manager, step)
        if record is None:
            continue
        changed = config_diff.differing_fields(record["config"], model_config,
                                               labels=(f"in checkpoint {step}", "now"))
        if changed:
            raise errors.IncompatibleCheckpointError(
                f"{manager.directory} holds checkpoints of another model ({'; '.join(changed)}). "
                "Either keep its config to resume it, or train this config in a new workdir "
                f"(--workdir=NEW_DIR){restart_hint}.")
        return


def check_workdir_run(directory: str, model_config: dict, restart_hint: str) -> None:
    """check_config for the run in `directory`, if it has started (for start-up checks)."""
    if epath.Path(directory).is_dir():
        with make_manager(directory, 1, 1, create=False) as manager:
            check_config(manager, model_config, restart_hint)


def _all_processes_agree(ok: bool) -> bool:
    """True only if `ok` on every process (so all take the same branch)."""
    return not parallel.any_process(not ok)


def load_verified(manager: ocp.CheckpointManager, step: int, abstract_state) -> Restored:
    """The step restored into `abstract_state` (ShapeDtypeStructs with shardings) and checked
    against its integrity record; errors.DamagedCheckpointError says why not."""
    where = step_directory(manager, step)
    has_record = _has_record(manager, step)
    items = dict(state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore())
    if has_record:
        items["integrity"] = ocp.args.JsonRestore()
    try:
        restored, failure = manager.restore(step, args=ocp.args.Composite(**items)), ""
    except jax.errors.JaxRuntimeError:  # the runtime failed (e.g. a collective), not the files
        raise
    except Exception as error:  # anything else that stops the read is damage
        restored, failure = None, checkpoints.read_failure(error)
    if not _all_processes_agree(not failure):
        raise errors.DamagedCheckpointError(f"{where} does not load "
                                            f"({failure or 'on another process'})")
    if not has_record:
        logging.warning("%s has no integrity record (saved before records existed): resumed "
                        "without verification", where)
        return Restored(step, restored["state"], restored["data"])
    found = fingerprints.tree_fingerprint(restored["state"])
    problems = fingerprints.mismatches(restored["integrity"]["arrays"], found)
    if problems:
        raise errors.DamagedCheckpointError(
            f"{where} does not match its integrity record: {fingerprints.summary(problems)}")
    return Restored(step, restored["state"], restored["data"])


def _move_aside(manager: ocp.CheckpointManager, step: int) -> epath.Path:
    """Moves a step to WORKDIR/damaged/<run>/<step> (-1, -2, ... if taken); returns the target."""
    folder = manager.directory.parent / DAMAGED_DIR / manager.directory.name
    target, copy = folder / str(step), 0
    while target.exists():
        copy += 1
        target = folder / f"{step}-{copy}"
    parallel.sync_processes(f"move aside {target}")  # every process has chosen the target
    failure = ""
    if jax.process_index() == 0:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            step_directory(manager, step).rename(target)
        except OSError as error:
            failure = errors.first_line(error)
    if not _all_processes_agree(not failure):
        raise errors.DamagedCheckpointError(
            f"{step_directory(manager, step)} does not verify and could not be moved to {target} "
            f"({failure or 'on process 0'}): move it out of {manager.directory} yourself, then "
            "run again")
    return target


def restore(manager: ocp.CheckpointManager, abstract_state, model_config: dict,
            restart_hint: str = "") -> Restored | None:
    """The newest step that loads and verifies, or None when the run has no checkpoint.

    Newer steps that fail are moved aside, each reported in one line. Raises
    errors.IncompatibleCheckpointError (another model config) or errors.DamagedCheckpointError
    (no step verifies; nothing is moved).
    """
    steps = sorted(manager.all_steps(), reverse=True)
    if not steps:
        return None
    check_config(manager, model_config, restart_hint)
    failed = []
    for step in steps:
        try:
            restored = load_verified(manager, step, abstract_state)
        except errors.DamagedCheckpointError as error:
            failed.append((step, str(error)))
            continue
        for bad_step, problem in failed:
            target = _move_aside(manager, bad_step)
            logging.warning("%s; moved it to %s and resumed from step %d", problem, target, step)
        if failed:
            manager.reload()
        return restored
    tried = "\n".join(f"  {problem}" for _, problem in failed)
    raise errors.DamagedCheckpointError(
        f"no checkpoint in {manager.directory} loads and verifies, so the run cannot resume. "
        f"Tried, newest first:\n{tried}\nNothing was moved. To start this run afresh, move "
        f"{manager.directory} elsewhere (or use a new --workdir).")
