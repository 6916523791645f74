"""Model directories: what `python -m srdd_jax.convert` and a training run's `model/` hold.

A model directory is a `checkpoints` tree directory of {'tokenizer': ..., 'transformer': ...}
whose config is a model config (`srdd_jax.models`). Loading validates that config, fills the
fields that directories of earlier versions lack (the execution settings, class names), stacks
the per-block transformer parameters those versions wrote (`transformer.legacy_layout`), and can
read every array straight into its sharding on a mesh.
"""

from __future__ import annotations

import jax
import ml_collections
from absl import logging

from srdd_jax import checkpoints, models, parallel
from srdd_jax.transformer import legacy_layout


def save_model(directory: str, params: dict, cfg: ml_collections.ConfigDict,
               overwrite: bool = False) -> None:
    """Writes params ({'tokenizer', 'transformer'}, either may be absent), the model config and
    the integrity record (see `checkpoints.save_tree`: every process must call it)."""
    checkpoints.save_tree(directory, params, cfg.to_dict(), overwrite)


def model_config(raw: dict) -> ml_collections.ConfigDict:
    """A validated model config from a saved JSON dict; fields absent from earlier versions'
    directories (execution settings, class names) take their defaults."""
    raw = dict(raw, patch_nums=tuple(raw["patch_nums"]),
               tokenizer_patch_nums=tuple(raw.get("tokenizer_patch_nums", ())),
               class_names=tuple(raw.get("class_names", ())))
    raw["tokenizer"] = dict(raw["tokenizer"], ch_mult=tuple(raw["tokenizer"]["ch_mult"]))
    defaults = models.transformer_config()
    raw["transformer"] = {**{field: defaults[field] for field in models.EXECUTION_SETTINGS},
                          **raw["transformer"]}
    cfg = ml_collections.ConfigDict(raw)
    models.validate(cfg)
    return cfg


def load_model(directory: str, shardings=None, mesh=None):
    """Returns (params, cfg), verified against the directory's integrity record.

    `shardings` ({'tokenizer': ..., 'transformer': ...} trees of jax Shardings), or `mesh` (a
    `parallel.make_mesh` mesh: the shardings of the logical-axis rules): the arrays are read onto
    those devices and verified there (a collective: every process must call it), so no device
    holds a whole FSDP-sharded model. Without either, see `checkpoints.load_tree`.

    Directories written before the transformer's blocks were scanned (per-block `blocks_i`
    trees) load too: they are verified as written, then their blocks are stacked into the
    current layout. Raises errors.MissingFileError / errors.DamagedCheckpointError (see
    `checkpoints`).
    """
    cfg = model_config(checkpoints.read_config(directory))
    if mesh is not None and shardings is None:
        shardings = {which: parallel.param_shardings(models.abstract_params(cfg, which), mesh)
                     for which in ("tokenizer", "transformer")}
    unstacked = legacy_layout.is_unstacked(checkpoints.tree_metadata(directory).get("transformer", {}))
    params = checkpoints.load_tree(directory, None if unstacked else shardings)
    if unstacked:
        logging.info("%s holds per-block transformer parameters (written before the blocks were "
                     "scanned): stacked into the current layout on load", directory)
        params = {**params, "transformer": legacy_layout.stack_blocks(params["transformer"])}
        if shardings is not None:
            params = jax.device_put(params, {which: shardings[which] for which in params})
    return params, cfg
