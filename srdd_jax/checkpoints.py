"""Directories of saved parameter trees: arrays saved with orbax, a config and an integrity
record beside them. Generic over the tree and the config (a JSON dict); `saved_models` gives them
the model's meaning.

Layout: `params/` (an orbax PyTree checkpoint), `model_config.json`, and `integrity.json`
({'config': the config, 'arrays': the arrays' fingerprints, see `fingerprints`}). Loading checks
the arrays against the record and raises `errors.DamagedCheckpointError` naming the directory and
the array when they differ. Directories written before integrity records existed load with a
warning.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from srdd_jax import config_diff, errors, fingerprints, parallel

CONFIG_FILE = "model_config.json"
INTEGRITY_FILE = "integrity.json"
PARAMS_DIR = "params"
# tensorstore's read errors: 'Error reading "<array key>/<chunk>" in OCDBT database at ...: <why>'.
_TENSORSTORE_READ = re.compile(
    r'Error reading "([^"/]+)/[^"]*" in [^:]*"[^"]*": (.*?)(?: \[tensorstore_spec=|$)')


def directory_path(directory) -> epath.Path:
    """`directory` as an epath.Path, so gs:// works wherever tf.io.gfile does: URIs as given, local
    paths made absolute (orbax requires absolute local paths)."""
    path = epath.Path(directory)
    return path if "://" in os.fspath(path) else path.resolve()


def refuse_existing(directory: str, flag: str) -> None:
    """errors.OutputExistsError when `directory` exists (a model, a workdir, anything): for
    commands that write a new directory and never into an existing one; `flag` names the option
    to change."""
    if directory_path(directory).exists():
        raise errors.OutputExistsError(
            f"{directory} already exists: this writes a new directory and never into an existing "
            f"one; choose another {flag}")


def save_tree(directory: str, params: dict, config: dict, overwrite: bool = False) -> None:
    """Writes the arrays, the config and the integrity record; an existing directory is replaced
    only with `overwrite`.

    Every process must call it with the same (global) params: orbax's save and the fingerprint
    are collectives. Only process 0 writes the two JSON files, last, so a directory holding an
    integrity record holds the arrays it describes.
    """
    directory = directory_path(directory)
    if (directory / PARAMS_DIR).exists() and not overwrite:
        raise errors.OutputExistsError(f"{directory} already holds a model: choose a new --out "
                                       "directory")
    record = {"config": json.loads(json.dumps(config)),
              "arrays": fingerprints.tree_fingerprint(params)}
    directory.mkdir(parents=True, exist_ok=True)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(directory / PARAMS_DIR, params, force=overwrite)
    if jax.process_index() == 0:
        (directory / CONFIG_FILE).write_text(json.dumps(record["config"], indent=1))
        (directory / INTEGRITY_FILE).write_text(json.dumps(record, indent=1))
    parallel.sync_processes(f"save_model {directory}")
    logging.info("wrote the model (params/, %s, %s) to %s", CONFIG_FILE, INTEGRITY_FILE, directory)


def _read_json(path: epath.Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise errors.DamagedCheckpointError(
            f"{path} ({what}) is not valid JSON ({errors.first_line(error)}): the model directory is "
            "damaged; save or convert the model again") from error


def read_config(directory: str) -> dict:
    """The config saved in `directory`, checked against the one recorded with the arrays.

    Raises errors.MissingFileError for a directory that is not a complete model directory, and
    errors.DamagedCheckpointError when the config file is unreadable or was changed.
    """
    directory = directory_path(directory)
    config_path, params_path = directory / CONFIG_FILE, directory / PARAMS_DIR
    for path in (config_path, params_path):
        if not path.exists():
            raise errors.MissingFileError(
                f"{path} not found: {directory} is not a complete model directory. Point to the "
                "`model` folder of a finished run, or convert one with python -m srdd_jax.convert "
                "... --out=DIR")
    raw = _read_json(config_path, "the model config")
    if (directory / INTEGRITY_FILE).exists():
        record = _read_json(directory / INTEGRITY_FILE, "the integrity record")
        changed = config_diff.differing_fields(record["config"], raw, "model",
                                               labels=("recorded", f"in {CONFIG_FILE}"))
        if changed:
            raise errors.DamagedCheckpointError(
                f"{config_path} differs from the config recorded with the parameters in "
                f"{directory / INTEGRITY_FILE} ({fingerprints.summary(changed)}): restore the "
                "file, or save the model again")
    return raw


def tree_metadata(directory: str) -> dict:
    """Shapes and dtypes of the saved arrays, as plain nested dicts (nothing is read)."""
    path = directory_path(directory) / PARAMS_DIR
    with ocp.StandardCheckpointer() as checkpointer:
        return _metadata_tree(checkpointer, path)


def load_tree(directory: str, shardings=None) -> dict:
    """The saved arrays, verified against the directory's integrity record.

    `shardings`, a matching tree of jax Shardings (for the top-level entries it covers): the
    arrays are read onto those devices and verified there (a collective: every process must call
    it). Without it they are read and verified on the host, then come back on the default device
    (uncommitted, so jit may move them) with one process, and as numpy arrays on each process of
    a multi-process run. Raises errors.DamagedCheckpointError for arrays that do not load or do
    not match the record.
    """
    directory = directory_path(directory)
    params_path = directory / PARAMS_DIR
    params = _restore(params_path, shardings)
    if not (directory / INTEGRITY_FILE).exists():
        logging.warning("%s has no %s (saved before integrity records): loaded without "
                        "verification", directory, INTEGRITY_FILE)
    else:
        record = _read_json(directory / INTEGRITY_FILE, "the integrity record")
        problems = fingerprints.mismatches(record["arrays"], fingerprints.tree_fingerprint(params))
        if problems:
            raise errors.DamagedCheckpointError(
                f"{params_path} does not match its integrity record: "
                f"{fingerprints.summary(problems)}. The files are damaged: save or convert the "
                "model again (for a run's `model` folder, rerunning the training command re-saves "
                "it from the last checkpoint)")
    if shardings is None and jax.process_count() == 1:
        params = jax.device_put(params)
    return params


def _metadata_tree(checkpointer, path: epath.Path) -> dict:
    """The checkpoint's array metadata as plain nested dicts."""
    metadata = _readable(path, lambda: checkpointer.metadata(path))
    return _plain(metadata.item_metadata if hasattr(metadata, "item_metadata") else metadata)


