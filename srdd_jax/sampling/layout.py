"""Static tables for the sampler: size buckets and, per scale, padded token layouts and resize maps.

The sampler runs one `lax.fori_loop` per bucket of consecutive scales, with every scale of a bucket
padded to the bucket's largest token count. Padding costs transformer work on padded tokens, and each
bucket is compiled separately. `plan_buckets` picks the contiguous partition that minimises
`padded tokens + bucket_cost * buckets` by dynamic programming. The sampler's default cost is 0:
one bucket per scale, no padding (10 loop bodies for VAR's layouts), which ran fastest on the CPU
and costs compile time once. At a cost of 32 tokens, VAR's 256 px layout (1,4,9,...,256 tokens)
gives [1,4,9] [16,25,36] [64] [100] [169] [256]: 724 padded tokens for 680 real ones (6.5 %
waste); the 512 px layout gets 2,273 for 2,240. One bucket for everything would pad to 2,560
(3.8x). A bucket never mixes scales that run the doubled
(guided) batch with scales that run the conditional rows only: each bucket's loop has one row count.

Everything here is numpy at trace time; the sampler indexes these tables with the traced scale.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from srdd_jax import scales
from srdd_jax.tokenizer.resize import area_matrix, bicubic_matrix


def plan_buckets(token_counts: Sequence[int], bucket_cost: int = 32) -> list[list[int]]:
    """Contiguous groups of scale indices minimising sum(len(group) * max tokens) + cost * groups."""
    n = len(token_counts)
    best = [0.0] + [np.inf] * n
    cut = [0] * (n + 1)
    for end in range(1, n + 1):
        for start in range(end):
            cost = best[start] + (end - start) * max(token_counts[start:end]) + bucket_cost
            if cost < best[end]:
                best[end], cut[end] = cost, start
    groups, end = [], n
    while end > 0:
        groups.append(list(range(cut[end], end)))
        end = cut[end]
    return groups[::-1]


@dataclasses.dataclass(frozen=True)
class Bucket:
    """Scales `scale_ids` (positions in the sampled schedule), padded to `width` tokens; `guided`:
    they run the doubled batch [cond; uncond] (see `guidance.guided_rows`)."""

    scale_ids: tuple[int, ...]
    width: int
    guided: bool = False


@dataclasses.dataclass(frozen=True)
class Layout:
    """Per sampled scale k (arrays have a leading axis of size K = number of sampled scales).

    patch_nums: sides of the sampled scales; levels: their index in the model's full layout
    (level embedding, Phi choice); begins: offset of each scale in the sampled sequence (cache and
    output positions); positions_Kw: token positions in the model's full sequence, padded with the
    last position; valid_Kw: False on padding; down_Kwn: area matrix f_hat (n = h*w latent
    positions, row-major) -> this scale's input tokens, zero rows on padding; up_Knw: bicubic map
    from this scale's tokens to the latent grid, zero columns on padding.
    """

    patch_nums: tuple[int, ...]
    levels: tuple[int, ...]
    begins: tuple[int, ...]
    buckets: tuple[Bucket, ...]
    # The tables follow from the fields above, so a layout compares and hashes by those alone (it
    # is static data of the sampler's program).
    positions_Kw: np.ndarray = dataclasses.field(compare=False)
    valid_Kw: np.ndarray = dataclasses.field(compare=False)
    down_Kwn: np.ndarray = dataclasses.field(compare=False)
    up_Knw: np.ndarray = dataclasses.field(compare=False)

    @property
    def length(self) -> int:
        """Tokens in the sampled sequence."""
        return self.begins[-1] + self.patch_nums[-1] ** 2

    @property
    def max_width(self) -> int:
        return max(b.width for b in self.buckets)


def token_grid_matrix(rows_OH: np.ndarray, cols_PW: np.ndarray) -> np.ndarray:
    """Separable resize as one matrix on row-major flattened grids: (O*P, H*W)."""
    return np.kron(rows_OH, cols_PW)


def validate_scale_subset(patch_nums: Sequence[int], scale_ids: Sequence[int] | None) -> tuple[int, ...]:
    """Checks a subset of scale indices: increasing, in range, and ending at the last scale."""
    num = len(patch_nums)
    if scale_ids is None:
        return tuple(range(num))
    ids = tuple(int(i) for i in scale_ids)
    if not ids or any(b <= a for a, b in zip(ids, ids[1:])) or ids[0] < 0 or ids[-1] != num - 1:
        raise ValueError(
            f"scale subset {ids} must be strictly increasing indices into patch_nums "
            f"{tuple(patch_nums)} ending with the last scale ({num - 1}), e.g. (0, 2, 4, 6, 8, 9)"
        )
    return ids


def plan_guided_buckets(token_counts: Sequence[int], guided: Sequence[bool],
                        bucket_cost: int = 32) -> list[list[int]]:
    """`plan_buckets` inside each run of consecutive scales with the same `guided` flag."""
    groups, start = [], 0
    for end in range(1, len(token_counts) + 1):
        if end == len(token_counts) or guided[end] != guided[start]:
            groups += [[start + i for i in g]
                       for g in plan_buckets(token_counts[start:end], bucket_cost)]
            start = end
    return groups


def build_layout(patch_nums: Sequence[int], scale_ids: Sequence[int] | None = None,
                 bucket_cost: int = 32, guided: Sequence[bool] | None = None) -> Layout:
    """Tables for sampling the scales `scale_ids` (default all) of a model with `patch_nums`;
    guided: per sampled scale, whether it runs the doubled batch (default: none does)."""
    ids = validate_scale_subset(patch_nums, scale_ids)
    pns = tuple(patch_nums[i] for i in ids)
    counts = [pn * pn for pn in pns]
    guided = tuple(guided) if guided is not None else (False,) * len(pns)
    if len(guided) != len(pns):
        raise ValueError(f"guided has {len(guided)} flags for {len(pns)} sampled scales")
    side = patch_nums[-1]
    full_begins = [b for b, _ in scales.scale_bounds(patch_nums)]
    begins = tuple(b for b, _ in scales.scale_bounds(pns))
    groups = plan_guided_buckets(counts, guided, bucket_cost)
    width_of = {k: max(counts[g[0]:g[-1] + 1]) for g in groups for k in g}
    widest = max(counts)
    num = len(pns)
    positions = np.zeros((num, widest), np.int32)
    valid = np.zeros((num, widest), bool)
    down = np.zeros((num, widest, side * side), np.float32)
    up = np.zeros((num, side * side, widest), np.float32)
    for k, (level, pn) in enumerate(zip(ids, pns)):
        n = pn * pn
        positions[k] = full_begins[level] + np.minimum(np.arange(widest), n - 1)
        valid[k, :n] = True
        down[k, :n] = token_grid_matrix(area_matrix(side, pn), area_matrix(side, pn))
        up[k, :, :n] = token_grid_matrix(bicubic_matrix(pn, side), bicubic_matrix(pn, side))
    buckets = tuple(Bucket(tuple(g), width_of[g[0]], guided[g[0]]) for g in groups)
    return Layout(pns, ids, begins, buckets, positions, valid, down, up)
