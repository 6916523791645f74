"""Released VAR checkpoints -> (model spec, Flax params), checked against the Flax models."""

from __future__ import annotations

import flax.linen as nn

from srdd_jax import models
from srdd_jax.convert import mapping


def convert_state_dicts(vae_sd=None, var_sd=None, patch_nums=None, **transformer_overrides):
    """Converts one or both state dicts ({name: array}).

    Returns:
      (spec, params): the `models.ModelSpec` and {'tokenizer': ..., 'transformer': ...} numpy trees
      (only the parts given).
    Raises:
      CheckpointMismatchError naming unknown, missing or mis-shaped keys.
    """
    if vae_sd is None and var_sd is None:
        raise ValueError("give at least one checkpoint (--vae and/or --var)")
    spec = mapping.model_spec_from_checkpoints(vae_sd, var_sd, patch_nums, **transformer_overrides)
    model = models.Model(spec)
    params = {}
    if vae_sd is not None:
        expected = nn.unbox(model.abstract_params("tokenizer"))
        params["tokenizer"] = mapping.convert(vae_sd, mapping.tokenizer_rule, expected,
                                              "tokenizer (VQVAE)")
    if var_sd is not None:
        expected = nn.unbox(model.abstract_params("transformer"))
        params["transformer"] = mapping.convert(var_sd, mapping.transformer_rule, expected,
                                                "transformer (VAR)")
    return spec, params
