"""Model directories: what `python -m srdd_jax.convert` and a training run's `model/` hold.

A model directory is a `checkpoints` tree directory of {'tokenizer': ..., 'transformer': ...}
whose config is a `models.ModelSpec`'s dict. Loading reads it into the spec (validated; fields
that directories of earlier versions lack, the execution settings and class names, take their
defaults), stacks
the per-block transformer parameters those versions wrote (`transformer.legacy_layout`), and can
read every array straight into its sharding on a mesh.
"""

from __future__ import annotations

import jax
from absl import logging

from srdd_jax import checkpoints, errors, models
from srdd_jax.transformer import legacy_layout


def save_model(directory: str, params: dict, spec: models.ModelSpec,
               overwrite: bool = False) -> None:
    """Writes params ({'tokenizer', 'transformer'}, either may be absent), the model spec and
    the integrity record (see `checkpoints.save_tree`: every process must call it)."""
    checkpoints.save_tree(directory, params, spec.to_dict(), overwrite)


def read_spec(directory: str) -> models.ModelSpec:
    """The model spec a model directory was written with (validated)."""
    raw = checkpoints.read_config(directory)
    try:
        return models.ModelSpec.from_dict(raw)
    except (TypeError, ValueError) as error:
        raise errors.IncompatibleCheckpointError(
            f"{directory}: its model config does not read as a model spec: {error}") from error


def load_model(directory: str, shardings=None, mesh=None):
    """Returns (params, spec), verified against the directory's integrity record.

    `shardings` ({'tokenizer': ..., 'transformer': ...} trees of jax Shardings), or `mesh` (a
    `parallel.make_mesh` mesh: the shardings of the logical-axis rules): the arrays are read onto
    those devices and verified there (a collective: every process must call it), so no device
    holds a whole FSDP-sharded model. Without either, see `checkpoints.load_tree`.

    Directories written before the transformer's blocks were scanned (per-block `blocks_i`
    trees) load too: they are verified as written, then their blocks are stacked into the
    current layout. Raises errors.MissingFileError / errors.DamagedCheckpointError (see
    `checkpoints`).
    """
    spec = read_spec(directory)
    if mesh is not None and shardings is None:
        shardings = models.Model(spec).shardings(mesh)
    unstacked = legacy_layout.is_unstacked(checkpoints.tree_metadata(directory).get("transformer", {}))
    params = checkpoints.load_tree(directory, None if unstacked else shardings)
    if unstacked:
        logging.info("%s holds per-block transformer parameters (written before the blocks were "
                     "scanned): stacked into the current layout on load", directory)
        params = {**params, "transformer": legacy_layout.stack_blocks(params["transformer"])}
        if shardings is not None:
            params = jax.device_put(params, {which: shardings[which] for which in params})
    return params, spec
