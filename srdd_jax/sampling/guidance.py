"""Classifier-free guidance: per-scale weights and the guided logits.

Guided logits are (1 + t) * cond - t * uncond (VAR's form; t = 0 is the conditional model alone).
Schedules give t for each sampled scale k of K:
- ``linear``:   VAR's ramp t_k = cfg * k / (K - 1): no guidance at the first scale, full at the last;
- ``constant``: t_k = cfg at every scale (diffusion-style);
- ``list``:     a user-given t per scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np

SCHEDULES = ("linear", "constant", "list")


def guidance_weights(schedule: str, cfg: float, num_scales: int,
                     values: Sequence[float] | None = None) -> np.ndarray:
    """(K,) float32 guidance weights t_k."""
    if schedule == "linear":
        ratio = np.arange(num_scales) / max(num_scales - 1, 1)
        return (cfg * ratio).astype(np.float32)
    if schedule == "constant":
        return np.full(num_scales, cfg, np.float32)
    if schedule == "list":
        if values is None or len(values) != num_scales:
            raise ValueError(f"cfg_schedule='list' needs cfg_list with one value per sampled scale "
                             f"({num_scales}), got {None if values is None else len(values)}")
        return np.asarray(values, np.float32)
    raise ValueError(f"unknown cfg_schedule {schedule!r}: choose one of {', '.join(SCHEDULES)}")


def guide(logits_2BlV: jax.Array, t) -> jax.Array:
    """[cond; uncond] logits (2B, l, V) -> guided (B, l, V) = (1 + t) cond - t uncond, float32."""
    b = logits_2BlV.shape[0] // 2
    return (1 + t) * logits_2BlV[:b] - t * logits_2BlV[b:]
