"""Converts released PyTorch VAR checkpoints to an srdd_jax model directory (orbax + config).

    python -m srdd_jax.convert --vae=vae_ch160v4096z32.pth --var=var_d16.pth --out=models/var_d16

Later runs load the directory with `srdd_jax.saved_models.load_model` and need no torch.
"""

from absl import app, flags, logging

from srdd_jax import checkpoints, errors, saved_models, weights_io
from srdd_jax.convert import var_checkpoints
from srdd_jax.transformer import masks

_VAE = flags.DEFINE_string("vae", None, "path of the tokenizer checkpoint (vae_ch160v4096z32.pth)")
_VAR = flags.DEFINE_string("var", None, "path of the transformer checkpoint (var_d16.pth ...)")
_OUT = flags.DEFINE_string("out", None, "new directory for the converted model", required=True)
_PATCH_NUMS = flags.DEFINE_list("patch_nums", None, "scale sides (default: read from the VAR file)")
_MASK = flags.DEFINE_enum("mask", "var", list(masks.NAMES),
                          "attention mask stored in the config (the released weights are 'var')")


def main(argv):
    del argv
    try:
        checkpoints.refuse_existing(_OUT.value, "--out")
    except errors.OutputExistsError as error:
        raise app.UsageError(str(error)) from error
    vae_sd = weights_io.load_state_dict(_VAE.value, "vae") if _VAE.value else None
    var_sd = weights_io.load_state_dict(_VAR.value, "var") if _VAR.value else None
    patch_nums = tuple(int(p) for p in _PATCH_NUMS.value) if _PATCH_NUMS.value else None
    spec, params = var_checkpoints.convert_state_dicts(vae_sd, var_sd, patch_nums, mask=_MASK.value)
    saved_models.save_model(_OUT.value, params, spec)
    logging.info("wrote %s (%s) with model spec:\n%s", _OUT.value, ", ".join(params), spec)


if __name__ == "__main__":
    app.run(main)
