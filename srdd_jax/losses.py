"""Token losses shared by training and evaluation (pure functions).

Shapes: B batch, L tokens (scales concatenated coarse to fine), V vocabulary, S scales.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from srdd_jax import scales


def cross_entropy(logits_BLV: jax.Array, targets_BL: jax.Array, label_smoothing: float = 0.0
                  ) -> jax.Array:
    """Per-token cross-entropy (B, L) in float32, with optional label smoothing (targets
    (1 - e) one-hot + e / V), computed from integer targets without a (B, L, V) one-hot:
    logsumexp(z) - (1 - e) z_target - e mean(z)."""
    logits = logits_BLV.astype(jnp.float32)
    target_logit = jnp.take_along_axis(logits, targets_BL[..., None], axis=-1)[..., 0]
    ce = jax.nn.logsumexp(logits, axis=-1) - (1.0 - label_smoothing) * target_logit
    if label_smoothing > 0:
        ce = ce - label_smoothing * jnp.mean(logits, axis=-1)
    return ce


def per_scale_mean(values_BL: jax.Array, patch_nums) -> jax.Array:
    """Mean of a per-token quantity over batch and tokens of each scale, (S,)."""
    levels = scales.token_levels(patch_nums)
    counts = np.bincount(levels) * values_BL.shape[0]
    return jnp.zeros(len(patch_nums)).at[levels].add(jnp.sum(values_BL, axis=0)) / counts


def per_scale_sum(values_BL: jax.Array, patch_nums) -> jax.Array:
    """Sum of a per-token quantity over batch and tokens of each scale, (S,)."""
    levels = scales.token_levels(patch_nums)
    return jnp.zeros(len(patch_nums)).at[levels].add(jnp.sum(values_BL, axis=0))
