"""mode=convert: released PyTorch VAR checkpoints (config.convert.vae, .var) into workdir/model,
which must not exist yet (checked before anything is read)."""

from __future__ import annotations

import os

from srdd_jax import checkpoints, errors, saved_models, weights_io
from srdd_jax.convert import var_checkpoints
from srdd_jax.modes import workdir as workdir_record


def run(config, workdir: str) -> None:
    model_dir = os.path.join(workdir, "model")
    checkpoints.refuse_existing(model_dir, "--workdir")
    if not (config.convert.vae or config.convert.var):
        raise errors.ConfigError("config.convert.vae and config.convert.var are both empty: give "
                                 "the .pth files to convert")
    workdir_record.record(workdir, config)
    vae = weights_io.load_state_dict(config.convert.vae, "vae") if config.convert.vae else None
    var = weights_io.load_state_dict(config.convert.var, "var") if config.convert.var else None
    cfg, params = var_checkpoints.convert_state_dicts(vae, var, mask=config.model.transformer.mask)
    saved_models.save_model(model_dir, params, cfg)
