"""The scale-wise sampler: one jit-compiled program of `lax.fori_loop`s over scales.

Per scale k: the input tokens are area_k(f_hat) (the state left by the previous scale); the model
gives logits for the doubled batch [cond; uncond] where guidance acts (the conditional rows alone
where its weight is 0 and no later scale reads the unconditional keys); guidance, temperature,
top-k/top-p give the sampling distribution; tokens are drawn, each from its own image's random
stream (`tokens.token_uniforms`); masked resampling (MR) redraws low-confidence tokens in a nested
`fori_loop`; known tokens (editing) are forced; f_hat += phi(bicubic(codes)).

The loops carry a `SamplerState`. What a scale attends to besides itself is a strategy per mask
(`sampling/context.py`): ``var`` a KV cache of every earlier scale (one buffer per size bucket,
never copied whole), ``markov`` nothing, ``markov_prev`` the previous scale only.

Scales are grouped into size buckets (see `layout.plan_buckets`), one `fori_loop` each, so early
scales are not padded to the largest one. Compiled once per (model config, settings, batch size).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Sequence
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh

from srdd_jax import cpu_kernels, host_memory, models, parallel, preemption
from srdd_jax.progress import Progress
from srdd_jax.sampling import context, guidance, layout, tokens
from srdd_jax.tokenizer.vqvae import VQVAE
from srdd_jax.transformer.model import VAR

_HIGHEST = jax.lax.Precision.HIGHEST
DECODE_BYTES = 2**26  # bytes of one full-resolution decoder activation per decode chunk


@dataclasses.dataclass(frozen=True)
class SamplerSettings:
    """How to sample. Scale indices (mr_scales, scale_ids) refer to the model's patch_nums."""

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
    mr_rerun: bool = False
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

    @classmethod
    def from_config(cls, cfg: ml_collections.ConfigDict) -> SamplerSettings:
        values = {f.name: cfg[f.name] for f in dataclasses.fields(cls) if f.name in cfg}
        for name in ("cfg_list", "mr_scales", "scale_ids"):
            if values.get(name) is not None:
                values[name] = tuple(values[name])
        return cls(**values)

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


SAMPLING_TOKENIZER_PARTS = ("quantize", "post_quant_conv", "decoder")


def for_sampling(params: dict) -> dict:
    """The parameters that sampling and decoding read: the transformer's, and the tokenizer's
    without its encoder (which only editing runs, to encode images): 176 MB less of float32 at
    VAR's 256 px size. {'tokenizer': ..., 'transformer': ...} -> the same keys."""
    tokenizer = {k: v for k, v in params["tokenizer"].items() if k in SAMPLING_TOKENIZER_PARTS}
    return {"tokenizer": tokenizer, "transformer": params["transformer"]}


def _merge(x_BlC: jax.Array, twice: bool) -> jax.Array:
    """The same tokens for the cond and uncond halves of a doubled batch."""
    return jnp.concatenate([x_BlC, x_BlC], axis=0) if twice else x_BlC


