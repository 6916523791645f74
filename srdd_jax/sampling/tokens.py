"""Token choice from logits: temperature, top-k, top-p (VAR's semantics), greedy, and confidence.

`distribution` returns the probabilities tokens are actually drawn from (zero where top-k/top-p
removed a token); the confidence of a token is its probability there. Both filters keep a prefix
of the tokens sorted by logit, so they reduce to one threshold per position, found with a single
sort of the values (a `top_k` when k > 0). Draws use the inverse CDF (one uniform per token), so
masked resampling redraws cheaply from a cached CDF.

Randomness is per image: image i of a request draws from `image_keys(rng, i)` only, and each token
from a key folded from its image's key, its scale, the draw (0, then one per MR iteration) and its
position in the scale (`token_uniforms`). So the same seed gives an image the same random numbers
whatever the batch it is drawn in, its padding, and the devices the batch is split over.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

GUMBEL_STREAM = 2**31 - 1  # the draw number `token_gumbels` folds in (token draws use 0, 1, ...)


def filter_logits(logits_BlV: jax.Array, temperature: float = 1.0, top_k: int = 0,
                  top_p: float = 0.0) -> jax.Array:
    """Temperature, then top-k (keep logits >= the k-th largest, ties kept), then top-p (drop the
    least likely tokens whose cumulative probability is <= 1 - p, always keeping the most likely).
    Removed entries become -inf."""
    logits = logits_BlV.astype(jnp.float32) / temperature
    vocab = logits.shape[-1]
    use_k = 0 < top_k < vocab
    if not use_k and top_p <= 0.0:
        return logits
    if use_k:
        sorted_desc = jax.lax.top_k(logits, top_k)[0]
    else:
        sorted_desc = -jnp.sort(-logits, axis=-1)
    threshold = sorted_desc[..., -1:]
    if top_p > 0.0:
        probs = jax.nn.softmax(sorted_desc, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs  # probability of strictly likelier tokens
        kept = jnp.maximum(jnp.sum(mass_before < top_p, axis=-1, keepdims=True), 1)
        threshold = jnp.take_along_axis(sorted_desc, kept - 1, axis=-1)
    return jnp.where(logits < threshold, -jnp.inf, logits)


def distribution(logits_BlV: jax.Array, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 0.0) -> jax.Array:
    """Sampling probabilities (B, l, V) float32 after temperature, top-k and top-p."""
    return jax.nn.softmax(filter_logits(logits_BlV, temperature, top_k, top_p), axis=-1)


def image_keys(rng, first_index, batch_size: int) -> jax.Array:
    """(B,) keys of images first_index ... first_index + B - 1 of a request seeded by `rng`."""
    indices = jnp.asarray(first_index, jnp.uint32) + jnp.arange(batch_size, dtype=jnp.uint32)
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(rng, indices)


def token_uniforms(image_keys_B: jax.Array, scale, draw, width: int) -> jax.Array:
    """(B, width) float32 uniforms in [0, 1): token p of `scale` in draw `draw` of each image
    uses fold_in(fold_in(fold_in(image key, scale), draw), p), so a token's number depends on
    neither the batch nor the padded width of its scale. scale and draw may be traced."""

    def per_image(key):
        key = jax.random.fold_in(jax.random.fold_in(key, scale), draw)
        return jax.vmap(lambda p: jax.random.uniform(jax.random.fold_in(key, p)))(
            jnp.arange(width, dtype=jnp.uint32))

    return jax.vmap(per_image)(image_keys_B)


def token_gumbels(image_keys_B: jax.Array, scale, width: int, vocab: int) -> jax.Array:
    """(B, width, vocab) float32 Gumbel noise of `scale` (for `more_smooth`), from each image's
    key like `token_uniforms` but a stream of its own, so the drawn tokens do not change."""

    def per_image(key):
        key = jax.random.fold_in(jax.random.fold_in(key, scale), GUMBEL_STREAM)
        return jax.vmap(lambda p: jax.random.gumbel(jax.random.fold_in(key, p), (vocab,)))(
            jnp.arange(width, dtype=jnp.uint32))

    return jax.vmap(per_image)(image_keys_B)


def draw(uniforms_Bl: jax.Array | None, probs_BlV: jax.Array, greedy: bool) -> jax.Array:
    """A token per position (B, l) int32: argmax when greedy (uniforms unused, may be None), else
    the inverse-CDF draw of each position's uniform in [0, 1)."""
    if greedy:
        return jnp.argmax(probs_BlV, axis=-1).astype(jnp.int32)
    cdf = jnp.cumsum(probs_BlV, axis=-1)
    u = uniforms_Bl[..., None] * cdf[..., -1:]
    idx = jnp.sum(cdf <= u, axis=-1)
    return jnp.minimum(idx, probs_BlV.shape[-1] - 1).astype(jnp.int32)


def confidence(probs_BlV: jax.Array, idx_Bl: jax.Array) -> jax.Array:
    """Probability of each chosen token under the sampling distribution, (B, l) float32."""
    return jnp.take_along_axis(probs_BlV, idx_Bl[..., None], axis=-1)[..., 0]
