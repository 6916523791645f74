"""f_hat -> images with the tokenizer's decoder, a few images at a time, compiled once per shape."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from srdd_jax import cpu_kernels, host_memory
from srdd_jax.models import Model
from srdd_jax.tokenizer.vqvae import VQVAE

DECODE_BYTES = 2**26  # bytes of one full-resolution decoder activation per decode chunk


class Decoder:
    """Decodes latents of a model: `decode(tok_params, f_hat_BhwC)`. Runs in the transformer's
    compute dtype (bfloat16 models decode in bfloat16, as VAR does under autocast). With a mesh
    the program follows its arguments' shardings; without one, each f_hat shape is compiled ahead
    of time once (`compile`)."""

    def __init__(self, model: Model, mesh=None):
        self.model, self.mesh = model, mesh
        self.tokenizer = model.tokenizer_in(model.spec.transformer.compute_dtype)
        self._jit = jax.jit(self._decode, compiler_options=cpu_kernels.conv_options())
        self._compiled = {}  # (shape, dtype) -> compiled decoder

    @property
    def chunk(self) -> int:
        """Images decoded together: about DECODE_BYTES per full-resolution activation."""
        tok = self.model.spec.tokenizer
        itemsize = jnp.dtype(self.model.spec.transformer.compute_dtype).itemsize
        per_image = self.model.image_size ** 2 * tok.ch * tok.ch_mult[0] * itemsize
        return max(1, DECODE_BYTES // per_image)

    def decode(self, tok_params, f_hat_BhwC) -> jax.Array:
        """(tokenizer params, f_hat (B, h, w, Cv)) -> images (B, H, W, C) float32 in [-1, 1]."""
        if self.mesh is not None:
            return self._jit(tok_params, f_hat_BhwC)
        return self.compile(tok_params, f_hat_BhwC)(tok_params, f_hat_BhwC)

    def compile(self, tok_params, f_hat_BhwC):
        """The compiled decoder for f_hat of this shape (arrays or ShapeDtypeStructs)."""
        key = (tuple(f_hat_BhwC.shape), str(f_hat_BhwC.dtype))
        if key not in self._compiled:
            self._compiled[key] = self._jit.lower(tok_params, f_hat_BhwC).compile()
            host_memory.release_freed()
        return self._compiled[key]

    def _decode(self, tok_params, f_hat_BhwC):
        def one(f_hwC):
            return self.tokenizer.apply({"params": tok_params}, f_hwC[None], method=VQVAE.decode)[0]

        images = jax.lax.map(one, f_hat_BhwC, batch_size=min(self.chunk, f_hat_BhwC.shape[0]))
        return images.astype(jnp.float32)
