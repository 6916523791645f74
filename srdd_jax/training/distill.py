"""Scale distillation: a student that generates only a subset of the teacher's scales.

The student is the teacher (a full SRDD/VAR model) restricted to kept scales `ids`, e.g.
(1,2,3,4,5,6,8,10,13,16) -> (1,3,5,8,13,16), ids (0,2,4,6,8,9). It starts as exactly the model
the sampler runs with `SamplerSettings(scale_ids=ids)` on the teacher: its position embeddings
are the teacher's rows of the kept scales, its level embeddings the teacher's rows `ids`, and its
tokenizer is the teacher's with `tokenizer_patch_nums` set, so each kept scale keeps its Phi.

Targets (the paper gives no method; see docs/paper.md §2.7): ground truth of the deterministic
forward process on the reduced pyramid. The tokenizer's residual quantisation is regrouped onto the
kept scales: scale k quantises what scales 0..k-1 of the *student* pyramid left, so it absorbs
the dropped scales' residual. The student then learns next-scale cross-entropy on these tokens
with the ordinary transformer step. Why not the teacher's distribution at the kept scales: the
student at initialisation *is* the teacher evaluated on the reduced pyramid, so the KL to it is
zero with zero gradient; and the teacher's own tokens at a kept scale are residuals after the
dropped scales too, not after the kept ones, so they are not what the student must predict.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from srdd_jax import scales
from srdd_jax.models import ModelSpec

FIELD = "config.distill.patch_nums"


def subset_ids(teacher_patch_nums: Sequence[int], subset: Sequence[int]) -> tuple[int, ...]:
    """Indices of `subset` in the teacher's patch_nums; ValueError naming config.distill.patch_nums
    unless the subset is strictly increasing, drawn from the teacher's scales and ends at its last."""
    teacher = tuple(int(p) for p in teacher_patch_nums)
    kept = tuple(int(p) for p in subset)
    if (not kept or any(b <= a for a, b in zip(kept, kept[1:])) or not set(kept) <= set(teacher)
            or kept[-1] != teacher[-1]):
        raise ValueError(f"{FIELD}={kept} must be a strictly increasing subset of the teacher's "
                         f"patch_nums {teacher} ending with its last scale ({teacher[-1]}), e.g. "
                         f"{tuple(sorted(set(teacher[::2] + teacher[-1:])))}")
    return tuple(teacher.index(p) for p in kept)


def student_spec(teacher: ModelSpec, subset: Sequence[int]) -> ModelSpec:
    """The student's model spec: the teacher's with patch_nums = subset and the tokenizer's Phi
    schedule pinned to the pyramid it was trained on."""
    subset_ids(teacher.patch_nums, subset)
    return teacher.replace(patch_nums=tuple(int(p) for p in subset),
                           tokenizer_patch_nums=teacher.tokenizer_patch_nums or teacher.patch_nums)


def student_transformer_params(teacher: dict, teacher_patch_nums: Sequence[int],
                               ids: Sequence[int]) -> dict:
    """The teacher's transformer params restricted to the scales `ids`.

    pos_embed (L, C) -> the rows of the kept scales' token ranges (L', C); lvl_embed (S, C) -> rows
    `ids` (S', C); pos_start (pn_0^2, C) -> (pn'_0^2, C), row r being the teacher's row
    min(r + begin, pn_0^2 - 1) with `begin` the first kept scale's offset (what the sampler uses
    for a subset). Every other parameter is shared unchanged.
    """
    bounds = scales.scale_bounds(teacher_patch_nums)
    pos_embed = np.asarray(teacher["pos_embed"])
    pos_start = np.asarray(teacher["pos_start"])
    first = teacher_patch_nums[ids[0]] ** 2
    rows = np.minimum(np.arange(first) + bounds[ids[0]][0], pos_start.shape[0] - 1)
    return dict(
        teacher,
        pos_embed=np.concatenate([pos_embed[bounds[i][0]:bounds[i][1]] for i in ids]),
        pos_start=pos_start[rows],
        lvl_embed={"embedding": np.asarray(teacher["lvl_embed"]["embedding"])[list(ids)]},
    )
