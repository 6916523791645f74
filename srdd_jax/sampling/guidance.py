"""Classifier-free guidance: per-scale weights and the guided logits.

Guided logits are (1 + t) * cond - t * uncond (VAR's form; t = 0 is the conditional model alone).
Schedules give t for each sampled scale k of K:
- ``linear``:   VAR's ramp t_k = cfg * k / (K - 1): no guidance at the first scale, full at the last;
- ``constant``: t_k = cfg at every scale (diffusion-style);
- ``list``:     a user-given t per scale.

`cfg_until` stops guidance from a scale on (t = 0 there; late scales tolerate no guidance, as
Switti and StageVAR report). Where t = 0 the guided logits are the conditional ones exactly, so the
unconditional rows are only computed where something reads them (`guided_rows`).
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


def stop_guidance(weights_K: np.ndarray, levels: Sequence[int], num_levels: int,
                  cfg_until: int | None) -> np.ndarray:
    """The weights with t = 0 at every sampled scale whose level (index in the model's patch_nums)
    is >= cfg_until; a negative cfg_until counts from the end (-2: the last two levels); None
    changes nothing."""
    if cfg_until is None:
        return weights_K
    first_off = cfg_until + num_levels if cfg_until < 0 else cfg_until
    return np.where(np.asarray(levels) >= first_off, 0.0, weights_K).astype(np.float32)


def guided_rows(weights_K: np.ndarray, reach: int | None, skip_unguided: bool = True
                ) -> tuple[bool, ...]:
    """Per sampled scale, whether it runs the doubled batch [cond; uncond].

    A scale needs its unconditional rows where its own weight is non-zero, or where a later
    guided scale reads its keys and values: the `reach` scales after it (None: every later scale,
    the KV cache of `var`; 0: none, `markov`). With skip_unguided=False every scale is doubled as
    soon as any weight is non-zero (VAR's sampler).
    """
    active = np.asarray(weights_K) != 0
    if not skip_unguided:
        return (bool(active.any()),) * len(active)
    needed = []
    for k in range(len(active)):
        readers = active[k + 1:] if reach is None else active[k + 1:k + 1 + reach]
        needed.append(bool(active[k] or readers.any()))
    return tuple(needed)


def guide(logits_2BlV: jax.Array, t) -> jax.Array:
    """[cond; uncond] logits (2B, l, V) -> guided (B, l, V) = (1 + t) cond - t uncond, float32."""
    b = logits_2BlV.shape[0] // 2
    return (1 + t) * logits_2BlV[:b] - t * logits_2BlV[b:]
