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


def save_model(directory: str, params: dict, cfg: ml_collections.ConfigDict) -> None:
    """Writes params and config; refuses to overwrite an existing model directory."""
    directory = os.path.abspath(directory)
    if os.path.exists(os.path.join(directory, PARAMS_DIR)):
        raise FileExistsError(f"{directory} already holds a model: choose a new --out directory")
    os.makedirs(directory, exist_ok=True)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(os.path.join(directory, PARAMS_DIR), params)
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
