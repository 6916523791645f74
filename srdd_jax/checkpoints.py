"""Saving and restoring model parameters with orbax, with the model config beside them.

Layout of a model directory: `params/` (an orbax PyTree checkpoint of
{'tokenizer': ..., 'transformer': ...}) and `model_config.json`.
"""

from __future__ import annotations

import json
import os

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from srdd_jax import models

CONFIG_FILE = "model_config.json"
PARAMS_DIR = "params"


def _directory(directory) -> epath.Path:
    """`directory` as an epath.Path, so gs:// works wherever tf.io.gfile does: URIs as given, local
    paths made absolute (orbax requires absolute local paths)."""
    path = epath.Path(directory)
    return path if "://" in os.fspath(path) else path.resolve()


def save_model(directory: str, params: dict, cfg: ml_collections.ConfigDict,
               overwrite: bool = False) -> None:
    """Writes params and config; an existing model directory is replaced only with `overwrite`."""
    directory = _directory(directory)
    if (directory / PARAMS_DIR).exists() and not overwrite:
        raise FileExistsError(f"{directory} already holds a model: choose a new --out directory")
    directory.mkdir(parents=True, exist_ok=True)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(directory / PARAMS_DIR, params, force=overwrite)
    (directory / CONFIG_FILE).write_text(json.dumps(cfg.to_dict(), indent=1))
    logging.info("wrote the model (params/, %s) to %s", CONFIG_FILE, directory)


def load_model(directory: str, shardings=None):
    """Returns (params, cfg). `shardings`, a matching tree of jax Shardings, places the arrays."""
    directory = _directory(directory)
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found: is {directory} a converted model "
                                "directory (python -m srdd_jax.convert ... --out=DIR)?")
    raw = json.loads(config_path.read_text())
    raw["patch_nums"] = tuple(raw["patch_nums"])
    raw["tokenizer_patch_nums"] = tuple(raw.get("tokenizer_patch_nums", ()))
    raw["class_names"] = tuple(raw.get("class_names", ()))  # absent in models saved before it
    raw["tokenizer"]["ch_mult"] = tuple(raw["tokenizer"]["ch_mult"])
    cfg = ml_collections.ConfigDict(raw)
    models.validate(cfg)
    with ocp.StandardCheckpointer() as checkpointer:
        path = directory / PARAMS_DIR
        metadata = checkpointer.metadata(path)
        tree = metadata.item_metadata if hasattr(metadata, "item_metadata") else metadata
        abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), tree)
        if shardings is not None:
            abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                    abstract, shardings)
        params = checkpointer.restore(path, abstract)
    return params, cfg


# ------------------------------------------------------------------------------ training runs
def train_manager(directory: str, keep: int, interval: int) -> ocp.CheckpointManager:
    """Orbax manager for a training run: keeps `keep` checkpoints, saves every `interval` steps,
    asynchronously."""
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=interval,
                                           enable_async_checkpointing=True)
    return ocp.CheckpointManager(_directory(directory), options=options)


def save_train(manager: ocp.CheckpointManager, step: int, state, data_state: dict,
               force: bool = False) -> bool:
    """Saves the train state and the data iterator's state at `step`."""
    return manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                      data=ocp.args.JsonSave(data_state)),
                        force=force)


def restore_train(manager: ocp.CheckpointManager, abstract_state):
    """(step, state, data_state) of the latest checkpoint, or None when there is none.

    abstract_state: ShapeDtypeStructs with shardings, so arrays come back sharded.
    """
    step = manager.latest_step()
    if step is None:
        return None
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
    return step, restored["state"], restored["data"]
