"""The scale-wise sampler's shell: compilation, sharding and the program cache.

`Sampler(spec, settings)` makes its `SamplingPlan` once (`sampling/plan.py`) and compiles the pure
scale loop of `sampling/scale_loop.py` (one program of `lax.fori_loop`s over scales, the resampling
iterations nested inside) once per batch size, with explicit shardings on a mesh. Decoding is
`sampling/decoding.py` (`sampler.decoder`), many images in batches `sampling/generation.py`.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import Mesh

from srdd_jax import host_memory, parallel
from srdd_jax.models import Model, ModelSpec
from srdd_jax.sampling import context, scale_loop
from srdd_jax.sampling.decoding import Decoder
from srdd_jax.sampling.plan import make_plan
from srdd_jax.sampling.settings import SamplerSettings

SAMPLING_TOKENIZER_PARTS = ("quantize", "post_quant_conv", "decoder")


def for_sampling(params: dict) -> dict:
    """The parameters that sampling and decoding read: the transformer's, and the tokenizer's
    without its encoder (which only editing runs, to encode images): 176 MB less of float32 at
    VAR's 256 px size. {'tokenizer': ..., 'transformer': ...} -> the same keys."""
    tokenizer = {k: v for k, v in params["tokenizer"].items() if k in SAMPLING_TOKENIZER_PARTS}
    return {"tokenizer": tokenizer, "transformer": params["transformer"]}


class Sampler:
    """Samples token pyramids and f_hat for a model spec; call `sample(params, labels, rng)`."""

    def __init__(self, spec: ModelSpec, settings: SamplerSettings, mask: str | None = None,
                 mesh: Mesh | None = None):
        """mask: a name in the mask registry replacing the spec's; mesh: shards the batch (and
        parameters, by the logical-axis rules) over a `parallel.make_mesh` mesh."""
        self.spec, self.model = spec, Model(spec)
        self.plan = make_plan(spec, settings, mask)
        self.mesh = mesh
        self.decoder = Decoder(self.model, mesh)
        self._jitted = {}  # batch size -> jitted sampler
        self._compiled = {}  # argument shapes and dtypes -> compiled sampler
        self.compile_seconds = 0.0  # of the latest compilation
        self._reported_padding = set()  # batch sizes already logged as padded

    @property
    def sequence_length(self) -> int:
        return self.plan.sequence_length

    @property
    def programs_compiled(self) -> int:
        return len(self._compiled)

    def cache_bytes(self, batch_size: int) -> int:
        """Bytes of the attention context buffers (KV cache / previous-scale keys and values)."""
        tr = self.spec.transformer
        strategy = context.for_plan(
            scale_loop.cache_shape(self.model, self.plan, batch_size), self.plan)
        return 2 * tr.depth * strategy.cache_slots() * tr.embed_dim * jnp.dtype(
            tr.compute_dtype).itemsize

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
        args = (tok_params, tr_params, self.plan, labels_B, rng, jnp.int32(first_index),
                known_idx_BL, known_BL)
        out = self._executable(args)(*args)
        if padded != b:
            out = {name: value if name == "resampled_K" else value[:b] for name, value in out.items()}
        return out

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
        """The jitted sampler core for a batch size: (tok_params, tr_params, plan, labels, rng,
        first_index, known_idx, known) -> outputs; with explicit shardings when the sampler has a
        mesh."""
        if batch_size not in self._jitted:
            if self.mesh is None:
                self._jitted[batch_size] = jax.jit(self._program)
            else:
                self._jitted[batch_size] = jax.jit(self._program, in_shardings=self._in_shardings(
                    batch_size), out_shardings=self._out_shardings(batch_size))
        return self._jitted[batch_size]

    def compile(self, params: dict, batch_size: int):
        """Ahead-of-time compilation of the sampler (returned) and, without a mesh, of the decoder
        for a batch size: what `sample` and `decode` then run. `params` may be arrays or
        ShapeDtypeStructs, so a program can compile before its parameters are loaded (the
        compiler's memory is returned to the system before they take theirs). The seconds the
        sampler took are in `compile_seconds`."""
        length = self.sequence_length
        args = (params["tokenizer"], params["transformer"], self.plan,
                jax.ShapeDtypeStruct((batch_size,), jnp.int32), jax.random.key(0),
                jax.ShapeDtypeStruct((), jnp.int32), jax.ShapeDtypeStruct((batch_size, length), jnp.int32),
                jax.ShapeDtypeStruct((batch_size, length), bool))
        executable = self._executable(args)
        if self.mesh is None:
            side, channels = self.plan.layout.patch_nums[-1], self.spec.tokenizer.z_channels
            self.decoder.compile(params["tokenizer"], jax.ShapeDtypeStruct(
                (self.padded_batch(batch_size), side, side, channels), jnp.float32))
        return executable

    def _executable(self, args):
        """The compiled program for arguments of these shapes and dtypes, compiled once."""
        leaves, treedef = jax.tree.flatten(args)
        key = (treedef, tuple((np.shape(x), str(getattr(x, "dtype", type(x)))) for x in leaves))
        if key not in self._compiled:
            start = time.perf_counter()
            self._compiled[key] = self.jitted(np.shape(args[3])[0]).lower(*args).compile()
            self.compile_seconds = time.perf_counter() - start
            host_memory.release_freed()
            logging.info("sampler (%s mask, batch %d): compiled in %.1f s", self.plan.mask.name,
                         np.shape(args[3])[0], self.compile_seconds)
        return self._compiled[key]

    @functools.cache  # noqa: B019 (one sampler lives as long as its program)
    def _in_shardings(self, batch_size: int):
        mesh = self.mesh
        replicated = parallel.replicated(mesh)
        return (self.model.shardings(mesh, "tokenizer"), self.model.shardings(mesh, "transformer"),
                jax.tree.map(lambda _: replicated, self.plan),
                parallel.batch_sharding(mesh, 1, batch_size), replicated, replicated,
                parallel.batch_sharding(mesh, 2, batch_size),
                parallel.batch_sharding(mesh, 2, batch_size))

    def _out_shardings(self, batch_size: int):
        mesh = self.mesh
        return dict(idx_BL=parallel.batch_sharding(mesh, 2, batch_size),
                    confidence_BL=parallel.batch_sharding(mesh, 2, batch_size),
                    f_hat_BhwC=parallel.batch_sharding(mesh, 4, batch_size),
                    resampled_K=parallel.replicated(mesh))

    def _program(self, tok_params, tr_params, plan, labels_B, rng, first_index, known_idx_BL,
                 known_BL):
        return scale_loop.sample_scales(self.model, plan, tok_params, tr_params, labels_B, rng,
                                        first_index, known_idx_BL, known_BL)