def _plain(tree):
    tree = getattr(tree, "tree", tree)  # orbax's TreeMetadata wrapper
    if isinstance(tree, Mapping):
        return {name: _plain(value) for name, value in tree.items()}
    return tree


def _restore(path: epath.Path, shardings):
    """The orbax checkpoint at `path`, placed by `shardings` (None: as numpy arrays)."""
    with ocp.StandardCheckpointer() as checkpointer:
        tree = _metadata_tree(checkpointer, path)
        if shardings is None:  # numpy targets restore as numpy
            target = jax.tree.map(lambda m: np.empty(m.shape, m.dtype), tree)
        else:
            target = jax.tree.map(lambda m, s: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=s),
                                  tree, {which: shardings[which] for which in tree})
        return _readable(path, lambda: checkpointer.restore(path, target))


def _readable(path: epath.Path, read):
    """read(), with a failure to read reported as damage of the checkpoint at `path` (failures of
    the runtime, e.g. collectives between processes, are raised as they are)."""
    try:
        return read()
    except jax.errors.JaxRuntimeError:
        raise
    except Exception as error:
        raise errors.DamagedCheckpointError(
            f"{path} could not be read ({read_failure(error)}): the files are damaged or "
            "incomplete; save or convert the model again") from error


def read_failure(error: BaseException) -> str:
    """One line on why an orbax read failed, naming the array when tensorstore says which (in
    the error or the errors it was raised from; its key 'a.b.c' is shown as the path a/b/c)."""
    cause = error
    while cause is not None:
        match = _TENSORSTORE_READ.search(str(cause).split("\n", 1)[0])
        if match:
            return f"array {match.group(1).replace('.', '/')}: {match.group(2)}"
        cause = cause.__cause__ or cause.__context__
    return errors.first_line(error)
