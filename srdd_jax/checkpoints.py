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

from srdd_jax import models

CONFIG_FILE = "model_config.json"
PARAMS_DIR = "params"


def save_model(directory: str, params: dict, cfg: ml_collections.ConfigDict,
               overwrite: bool = False) -> None:
    """Writes params and config; an existing model directory is replaced only with `overwrite`."""
    directory = os.path.abspath(directory)
    if os.path.exists(os.path.join(directory, PARAMS_DIR)) and not overwrite:
        raise FileExistsError(f"{directory} already holds a model: choose a new --out directory")
    os.makedirs(directory, exist_ok=True)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(os.path.join(directory, PARAMS_DIR), params, force=overwrite)
    with open(os.path.join(directory, CONFIG_FILE), "w") as f:
        json.dump(cfg.to_dict(), f, indent=1)


def load_model(directory: str, shardings=None):
    """Returns (params, cfg). `shardings`, a matching tree of jax Shardings, places the arrays."""
    directory = os.path.abspath(directory)
    config_path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{config_path} not found: is {directory} a converted model "
                                "directory (python -m srdd_jax.convert ... --out=DIR)?")
    with open(config_path) as f:
        raw = json.load(f)
    raw["patch_nums"] = tuple(raw["patch_nums"])
    raw["tokenizer"]["ch_mult"] = tuple(raw["tokenizer"]["ch_mult"])
    cfg = ml_collections.ConfigDict(raw)
    models.validate(cfg)
    with ocp.StandardCheckpointer() as checkpointer:
        path = os.path.join(directory, PARAMS_DIR)
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
    return ocp.CheckpointManager(os.path.abspath(directory), options=options)


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
