"""Attention masks over scales, one object each, in one registry (`MASKS`).

A mask says which earlier scales a scale attends to besides itself: its `window` of previous
scales (0: none, 1: the scale before, None: every earlier one). From that one number follow
- the teacher-forcing key ranges the model uses in training (`key_ranges`; each query scale sees
  whole scales, contiguous, so one [begin, end) key range per scale, never an L x L matrix), and the
  equivalent dense bias (`attention_bias`);
- the sampling context the sampler carries (`sampling/context.py`: nothing, the previous scale's
  keys, or a KV cache of every earlier scale), and how many later scales read a scale's keys
  (`reach`: where a guided batch still needs its unconditional rows).

- ``var``:         block-causal (VAR): scale s sees scales 0..s (KV cache when sampling).
- ``markov``:      SRDD default: scale s sees only its own block, which already holds the state
                   left by scale s-1 (the area-downsampled f_hat); sampling carries no cache.
- ``markov_prev``: scale s sees blocks s-1 and s: a banded mask, not a Markov chain. Through the
                   layers its receptive field grows by one scale per layer (layer l of scale s
                   reads scale s-1's layer l-1 states, which read s-2's, ...), so a deep model
                   reaches every earlier scale. ``markov`` is the paper's Markov model.

Adding a mask is one `Mask` entry in `MASKS` (the converter, config validation, the sampler and
the benchmarks read the registry), plus its tests; a window the sampler has no context for
(2 or more) also needs one in `sampling/context.py`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from srdd_jax import scales


@dataclasses.dataclass(frozen=True)
class Mask:
    """A mask: `window` earlier scales visible to each scale (None: all of them)."""

    name: str
    window: int | None
    description: str

    @property
    def reach(self) -> int | None:
        """How many later scales read a scale's keys and values (None: every later scale)."""
        return self.window

    def first_visible_scale(self, si: int) -> int:
        """Lowest scale index that scale si attends to (it always sees itself, nothing finer)."""
        return 0 if self.window is None else max(si - self.window, 0)

    def scale_visibility(self, num_scales: int) -> np.ndarray:
        """(S, S) bool: [i, j] is True when scale i attends to scale j."""
        visible = np.zeros((num_scales, num_scales), bool)
        for si in range(num_scales):
            visible[si, self.first_visible_scale(si): si + 1] = True
        return visible

    def key_ranges(self, patch_nums: Sequence[int]) -> list[tuple[int, int]]:
        """Per scale, the [begin, end) token range of the keys it attends to."""
        bounds = scales.scale_bounds(patch_nums)
        return [(bounds[self.first_visible_scale(si)][0], end)
                for si, (_, end) in enumerate(bounds)]

    def attention_bias(self, patch_nums: Sequence[int]) -> np.ndarray:
        """(L, L) float32 additive bias: 0 where query i may see key j, -inf elsewhere."""
        levels = scales.token_levels(patch_nums)
        visible = self.scale_visibility(len(patch_nums))[levels[:, None], levels[None, :]]
        return np.where(visible, 0.0, -np.inf).astype(np.float32)


MASKS = {mask.name: mask for mask in (
    Mask("var", None, "block-causal, as VAR: every earlier scale (a KV cache when sampling)"),
    Mask("markov", 0, "SRDD: its own scale only, which holds the previous scale's state"),
    Mask("markov_prev", 1, "its own scale and the one before"),
)}
NAMES = tuple(MASKS)


def get(name: str) -> Mask:
    """The registered mask called `name`; ValueError naming the choices otherwise."""
    if name not in MASKS:
        raise ValueError(f"unknown attention mask {name!r}: choose one of {', '.join(NAMES)}")
    return MASKS[name]
