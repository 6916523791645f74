"""mode=convert: released PyTorch VAR checkpoints (config.convert.vae, .var) into workdir/model,
which must not exist yet (checked before anything is read)."""

from __future__ import annotations

import os

from srdd_jax import checkpoints, errors, saved_models, weights_io
from srdd_jax.convert import var_checkpoints
from srdd_jax.modes import workdir as workdir_record
from srdd_jax.modes.specs import ExperimentSpec

READ_ONLY = False


def run(config, specs: ExperimentSpec, workdir: str, mesh, overrides: dict) -> None:
    del mesh, overrides
    model_dir = os.path.join(workdir, "model")
    checkpoints.refuse_existing(model_dir, "--workdir")
    if not (config.convert.vae or config.convert.var):
        raise errors.ConfigError("config.convert.vae and config.convert.var are both empty: give "
                                 "the .pth files to convert")
    vae = weights_io.load_state_dict(config.convert.vae, "vae") if config.convert.vae else None
    var = weights_io.load_state_dict(config.convert.var, "var") if config.convert.var else None
    spec, params = var_checkpoints.convert_state_dicts(vae, var,
                                                       mask=specs.model.transformer.mask)
    workdir_record.record(workdir, config, spec)
    saved_models.save_model(model_dir, params, spec)
