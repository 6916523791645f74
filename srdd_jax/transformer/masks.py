"""Attention masks over scales: which scales a query scale may attend to.

- ``var``:         block-causal (VAR): scale s sees scales 0..s.
- ``markov``:      SRDD default: scale s sees only its own block, which already holds the state
                   left by scale s-1 (the area-downsampled f_hat).
- ``markov_prev``: scale s sees blocks s-1 and s.

Every mask lets a query see whole scales, and the visible scales are contiguous, so each query
scale attends to one contiguous key range. `key_ranges` is what the model uses (it never
materialises an L x L matrix); `attention_bias` is the equivalent dense (L, L) additive bias.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from srdd_jax import scales

MASKS = ("var", "markov", "markov_prev")


def validate_mask(mask: str) -> str:
    if mask not in MASKS:
        raise ValueError(f"unknown attention mask {mask!r}: choose one of {', '.join(MASKS)}")
    return mask


def first_visible_scale(si: int, mask: str) -> int:
    """Lowest scale index that scale si attends to (it always sees itself and nothing finer)."""
    validate_mask(mask)
    if mask == "var":
        return 0
    if mask == "markov":
        return si
    return max(si - 1, 0)


def scale_visibility(num_scales: int, mask: str) -> np.ndarray:
    """(S, S) bool: [i, j] is True when scale i attends to scale j."""
    visible = np.zeros((num_scales, num_scales), bool)
    for si in range(num_scales):
        visible[si, first_visible_scale(si, mask): si + 1] = True
    return visible


def key_ranges(patch_nums: Sequence[int], mask: str) -> list[tuple[int, int]]:
    """Per scale, the [begin, end) token range of the keys it attends to."""
    bounds = scales.scale_bounds(patch_nums)
    return [
        (bounds[first_visible_scale(si, mask)][0], end)
        for si, (_, end) in enumerate(bounds)
    ]


def attention_bias(patch_nums: Sequence[int], mask: str) -> np.ndarray:
    """(L, L) float32 additive bias: 0 where query i may see key j, -inf elsewhere."""
    levels = scales.token_levels(patch_nums)
    visible = scale_visibility(len(patch_nums), mask)[levels[:, None], levels[None, :]]
    return np.where(visible, 0.0, -np.inf).astype(np.float32)
