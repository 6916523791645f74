"""What one sampler program runs: a `SamplingPlan`, made once from (model spec, settings, mask).

The plan is a pytree. Its arrays are the program's per-scale tables, indexed with the traced scale
k: token positions, padding, the area (f_hat -> input tokens) and bicubic (tokens -> latent grid)
maps, the level and offset of each sampled scale, the guidance weight t_k and whether masked
resampling acts. Its static part (the layout and its size buckets, the mask, which scales run the
doubled batch, the settings) shapes the program and keys its compilation.

The CFG scale reaches the guided logits as: config float -> `SamplerSettings.cfg` (modes/specs.py)
-> `weights_K` here (the schedule, cfg_list and cfg_until applied, once) -> `weights_K[k]` in the
scale step (`scale_loop.py`) -> `guidance.guide`.
"""

from __future__ import annotations

import flax.struct
import jax
import numpy as np

from srdd_jax.models import ModelSpec
from srdd_jax.sampling import guidance, layout
from srdd_jax.sampling.settings import SamplerSettings
from srdd_jax.transformer import masks


@flax.struct.dataclass
class SamplingPlan:
    """K sampled scales, w the widest (padded) scale, n = h*w latent positions."""

    positions_Kw: jax.Array  # int32 token positions in the model's full sequence
    valid_Kw: jax.Array  # bool, False on padding
    down_Kwn: jax.Array  # float32 area map f_hat -> the scale's input tokens
    up_Knw: jax.Array  # float32 bicubic map tokens -> latent grid
    levels_K: jax.Array  # int32 level of each sampled scale in the model's patch_nums
    begins_K: jax.Array  # int32 offset of each scale in the sampled sequence
    weights_K: jax.Array  # float32 guidance weight t_k
    mr_on_K: jax.Array  # bool: masked resampling acts at this scale
    layout: layout.Layout = flax.struct.field(pytree_node=False)
    mask: masks.Mask = flax.struct.field(pytree_node=False)
    guided: tuple[bool, ...] = flax.struct.field(pytree_node=False)  # runs [cond; uncond]
    settings: SamplerSettings = flax.struct.field(pytree_node=False)

    @property
    def sequence_length(self) -> int:
        return self.layout.length

    def rows_per_scale(self, batch_size: int) -> tuple[int, ...]:
        """Rows the transformer runs at each sampled scale: 2B where guided, B elsewhere."""
        return tuple(2 * batch_size if g else batch_size for g in self.guided)

    def bucket_rows(self, batch_size: int) -> tuple[int, ...]:
        """Rows each bucket's loop runs."""
        return tuple(2 * batch_size if b.guided else batch_size for b in self.layout.buckets)


def make_plan(spec: ModelSpec, settings: SamplerSettings, mask: str | None = None) -> SamplingPlan:
    """The plan for sampling `spec`'s model with `settings`; `mask` (a name in the mask registry)
    replaces the spec's. ValueError names a setting that does not fit the model."""
    settings.validate(spec.patch_nums)
    attention_mask = masks.get(mask or spec.transformer.mask)
    levels = layout.validate_scale_subset(spec.patch_nums, settings.scale_ids)
    weights = guidance.stop_guidance(
        guidance.guidance_weights(settings.cfg_schedule, settings.cfg, len(levels),
                                  settings.cfg_list),
        levels, len(spec.patch_nums), settings.cfg_until)
    guided = guidance.guided_rows(weights, attention_mask.reach, settings.skip_unguided_rows)
    lay = layout.build_layout(spec.patch_nums, settings.scale_ids, settings.bucket_cost, guided)
    mr_on = np.zeros(len(levels), bool)
    if settings.mr:
        chosen = lay.levels if settings.mr_scales is None else settings.mr_scales
        mr_on[[lay.levels.index(s) for s in chosen]] = True
    return SamplingPlan(
        positions_Kw=lay.positions_Kw, valid_Kw=lay.valid_Kw, down_Kwn=lay.down_Kwn,
        up_Knw=lay.up_Knw, levels_K=np.asarray(lay.levels, np.int32),
        begins_K=np.asarray(lay.begins, np.int32), weights_K=weights, mr_on_K=mr_on,
        layout=lay, mask=attention_mask, guided=guided, settings=settings)
