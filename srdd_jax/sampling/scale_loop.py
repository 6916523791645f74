"""The sampler's program as a pure function: `sample_scales` runs the scale loops of a plan.

Per scale k: the input tokens are area_k(f_hat) (the state left by the previous scale); the model
gives logits for the doubled batch [cond; uncond] where guidance acts (the conditional rows alone
where its weight is 0 and no later scale reads the unconditional keys); guidance, temperature,
top-k/top-p give the sampling distribution; tokens are drawn, each from its own image's random
stream (`tokens.token_uniforms`); masked resampling (MR) redraws low-confidence tokens from the
same distribution in a nested `while_loop` (no model call); known tokens (editing) are forced;
f_hat += phi(bicubic(codes)).

The loops carry a `SamplerState`; one `lax.fori_loop` runs each size bucket of the plan's layout.
What a scale attends to besides itself is the context strategy of the plan's mask
(`sampling/context.py`); the model's step only sees key segments.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from srdd_jax.models import Model
from srdd_jax.sampling import context, guidance, layout, tokens
from srdd_jax.sampling.plan import SamplingPlan
from srdd_jax.tokenizer.vqvae import VQVAE
from srdd_jax.transformer.model import VAR

_HIGHEST = jax.lax.Precision.HIGHEST


def _merge(x_BlC: jax.Array, twice: bool) -> jax.Array:
    """The same tokens for the cond and uncond halves of a doubled batch."""
    return jnp.concatenate([x_BlC, x_BlC], axis=0) if twice else x_BlC


def cache_shape(model: Model, plan: SamplingPlan, batch_size: int) -> context.CacheShape:
    tr = model.spec.transformer
    return context.CacheShape(tr.depth, tr.num_heads, tr.head_dim, tr.compute_dtype,
                              plan.bucket_rows(batch_size))


def sample_scales(model: Model, plan: SamplingPlan, tok_params, tr_params, labels_B, rng,
                  first_index, known_idx_BL, known_BL) -> dict:
    """Samples a batch (traced; see `Sampler.sample` for the arguments and outputs)."""
    lay = plan.layout
    b = labels_B.shape[0]
    step = ScaleStep(model, plan, tok_params, tr_params, labels_B,
                     tokens.image_keys(rng, first_index, b), known_idx_BL, known_BL)
    strategy = context.for_plan(cache_shape(model, plan, b), plan)
    side, cv = lay.patch_nums[-1], model.spec.tokenizer.z_channels
    padded = lay.length + lay.max_width
    state = SamplerState(f_hat_BnC=jnp.zeros((b, side * side, cv), jnp.float32),
                         idx_BL=jnp.zeros((b, padded), jnp.int32),
                         confidence_BL=jnp.zeros((b, padded), jnp.float32),
                         resampled_K=jnp.zeros((len(lay.patch_nums),), jnp.int32),
                         context=None)
    for index, bucket in enumerate(lay.buckets):
        state = state.replace(context=strategy.start(state.context, index))
        state = jax.lax.fori_loop(bucket.scale_ids[0], bucket.scale_ids[-1] + 1,
                                  functools.partial(step, bucket, strategy), state)
    return dict(idx_BL=state.idx_BL[:, :lay.length],
                confidence_BL=state.confidence_BL[:, :lay.length],
                f_hat_BhwC=state.f_hat_BnC.reshape(b, side, side, cv),
                resampled_K=state.resampled_K)


@flax.struct.dataclass
class SamplerState:
    """What the scale loops carry. B batch, n = h*w latent positions (row-major), L' the sampled
    tokens plus one bucket width of padding (a padded scale writes past its end), K sampled
    scales."""

    f_hat_BnC: jax.Array  # the latent built so far, float32
    idx_BL: jax.Array  # tokens drawn so far, int32
    confidence_BL: jax.Array  # each token's probability under its sampling distribution
    resampled_K: jax.Array  # tokens redrawn by masked resampling, per scale
    context: Any  # the attention context strategy's carry (see sampling/context.py)


class ScaleStep:
    """One scale of the sampler inside a traced program: model -> guidance -> filter -> draw ->
    masked resampling -> editing constraints -> f_hat update. Called as
    `step(bucket, strategy, k, state) -> state` (the body of a bucket's fori_loop); the bucket
    says how wide its scales are padded and whether they run the doubled (guided) batch."""

    def __init__(self, model: Model, plan: SamplingPlan, tok_params, tr_params, labels_B,
                 image_keys_B, known_idx_BL, known_BL):
        self.settings, self.plan, self.image_keys = plan.settings, plan, image_keys_B
        self.tokenizer, self.transformer = model.tokenizer, model.transformer
        self.tok_vars, self.tr_vars = {"params": tok_params}, {"params": tr_params}
        self.batch = labels_B.shape[0]
        self.side = plan.layout.patch_nums[-1]
        self.channels = model.spec.tokenizer.z_channels
        null = jnp.full_like(labels_B, model.spec.transformer.num_classes)
        self.cond_2B = self.transformer.apply(self.tr_vars, jnp.concatenate([labels_B, null]),
                                              method=VAR.condition)  # [cond; uncond] rows
        pad = plan.layout.max_width
        self.known_idx = jnp.pad(known_idx_BL, ((0, 0), (0, pad)))
        self.known = jnp.pad(known_BL, ((0, 0), (0, pad)))

    def uniforms(self, k, draw: int, width: int):
        """Each image's uniforms for draw `draw` of scale k, (B, width); None when greedy."""
        if self.settings.greedy:
            return None
        return tokens.token_uniforms(self.image_keys, k, draw, width)

    def codes(self, idx_Bw):
        """Codebook vectors (B, w, C) of tokens."""
        return self.tokenizer.apply(self.tok_vars, idx_Bw, method=lambda m, i: m.quantize.lookup(i))

    def smooth_codes(self, logits_BwV, k, width):
        """VAR's `more_smooth` (visual only, not in its paper): a Gumbel-softmax mixture of the
        codebook with temperature max(0.27 (1 - 0.95 r), 0.005) over the guided logits scaled by
        1 + r, r = k / (K - 1) the scale's place in the pyramid; (B, w, C)."""
        ratio = k / max(len(self.plan.layout.patch_nums) - 1, 1)
        tau = jnp.maximum(0.27 * (1 - 0.95 * ratio), 0.005)
        gumbels = tokens.token_gumbels(self.image_keys, k, width, logits_BwV.shape[-1])
        weights = jax.nn.softmax((logits_BwV * (1 + ratio) + gumbels) / tau, axis=-1)
        codebook = self.tokenizer.apply(self.tok_vars, method=lambda m: m.quantize.embedding)
        return jnp.einsum("bwv,vc->bwc", weights, codebook, precision=_HIGHEST)

    def add_codes(self, f_hat_BnC, codes_BwC, use_Bw, k, width):
        """f_hat += phi_level(bicubic(codes)) on the flattened latent grid; tokens where `use_Bw` is
        False (padding) contribute nothing."""
        codes = codes_BwC * use_Bw[..., None]
        up = jnp.einsum("nw,bwc->bnc", self.plan.up_Knw[k][:, :width], codes, precision=_HIGHEST)
        up = up.reshape(self.batch, self.side, self.side, self.channels)
        h = self.tokenizer.apply(self.tok_vars, up, self.plan.levels_K[k], method=VQVAE.phi)
        return f_hat_BnC + h.reshape(self.batch, self.side * self.side, self.channels)

    def model_probs(self, f_hat_BnC, k, width, segments, guided: bool):
        """Sampling probabilities (B, w, V), the guided logits they come from (B, w, V) and this
        scale's keys/values (N, rows, H, w, D): rows 2B ([cond; uncond]) when `guided`, else B
        (the conditional rows; guidance weight 0)."""
        plan, s = self.plan, self.settings
        rows = 2 * self.batch if guided else self.batch
        cond = self.cond_2B[:rows]
        x_in = jnp.einsum("wn,bnc->bwc", plan.down_Kwn[k, :width], f_hat_BnC, precision=_HIGHEST)
        valid = jnp.broadcast_to(plan.valid_Kw[k, :width], (rows, width))
        emb = self.transformer.apply(
            self.tr_vars, cond, _merge(x_in, guided), plan.levels_K[k],
            plan.positions_Kw[k, :width], k == 0, method=VAR.embed_scale)
        logits, keys, values = self.transformer.apply(self.tr_vars, emb, cond, segments, valid,
                                                      method=VAR.step)
        if guided:
            logits = guidance.guide(logits, plan.weights_K[k])
        return tokens.distribution(logits, s.temperature, s.top_k, s.top_p), logits, keys, values

    def resample(self, k, width, idx, probs, resample_Bw):
        """Masked resampling: while some token of `resample_Bw` has a probability under
        `mr_threshold` (at most `mr_iterations` rounds), redraw those tokens from the same
        distribution `probs` (B, w, V), each round from its own uniforms. This truncates the
        distribution below the threshold; it calls no model, and a scale with no such token (or
        MR off there) runs no round. Returns (idx, number of redraws)."""
        s = self.settings

        def low_of(idx):
            return (tokens.confidence(probs, idx) < s.mr_threshold) & resample_Bw

        def more(carry):
            round_, _, low, _ = carry
            return (round_ < s.mr_iterations) & jnp.any(low)

        def redraw(carry):
            round_, idx, low, count = carry
            new = tokens.draw(self.uniforms(k, round_ + 1, width), probs, s.greedy)
            idx = jnp.where(low, new, idx)
            return round_ + 1, idx, low_of(idx), count + jnp.sum(low)

        start = (jnp.zeros((), jnp.int32), idx, low_of(idx), jnp.zeros((), jnp.int32))
        _, idx, _, count = jax.lax.while_loop(more, redraw, start)
        return idx, count

    def __call__(self, bucket: layout.Bucket, strategy, k, state: SamplerState) -> SamplerState:
        s, plan, width = self.settings, self.plan, bucket.width
        segments = strategy.segments(state.context, k)
        probs, logits, keys, values = self.model_probs(state.f_hat_BnC, k, width, segments,
                                                       bucket.guided)
        begin = plan.begins_K[k]
        known_w = jax.lax.dynamic_slice_in_dim(self.known, begin, width, axis=1)
        known_idx_w = jax.lax.dynamic_slice_in_dim(self.known_idx, begin, width, axis=1)
        idx = tokens.draw(self.uniforms(k, 0, width), probs, s.greedy)
        idx = jnp.where(known_w, known_idx_w, idx)
        valid_w = jnp.broadcast_to(plan.valid_Kw[k, :width], idx.shape)
        confidence = tokens.confidence(probs, idx)  # the first draw's, reported whatever MR does
        count = jnp.zeros((), jnp.int32)
        if s.mr:
            resample_Bw = valid_w & ~known_w & plan.mr_on_K[k]
            idx, count = self.resample(k, width, idx, probs, resample_Bw)
        codes = self.codes(idx)
        if s.more_smooth:  # known tokens (editing) keep their own codes
            codes = jnp.where(known_w[..., None], codes, self.smooth_codes(logits, k, width))
        return SamplerState(
            f_hat_BnC=self.add_codes(state.f_hat_BnC, codes, valid_w, k, width),
            idx_BL=jax.lax.dynamic_update_slice_in_dim(state.idx_BL, idx, begin, axis=1),
            confidence_BL=jax.lax.dynamic_update_slice_in_dim(
                state.confidence_BL, confidence, begin, axis=1),
            resampled_K=state.resampled_K.at[k].add(count),
            context=strategy.store(state.context, k, keys, values))