class Sampler:
    """Samples token pyramids and f_hat for a model config; call `sample(params, labels, rng)`."""

    def __init__(self, model_cfg: ml_collections.ConfigDict, settings: SamplerSettings,
                 mask: str | None = None, mesh: Mesh | None = None):
        """mask: overrides the config's attention mask; mesh: shards the batch (and parameters, by
        the logical-axis rules) over a `parallel.make_mesh` mesh."""
        mask = mask or model_cfg.transformer.mask
        settings.validate(model_cfg.patch_nums)
        self.settings = settings
        self.mask = mask
        self.model_cfg = model_cfg
        self.tokenizer = models.build_tokenizer(model_cfg)
        self.transformer = models.build_transformer(model_cfg, mask=mask)
        levels = layout.validate_scale_subset(model_cfg.patch_nums, settings.scale_ids)
        k = len(levels)
        self.weights = guidance.stop_guidance(
            guidance.guidance_weights(settings.cfg_schedule, settings.cfg, k, settings.cfg_list),
            levels, len(model_cfg.patch_nums), settings.cfg_until)
        self.guided = guidance.guided_rows(self.weights, context.STRATEGIES[mask].reach,
                                           settings.skip_unguided_rows)
        self.layout = layout.build_layout(model_cfg.patch_nums, settings.scale_ids,
                                          settings.bucket_cost, self.guided)
        mr_on = np.zeros(k, bool)
        if settings.mr:
            chosen = self.layout.levels if settings.mr_scales is None else settings.mr_scales
            mr_on[[self.layout.levels.index(s) for s in chosen]] = True
        self.tables = dict(
            positions=self.layout.positions_Kw, valid=self.layout.valid_Kw,
            down=self.layout.down_Kwn, up=self.layout.up_Knw,
            levels=np.asarray(self.layout.levels, np.int32),
            begins=np.asarray(self.layout.begins, np.int32),
            weights=self.weights, mr_on=mr_on,
        )
        self.mesh = mesh
        self._jitted = {}  # batch size -> jitted sampler
        self._compiled = {}  # argument shapes and dtypes -> compiled sampler
        self.compile_seconds = 0.0  # of the latest compilation
        self._reported_padding = set()  # batch sizes already logged as padded
        self._decode_jit = jax.jit(self._decode, compiler_options=cpu_kernels.conv_options())
        self._compiled_decode = {}  # f_hat shape -> compiled decoder (without a mesh)

    # ------------------------------------------------------------------------------ public API
    @property
    def sequence_length(self) -> int:
        return self.layout.length

    def cache_bytes(self, batch_size: int) -> int:
        """Bytes of the attention context buffers (KV cache / previous-scale keys and values)."""
        tr = self.model_cfg.transformer
        slots = self._context(self.tables, batch_size).cache_slots()
        itemsize = jnp.dtype(models.DTYPES[tr.dtype]).itemsize
        return 2 * tr.depth * slots * tr.embed_dim * itemsize

    def rows_per_scale(self, batch_size: int) -> tuple[int, ...]:
        """Rows the transformer runs at each sampled scale: 2B where guided, B elsewhere."""
        return tuple(2 * batch_size if g else batch_size for g in self.guided)

    def sample(self, params: dict, labels_B, rng, known_idx_BL=None, known_BL=None,
               first_index: int = 0) -> dict:
        """Samples a batch.

        Args:
          params: {'tokenizer': ..., 'transformer': ...} parameter trees.
          labels_B: (B,) int labels (num_classes = unconditional).
          rng: a jax PRNG key seeding the request.
          known_idx_BL, known_BL: optional editing constraints over the sampled sequence: token
            indices and a bool mask of the tokens to force (see `sampling.editing`).
          first_index: the request index of the batch's first image. Image b draws its random
            numbers from (rng, first_index + b) alone, so it gets the same tokens (up to float
            rounding) whatever batch, padding or devices it is sampled with.
        Returns:
          dict with idx_BL (B, L') int32, confidence_BL (B, L') float32 (probability of each token
          under its sampling distribution), f_hat_BhwC (B, h, w, Cv) and resampled_K (K,) int32:
          tokens redrawn by MR at each sampled scale (summed over iterations and batch).
          With a mesh, a batch that does not divide the devices runs padded (see `padded_batch`);
          the same key gives the same samples either way.
        """
        labels_B = jnp.asarray(labels_B, jnp.int32)
        if labels_B.ndim != 1:
            raise ValueError(f"labels must be a (B,) vector, got shape {labels_B.shape}")
        b, length = labels_B.shape[0], self.sequence_length
        if known_idx_BL is None:
            known_idx_BL = jnp.zeros((b, length), jnp.int32)
            known_BL = jnp.zeros((b, length), bool)
        if known_idx_BL.shape != (b, length) or known_BL.shape != (b, length):
            raise ValueError(f"editing constraints must be (B, L) = ({b}, {length}), got "
                             f"{known_idx_BL.shape} and {known_BL.shape}")
        known_idx_BL = jnp.asarray(known_idx_BL, jnp.int32)
        known_BL = jnp.asarray(known_BL, bool)
        padded = self.padded_batch(b)
        if padded != b:  # split over the mesh: pad rows that are all known tokens, drop them after
            extra = padded - b
            labels_B = jnp.pad(labels_B, (0, extra))
            known_idx_BL = jnp.pad(known_idx_BL, ((0, extra), (0, 0)))
            known_BL = jnp.pad(known_BL, ((0, extra), (0, 0)), constant_values=True)
        tok_params, tr_params = params["tokenizer"], params["transformer"]
        if self.mesh is not None:  # place (or re-place) the parameters as the program expects
            tok_params, tr_params = jax.device_put((tok_params, tr_params),
                                                   self._in_shardings(padded)[:2])
        args = (tok_params, tr_params, self.tables, labels_B, rng, jnp.int32(first_index),
                known_idx_BL, known_BL)
        out = self._executable(args)(*args)
        if padded != b:
            out = {name: value if name == "resampled_K" else value[:b] for name, value in out.items()}
        return out

    def generate(self, params: dict, labels_N, rng, batch_size: int,
                 progress_name: str = "sampling") -> dict:
        """Samples and decodes images for all N labels, `batch_size` at a time (image i draws from
        (rng, i) whatever the batch size). The last batch is padded with rows whose tokens are all
        forced (so they redraw nothing) and the padding is dropped: one program serves every
        batch. With a mesh, results are gathered on every process.

        Returns dict with images_NHWC (float32 numpy in [-1, 1]), idx_NL (int32 numpy),
        resampled_K (int numpy: tokens MR redrew per sampled scale, over all N images),
        tokens_K (tokens per scale over all N images), compile_s (the batch that compiled the
        sampler, if one did) and images_per_s (sampling and decoding of the other batches; the
        first batch again when all did compile).
        """
        labels_N = np.asarray(labels_N, np.int32)
        length, n = self.sequence_length, len(labels_N)
        images, indices, resampled = [], [], np.zeros(len(self.layout.patch_nums), np.int64)
        progress = Progress(progress_name, n, "images")

        def run(start):
            chunk = labels_N[start:start + batch_size]
            pad = batch_size - len(chunk)
            known = np.zeros((batch_size, length), bool)
            known[len(chunk):] = True
            out = self.sample(params, np.pad(chunk, (0, pad)), rng,
                              np.zeros((batch_size, length), np.int32), known, first_index=start)
            decoded = self.decode(params["tokenizer"], out["f_hat_BhwC"])
            return (parallel.to_host(decoded)[:len(chunk)], parallel.to_host(out["idx_BL"])[:len(chunk)],
                    np.asarray(out["resampled_K"]))

        timed_n, timed_s, compile_s = 0, 0.0, 0.0
        for start in range(0, n, batch_size):
            begin, programs = time.perf_counter(), len(self._compiled)
            batch_images, batch_idx, batch_resampled = run(start)
            if len(self._compiled) > programs:  # this batch compiled the sampler
                compile_s += time.perf_counter() - begin
            else:
                timed_n, timed_s = timed_n + len(batch_idx), timed_s + time.perf_counter() - begin
            images.append(batch_images)
            indices.append(batch_idx)
            resampled += batch_resampled
            progress.update(start + len(batch_idx))
            if start + batch_size < n:
                preemption.check_between_batches(progress_name, start + len(batch_idx), n, "images")
        if not timed_n:
            begin = time.perf_counter()
            timed_n, timed_s = len(run(0)[1]), time.perf_counter() - begin
        return dict(images_NHWC=np.concatenate(images), idx_NL=np.concatenate(indices),
                    resampled_K=resampled,
                    tokens_K=np.asarray([n * pn * pn for pn in self.layout.patch_nums], np.int64),
                    compile_s=compile_s, images_per_s=timed_n / timed_s)

    def padded_batch(self, batch_size: int) -> int:
        """The batch the program runs: with a mesh, rounded up to a multiple of the devices the
        batch is split over (the extra rows are dropped), so no batch is replicated."""
        if self.mesh is None:
            return batch_size
        devices = int(np.prod([self.mesh.shape[axis] for axis in parallel.BATCH_AXES]))
        padded = -(-batch_size // devices) * devices
        if padded != batch_size and batch_size not in self._reported_padding:
            self._reported_padding.add(batch_size)
            logging.info("sampler: batch %d padded to %d to split it over %d devices", batch_size,
                         padded, devices)
        return padded

    def jitted(self, batch_size: int):
        """The jitted sampler core for a batch size: (tok_params, tr_params, tables, labels, rng,
        first_index, known_idx, known) -> outputs; with explicit shardings when the sampler has a
        mesh."""
        if batch_size not in self._jitted:
            if self.mesh is None:
                self._jitted[batch_size] = jax.jit(self._sample)
            else:
                self._jitted[batch_size] = jax.jit(self._sample, in_shardings=self._in_shardings(
                    batch_size), out_shardings=self._out_shardings(batch_size))
        return self._jitted[batch_size]

    def compile(self, params: dict, batch_size: int):
        """Ahead-of-time compilation of the sampler (returned) and, without a mesh, of the decoder
        for a batch size: what `sample` and `decode` then run. `params` may be arrays or
        ShapeDtypeStructs, so a program can compile before its parameters are loaded (the
        compiler's memory is returned to the system before they take theirs). The seconds the
        sampler took are in `compile_seconds`."""
        length = self.sequence_length
        args = (params["tokenizer"], params["transformer"], self.tables,
                jax.ShapeDtypeStruct((batch_size,), jnp.int32), jax.random.key(0),
                jax.ShapeDtypeStruct((), jnp.int32), jax.ShapeDtypeStruct((batch_size, length), jnp.int32),
                jax.ShapeDtypeStruct((batch_size, length), bool))
        executable = self._executable(args)
        if self.mesh is None:
            side, channels = self.layout.patch_nums[-1], self.model_cfg.tokenizer.z_channels
            self._decoder(params["tokenizer"], jax.ShapeDtypeStruct(
                (self.padded_batch(batch_size), side, side, channels), jnp.float32))
        return executable

    def decode(self, tok_params, f_hat_BhwC) -> jax.Array:
        """(tokenizer params, f_hat (B, h, w, Cv)) -> images (B, H, W, C) float32 in [-1, 1]
        (see `_decode`), compiled once per batch size."""
        if self.mesh is not None:  # shardings follow the arguments
            return self._decode_jit(tok_params, f_hat_BhwC)
        return self._decoder(tok_params, f_hat_BhwC)(tok_params, f_hat_BhwC)

    def _decoder(self, tok_params, f_hat_BhwC):
        """The compiled decoder for f_hat of this shape (arrays or ShapeDtypeStructs)."""
        key = (tuple(f_hat_BhwC.shape), str(f_hat_BhwC.dtype))
        if key not in self._compiled_decode:
            self._compiled_decode[key] = self._decode_jit.lower(tok_params, f_hat_BhwC).compile()
            host_memory.release_freed()
        return self._compiled_decode[key]

    def _executable(self, args):
        """The compiled program for arguments of these shapes and dtypes, compiled once."""
        leaves, treedef = jax.tree.flatten(args)
        key = (treedef, tuple((np.shape(x), str(getattr(x, "dtype", type(x)))) for x in leaves))
        if key not in self._compiled:
            start = time.perf_counter()
            self._compiled[key] = self.jitted(np.shape(args[3])[0]).lower(*args).compile()
            self.compile_seconds = time.perf_counter() - start
            host_memory.release_freed()
            logging.info("sampler (%s mask, batch %d): compiled in %.1f s", self.mask,
                         np.shape(args[3])[0], self.compile_seconds)
        return self._compiled[key]

    @functools.cache  # noqa: B019 (one sampler lives as long as its program)
    def _in_shardings(self, batch_size: int):
        mesh, cfg = self.mesh, self.model_cfg
        replicated = parallel.replicated(mesh)
        return (parallel.param_shardings(models.abstract_params(cfg, "tokenizer"), mesh),
                parallel.param_shardings(models.abstract_params(cfg, "transformer"), mesh),
                jax.tree.map(lambda _: replicated, self.tables),
                parallel.batch_sharding(mesh, 1, batch_size), replicated, replicated,
                parallel.batch_sharding(mesh, 2, batch_size),
                parallel.batch_sharding(mesh, 2, batch_size))

    def _out_shardings(self, batch_size: int):
        mesh = self.mesh
        return dict(idx_BL=parallel.batch_sharding(mesh, 2, batch_size),
                    confidence_BL=parallel.batch_sharding(mesh, 2, batch_size),
                    f_hat_BhwC=parallel.batch_sharding(mesh, 4, batch_size),
                    resampled_K=parallel.replicated(mesh))

    def _decode(self, tok_params, f_hat_BhwC):
        """(tokenizer params, f_hat (B, h, w, Cv)) -> images (B, H, W, C) float32 in [-1, 1].

        Runs in the transformer's compute dtype (bfloat16 models decode in bfloat16, as VAR does
        under autocast), a few images at a time (`decode_chunk`), so the decoder's full-resolution
        activations stay small whatever the batch.
        """
        decoder = models.build_tokenizer(self.model_cfg, dtype=models.DTYPES[
            self.model_cfg.transformer.dtype])

        def one(f_hwC):
            return decoder.apply({"params": tok_params}, f_hwC[None], method=VQVAE.decode)[0]

        images = jax.lax.map(one, f_hat_BhwC, batch_size=min(self.decode_chunk,
                                                             f_hat_BhwC.shape[0]))
        return images.astype(jnp.float32)

    @property
    def decode_chunk(self) -> int:
        """Images decoded together: about DECODE_BYTES per full-resolution activation."""
        tok = self.model_cfg.tokenizer
        itemsize = jnp.dtype(models.DTYPES[self.model_cfg.transformer.dtype]).itemsize
        per_image = self.tokenizer.image_size ** 2 * tok.ch * tok.ch_mult[0] * itemsize
        return max(1, DECODE_BYTES // per_image)

    # ---------------------------------------------------------------------------- internals
    def _context(self, tables, batch_size: int):
        tr = self.model_cfg.transformer
        rows = tuple(2 * batch_size if b.guided else batch_size for b in self.layout.buckets)
        shape = context.CacheShape(tr.depth, tr.num_heads, tr.embed_dim // tr.num_heads,
                                   models.DTYPES[tr.dtype], rows)
        return context.STRATEGIES[self.mask](shape, self.layout, tables)

    def _sample(self, tok_params, tr_params, tables, labels_B, rng, first_index, known_idx_BL,
                known_BL):
        lay = self.layout
        b = labels_B.shape[0]
        scales = _ScaleStep(self, tok_params, tr_params, tables, labels_B,
                            tokens.image_keys(rng, first_index, b), known_idx_BL, known_BL)
        strategy = self._context(tables, b)
        side, cv = lay.patch_nums[-1], self.model_cfg.tokenizer.z_channels
        padded = lay.length + lay.max_width
        state = SamplerState(f_hat_BnC=jnp.zeros((b, side * side, cv), jnp.float32),
                             idx_BL=jnp.zeros((b, padded), jnp.int32),
                             confidence_BL=jnp.zeros((b, padded), jnp.float32),
                             resampled_K=jnp.zeros((len(lay.patch_nums),), jnp.int32),
                             context=None)
        for index, bucket in enumerate(lay.buckets):
            state = state.replace(context=strategy.start(state.context, index))
            state = jax.lax.fori_loop(bucket.scale_ids[0], bucket.scale_ids[-1] + 1,
                                      functools.partial(scales, bucket, strategy), state)
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


class _ScaleStep:
    """One scale of the sampler inside a traced program: model -> guidance -> filter -> draw ->
    masked resampling -> editing constraints -> f_hat update. Called as
    `step(bucket, strategy, k, state) -> state` (the body of a bucket's fori_loop); the bucket
    says how wide its scales are padded and whether they run the doubled (guided) batch."""

    def __init__(self, sampler: Sampler, tok_params, tr_params, tables, labels_B, image_keys_B,
                 known_idx_BL, known_BL):
        self.settings, self.tables, self.image_keys = sampler.settings, tables, image_keys_B
        self.tokenizer, self.transformer = sampler.tokenizer, sampler.transformer
        self.tok_vars, self.tr_vars = {"params": tok_params}, {"params": tr_params}
        self.batch = labels_B.shape[0]
        self.side = sampler.layout.patch_nums[-1]
        self.channels = sampler.model_cfg.tokenizer.z_channels
        null = jnp.full_like(labels_B, sampler.model_cfg.transformer.num_classes)
        self.cond_2B = self.transformer.apply(self.tr_vars, jnp.concatenate([labels_B, null]),
                                              method=VAR.condition)  # [cond; uncond] rows
        pad = sampler.layout.max_width
        self.known_idx = jnp.pad(known_idx_BL, ((0, 0), (0, pad)))
        self.known = jnp.pad(known_BL, ((0, 0), (0, pad)))

    def uniforms(self, k, draw: int, width: int):
        """Each image's uniforms for draw `draw` of scale k, (B, width); None when greedy."""
        if self.settings.greedy:
            return None
        return tokens.token_uniforms(self.image_keys, k, draw, width)

    def add_codes(self, f_hat_BnC, idx_Bw, use_Bw, k, width):
        """f_hat += phi_level(bicubic(codes)) on the flattened latent grid; tokens where `use_Bw` is
        False (padding, or tokens held out by MR) contribute nothing."""
        codes = self.tokenizer.apply(self.tok_vars, idx_Bw, method=lambda m, i: m.quantize.lookup(i))
        codes = codes * use_Bw[..., None]
        up = jnp.einsum("nw,bwc->bnc", self.tables["up"][k][:, :width], codes, precision=_HIGHEST)
        up = up.reshape(self.batch, self.side, self.side, self.channels)
        h = self.tokenizer.apply(self.tok_vars, up, self.tables["levels"][k], method=VQVAE.phi)
        return f_hat_BnC + h.reshape(self.batch, self.side * self.side, self.channels)

    def model_probs(self, f_hat_BnC, k, width, segments, guided: bool):
        """Sampling probabilities (B, w, V) and this scale's keys/values (N, rows, H, w, D): rows
        2B ([cond; uncond]) when `guided`, else B (the conditional rows; guidance weight 0)."""
        tables, s = self.tables, self.settings
        rows = 2 * self.batch if guided else self.batch
        cond = self.cond_2B[:rows]
        x_in = jnp.einsum("wn,bnc->bwc", tables["down"][k, :width], f_hat_BnC, precision=_HIGHEST)
        valid = jnp.broadcast_to(tables["valid"][k, :width], (rows, width))
        emb = self.transformer.apply(
            self.tr_vars, cond, _merge(x_in, guided), tables["levels"][k],
            tables["positions"][k, :width], k == 0, method=VAR.embed_scale)
        logits, keys, values = self.transformer.apply(self.tr_vars, emb, cond, segments, valid,
                                                      method=VAR.step)
        if guided:
            logits = guidance.guide(logits, tables["weights"][k])
        return tokens.distribution(logits, s.temperature, s.top_k, s.top_p), keys, values

    def resample(self, f_hat_BnC, k, width, segments, guided, idx, probs, resample_Bw):
        """Masked resampling: `mr_iterations` times, redraw the tokens under `mr_threshold` among
        `resample_Bw`; with mr_rerun the model first re-runs on the state holding the confident
        tokens. Returns (idx, probs, number of redraws)."""
        s = self.settings
        valid_w = jnp.broadcast_to(self.tables["valid"][k, :width], idx.shape)

        def iteration(j, carry):
            idx, probs, count = carry
            low = (tokens.confidence(probs, idx) < s.mr_threshold) & resample_Bw
            if s.mr_rerun:
                refined = self.add_codes(f_hat_BnC, idx, valid_w & ~low, k, width)
                probs = self.model_probs(refined, k, width, segments, guided)[0]
            new = tokens.draw(self.uniforms(k, j + 1, width), probs, s.greedy)
            return jnp.where(low, new, idx), probs, count + jnp.sum(low)

        return jax.lax.fori_loop(0, s.mr_iterations, iteration,
                                 (idx, probs, jnp.zeros((), jnp.int32)))

    def __call__(self, bucket: layout.Bucket, strategy, k, state: SamplerState) -> SamplerState:
        s, tables, width = self.settings, self.tables, bucket.width
        segments = strategy.segments(state.context, k)
        probs, keys, values = self.model_probs(state.f_hat_BnC, k, width, segments, bucket.guided)
        begin = tables["begins"][k]
        known_w = jax.lax.dynamic_slice_in_dim(self.known, begin, width, axis=1)
        known_idx_w = jax.lax.dynamic_slice_in_dim(self.known_idx, begin, width, axis=1)
        idx = tokens.draw(self.uniforms(k, 0, width), probs, s.greedy)
        idx = jnp.where(known_w, known_idx_w, idx)
        valid_w = jnp.broadcast_to(tables["valid"][k, :width], idx.shape)
        count = jnp.zeros((), jnp.int32)
        if s.mr:
            resample_Bw = valid_w & ~known_w & tables["mr_on"][k]
            idx, probs, count = self.resample(state.f_hat_BnC, k, width, segments, bucket.guided,
                                              idx, probs, resample_Bw)
        return SamplerState(
            f_hat_BnC=self.add_codes(state.f_hat_BnC, idx, valid_w, k, width),
            idx_BL=jax.lax.dynamic_update_slice_in_dim(state.idx_BL, idx, begin, axis=1),
            confidence_BL=jax.lax.dynamic_update_slice_in_dim(
                state.confidence_BL, tokens.confidence(probs, idx), begin, axis=1),
            resampled_K=state.resampled_K.at[k].add(count),
            context=strategy.store(state.context, k, keys, values))
