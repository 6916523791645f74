"""Token choice from logits: temperature, top-k, top-p (VAR's semantics), greedy, and confidence.

`filter_logits` returns the logits of the distribution tokens are actually drawn from: entries
removed by top-k/top-p are -inf. The confidence of a token is its probability under that distribution.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def filter_logits(logits_BlV: jax.Array, temperature: float = 1.0, top_k: int = 0,
                  top_p: float = 0.0) -> jax.Array:
    """Temperature, then top-k (keep logits >= the k-th largest, ties kept), then top-p (drop the
    smallest tokens whose cumulative probability is <= 1 - p, always keeping the largest)."""
    logits = logits_BlV.astype(jnp.float32) / temperature
    vocab = logits.shape[-1]
    if 0 < top_k < vocab:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p > 0.0:
        order = jnp.argsort(logits, axis=-1)  # ascending
        sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
        cumulative = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
        remove_sorted = cumulative <= 1.0 - top_p
        remove_sorted = remove_sorted.at[..., -1].set(False)
        remove = jnp.take_along_axis(remove_sorted, jnp.argsort(order, axis=-1), axis=-1)
        logits = jnp.where(remove, -jnp.inf, logits)
    return logits


def draw(rng, filtered_BlV: jax.Array, greedy: bool) -> jax.Array:
    """A token per position: argmax when greedy, else a categorical draw. (B, l) int32."""
    if greedy:
        return jnp.argmax(filtered_BlV, axis=-1).astype(jnp.int32)
    return jax.random.categorical(rng, filtered_BlV, axis=-1).astype(jnp.int32)


def confidence(filtered_BlV: jax.Array, idx_Bl: jax.Array) -> jax.Array:
    """Probability of each chosen token under the sampling distribution, (B, l) float32."""
    log_probs = jax.nn.log_softmax(filtered_BlV, axis=-1)
    return jnp.exp(jnp.take_along_axis(log_probs, idx_Bl[..., None], axis=-1)[..., 0])
