"""How to sample, declared once: `SamplerSettings` (frozen, typed, validated against a model's
scales) and `GridSpec` (which class grid to draw). `modes/specs.py` reads config.sample into them;
`sampling/plan.py` turns the settings into the arrays the sampler's program reads."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from srdd_jax.sampling import guidance, layout


@dataclasses.dataclass(frozen=True)
class SamplerSettings:
    """How to sample. Scale indices (mr_scales, scale_ids) refer to the model's patch_nums.

    Masked resampling (`mr`): at each of `mr_scales`, a drawn token whose probability is below
    `mr_threshold` is redrawn from the same distribution, at most `mr_iterations` times: a
    truncation of the distribution below the threshold (scale_loop.ScaleStep.resample). It is not
    the paper's resampling conditioned on the confident tokens, which would need a model trained
    to see a scale's own tokens in its input."""

    cfg: float = 1.5
    cfg_schedule: str = "linear"
    cfg_list: tuple[float, ...] | None = None
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 0.0
    greedy: bool = False
    mr: bool = False
    mr_threshold: float = 0.01
    mr_iterations: int = 5
    mr_scales: tuple[int, ...] | None = None  # None: every sampled scale
    # VAR's `more_smooth` (visual only; not in VAR's paper, off there by default): each scale adds
    # a Gumbel-softmax mixture of codes to the latent instead of its drawn tokens' codes
    # (scale_loop.ScaleStep.smooth_codes). The tokens reported are still the drawn ones.
    more_smooth: bool = False
    scale_ids: tuple[int, ...] | None = None  # None: all scales
    # Padded tokens one more loop body is worth (see `layout.plan_buckets`): 0 runs one loop per
    # scale, fastest (d16 on 2 CPU cores: 3.5 % less per batch of 8 than 32, 8 % at batch 1;
    # markov compiles in 12.7 s instead of 8.9 s once, then from the persistent cache).
    bucket_cost: int = 0
    # The first level (index in patch_nums) sampled without guidance; negative counts from the end
    # (-2: the last two scales unguided); None: guidance at every scale.
    cfg_until: int | None = None
    # True: a scale whose guidance weight is 0 runs the conditional rows only (where no later
    # guided scale reads its unconditional keys); False: every scale runs the doubled batch as
    # in VAR's sampler (the same samples, up to float rounding; kept to measure the saving).
    skip_unguided_rows: bool = True

    def validate(self, patch_nums: Sequence[int]) -> None:
        if self.temperature <= 0:
            raise ValueError(f"sample.temperature={self.temperature} must be > 0 (use greedy=True "
                             "for argmax)")
        if self.top_k < 0 or not 0 <= self.top_p <= 1:
            raise ValueError("sample.top_k must be >= 0 and sample.top_p in [0, 1] (0 = off)")
        if self.mr and (self.mr_iterations < 1 or not 0 <= self.mr_threshold <= 1):
            raise ValueError("sample.mr_iterations must be >= 1 and sample.mr_threshold in [0, 1]")
        ids = layout.validate_scale_subset(patch_nums, self.scale_ids)
        if self.mr_scales is not None and not set(self.mr_scales) <= set(ids):
            raise ValueError(f"sample.mr_scales {self.mr_scales} must be among the sampled scales {ids}")
        levels = len(patch_nums)
        if self.cfg_until is not None and not -levels <= self.cfg_until < levels:
            raise ValueError(f"sample.cfg_until={self.cfg_until} must be a scale index in "
                             f"[-{levels}, {levels - 1}] (negative: from the end, -2 = the last "
                             "two scales unguided), or None for guidance at every scale")
        guidance.guidance_weights(self.cfg_schedule, self.cfg, len(ids), self.cfg_list)


@dataclasses.dataclass(frozen=True)
class GridSpec:
    """A class grid (mode=sample, the training run's grids): per_class images of each class in
    `labels` (empty: every class), sampled batch_size at a time from `seed`."""

    per_class: int = 4
    batch_size: int = 40
    seed: int = 0
    labels: tuple[int, ...] = ()
