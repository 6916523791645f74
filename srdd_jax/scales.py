"""The token layout of a multi-scale sequence (pure functions of `patch_nums`).

Scale si is a pn x pn token map, flattened row-major (token = y*pn + x); scales are concatenated
coarse -> fine, so a sequence has L = sum(pn^2) tokens. VAR's 256 px layout (1,2,3,4,5,6,8,10,13,16)
gives L = 680.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def validate_patch_nums(patch_nums: Sequence[int]) -> tuple[int, ...]:
    """Returns `patch_nums` as a tuple of ints, or raises ValueError naming the problem."""
    pns = tuple(int(p) for p in patch_nums)
    if not pns:
        raise ValueError("patch_nums is empty: give the side of every scale, e.g. (1,2,3,4,5,6,8,10,13,16)")
    if any(p < 1 for p in pns) or any(b <= a for a, b in zip(pns, pns[1:])):
        raise ValueError(f"patch_nums must be positive and strictly increasing, got {pns}")
    return pns


def scale_bounds(patch_nums: Sequence[int]) -> list[tuple[int, int]]:
    """[(begin, end)] token offsets of every scale in the concatenated sequence."""
    bounds, begin = [], 0
    for pn in patch_nums:
        bounds.append((begin, begin + pn * pn))
        begin += pn * pn
    return bounds


def sequence_length(patch_nums: Sequence[int]) -> int:
    """L = sum(pn^2)."""
    return sum(pn * pn for pn in patch_nums)


def token_levels(patch_nums: Sequence[int]) -> np.ndarray:
    """Scale index of every token, shape (L,) int32 (VAR's `lvl_1L` buffer)."""
    return np.concatenate(
        [np.full(pn * pn, si, np.int32) for si, pn in enumerate(patch_nums)]
    )


def split_scales(x_BL, patch_nums: Sequence[int]) -> list:
    """Splits (B, L, ...) into per-scale (B, pn^2, ...) pieces."""
    return [x_BL[:, begin:end] for begin, end in scale_bounds(patch_nums)]


def pyramid(latent_side: int) -> tuple[int, ...]:
    """VAR's 256 px progression (1,2,3,4,5,6,8,10,13,16) rescaled to end at `latent_side`, starting
    at 1: 4 -> (1,2,3,4), 8 -> (1,2,3,4,5,6,8), 16 -> VAR's own, 32 -> (1,2,4,6,8,10,12,16,20,26,32)."""
    if latent_side < 1:
        raise ValueError(f"a scale pyramid needs a latent side >= 1, got {latent_side}")
    var_256 = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
    return tuple(sorted({1, latent_side} | {max(1, round(p * latent_side / 16)) for p in var_256}))
