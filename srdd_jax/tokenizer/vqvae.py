"""The multi-scale VQ tokenizer (VAR's VQVAE), and the scale-wise functions built on it.

Names and shapes: images `img_BHWC` in [-1, 1]; latents `f_BhwC` with h = w = patch_nums[-1];
token indices `idx_BL` int32, scales concatenated coarse -> fine, row-major inside a scale;
teacher-forcing input `x_BLC` with L' = L - patch_nums[0]^2 tokens of z_channels each.

Call the functions through `apply`, e.g.
`vqvae.apply({"params": p}, img, method=VQVAE.encode_to_indices)`.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from srdd_jax import scales
from srdd_jax.tokenizer.autoencoder import Decoder, Encoder, conv
from srdd_jax.tokenizer.quantizer import MultiScaleQuantizer
from srdd_jax.tokenizer.resize import area_resize, bicubic_resize
from srdd_jax.tokenizer.spec import TokenizerSpec


class VQVAE(nn.Module):
    """Encoder -> quant_conv -> multi-scale residual quantizer -> post_quant_conv -> decoder."""

    spec: TokenizerSpec = TokenizerSpec()
    patch_nums: Sequence[int] = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
    # The pyramid the tokenizer was trained on, which fixes each scale's Phi; () = patch_nums. A
    # distilled student quantises on a subset of it: its scale k uses the Phi of that scale's level
    # here, as the sampler does when it samples a subset (SamplerSettings.scale_ids).
    phi_patch_nums: Sequence[int] = ()
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        spec = self.spec
        arch = dict(ch=spec.ch, ch_mult=tuple(spec.ch_mult), num_res_blocks=spec.num_res_blocks,
                    using_sa=spec.using_sa, using_mid_sa=spec.using_mid_sa, dtype=self.dtype)
        self.encoder = Encoder(z_channels=self.spec.z_channels, **arch)
        self.decoder = Decoder(out_channels=self.spec.in_channels, **arch)
        self.quant_conv = conv(self.spec.z_channels, 3, "quant_conv", self.dtype)
        self.post_quant_conv = conv(self.spec.z_channels, 3, "post_quant_conv", self.dtype)
        full = tuple(self.phi_patch_nums) or tuple(self.patch_nums)
        self.quantize = MultiScaleQuantizer(spec.vocab_size, spec.z_channels, len(full),
                                            spec.quant_resi, spec.share_quant_resi)
        self.levels = jnp.asarray([full.index(pn) for pn in self.patch_nums], jnp.int32)

    @property
    def latent_size(self) -> int:
        return self.patch_nums[-1]

    @property
    def image_size(self) -> int:
        return self.patch_nums[-1] * self.spec.downsampling

    # ----------------------------------------------------------------------------- image <-> latent
    def encode(self, img_BHWC: jax.Array) -> jax.Array:
        """Image (B, H, W, 3) in [-1, 1] -> continuous latent f (B, h, w, z_channels)."""
        expected = (self.image_size, self.image_size, self.spec.in_channels)
        if tuple(img_BHWC.shape[1:]) != expected:
            raise ValueError(
                f"images must be (B, {expected[0]}, {expected[1]}, {expected[2]}) NHWC for this "
                f"tokenizer, got {tuple(img_BHWC.shape)}; resize/crop them first (NCHW input must "
                "be transposed)"
            )
        return self.quant_conv(self.encoder(img_BHWC))

    def decode(self, f_hat_BhwC: jax.Array) -> jax.Array:
        """f_hat (B, h, w, z_channels) -> image (B, H, W, 3) clamped to [-1, 1]."""
        return jnp.clip(self.decoder(self.post_quant_conv(f_hat_BhwC)), -1.0, 1.0)

    # ------------------------------------------------------------------------ multi-scale quantizer
    def phi(self, h_BhwC: jax.Array, si) -> jax.Array:
        """Scale si's Phi refinement conv (the Phi of its level in phi_patch_nums), (B, h, w, C)
        -> same; si may be traced."""
        return self.quantize.phi(h_BhwC, self.levels[si])

    def embed_scale(self, idx_Bl: jax.Array, pn: int) -> jax.Array:
        """Indices (B, pn*pn) -> code map (B, pn, pn, C)."""
        return self.quantize.lookup(idx_Bl).reshape(idx_Bl.shape[0], pn, pn, self.spec.z_channels)

    def scale_contribution(self, h_BpnpnC: jax.Array, si: int) -> jax.Array:
        """phi_si(bicubic(h) to h x w), no resize at full size: (B, pn, pn, C) -> (B, h, w, C)."""
        hw = (self.latent_size, self.latent_size)
        return self.phi(bicubic_resize(h_BpnpnC, hw), si)

    def quantize_latent(self, f_BhwC: jax.Array) -> jax.Array:
        """Residual multi-scale quantisation of f (B, h, w, C) -> idx_BL int32 (B, L)."""
        b, c = f_BhwC.shape[0], self.spec.z_channels
        f_rest = f_BhwC.astype(jnp.float32)
        idx_per_scale = []
        for si, pn in enumerate(self.patch_nums):
            z_NC = area_resize(f_rest, (pn, pn)).reshape(-1, c)
            idx_Bl = self.quantize.nearest(z_NC).reshape(b, pn * pn)
            f_rest = f_rest - self.scale_contribution(self.embed_scale(idx_Bl, pn), si)
            idx_per_scale.append(idx_Bl)
        return jnp.concatenate(idx_per_scale, axis=1)

    def quantize_train(self, f_BhwC: jax.Array, beta: float = 0.25):
        """VAR's training quantisation (VectorQuantizer2.forward) with gradients.

        Returns:
          (f_hat_BhwC, vq_loss, idx_BL): f_hat with the straight-through estimator (its gradient
          flows to f), the per-scale commitment/codebook loss
          mean_s[beta |sg(f_hat_s) - f|^2 + |f_hat_s - sg(f)|^2], and the token indices.
        """
        b, c = f_BhwC.shape[0], self.spec.z_channels
        f = f_BhwC.astype(jnp.float32)
        f_fixed = jax.lax.stop_gradient(f)
        f_rest, f_hat, vq_loss = f_fixed, jnp.zeros_like(f), 0.0
        idx_per_scale = []
        for si, pn in enumerate(self.patch_nums):
            z_NC = area_resize(f_rest, (pn, pn)).reshape(-1, c)
            idx_Bl = self.quantize.nearest(z_NC).reshape(b, pn * pn)
            h = self.scale_contribution(self.embed_scale(idx_Bl, pn), si)
            f_hat = f_hat + h
            f_rest = f_rest - jax.lax.stop_gradient(h)
            vq_loss = vq_loss + beta * jnp.mean(jnp.square(jax.lax.stop_gradient(f_hat) - f))
            vq_loss = vq_loss + jnp.mean(jnp.square(f_hat - f_fixed))
            idx_per_scale.append(idx_Bl)
        f_hat_ste = jax.lax.stop_gradient(f_hat) - f_fixed + f
        return f_hat_ste, vq_loss / len(self.patch_nums), jnp.concatenate(idx_per_scale, axis=1)

    def reconstruct_train(self, img_BHWC: jax.Array, beta: float = 0.25):
        """Training forward: (unclamped reconstruction, vq_loss, idx_BL)."""
        f_hat, vq_loss, idx_BL = self.quantize_train(self.encode(img_BHWC), beta)
        return self.decoder(self.post_quant_conv(f_hat)), vq_loss, idx_BL

    def encode_to_indices(self, img_BHWC: jax.Array) -> jax.Array:
        """Image (B, H, W, 3) in [-1, 1] -> idx_BL (B, L) int32."""
        return self.quantize_latent(self.encode(img_BHWC))

    def indices_to_fhat(self, idx_BL: jax.Array) -> jax.Array:
        """idx_BL (B, L) -> final f_hat (B, h, w, C) = sum_si phi_si(up(embed(idx_si)))."""
        self._check_indices(idx_BL)
        f_hat = 0.0
        for si, (pn, idx_Bl) in enumerate(zip(self.patch_nums, scales.split_scales(idx_BL, self.patch_nums))):
            f_hat = f_hat + self.scale_contribution(self.embed_scale(idx_Bl, pn), si)
        return f_hat

    def indices_to_image(self, idx_BL: jax.Array) -> jax.Array:
        """idx_BL (B, L) -> image (B, H, W, 3) in [-1, 1]."""
        return self.decode(self.indices_to_fhat(idx_BL))

    def teacher_forcing_input(self, idx_BL: jax.Array) -> jax.Array:
        """idx_BL (B, L) -> transformer input x_BLC (B, L - pn_0^2, C), float32.

        Block si (si >= 1) is area_{pn_si}(f_hat after scales 0..si-1), flattened row-major.
        """
        self._check_indices(idx_BL)
        b = idx_BL.shape[0]
        pieces = scales.split_scales(idx_BL, self.patch_nums)
        f_hat = jnp.zeros((b, self.latent_size, self.latent_size, self.spec.z_channels), jnp.float32)
        blocks = []
        for si in range(len(self.patch_nums) - 1):
            f_hat, next_BpnpnC = self.next_scale_input(
                si, f_hat, self.embed_scale(pieces[si], self.patch_nums[si])
            )
            blocks.append(next_BpnpnC.reshape(b, -1, self.spec.z_channels))
        return jnp.concatenate(blocks, axis=1)

    def next_scale_input(self, si: int, f_hat_BhwC: jax.Array, h_BpnpnC: jax.Array):
        """One sampler step (VAR's get_next_autoregressive_input), si static.

        Args:
          si: index of the scale just produced.
          f_hat_BhwC: running f_hat (B, h, w, C) before scale si.
          h_BpnpnC: scale si's code map (B, pn_si, pn_si, C).
        Returns:
          (f_hat after scale si, next input map (B, pn_{si+1}, pn_{si+1}, C)); at the last scale
          the second output is f_hat itself.
        """
        f_hat_BhwC = f_hat_BhwC + self.scale_contribution(h_BpnpnC, si)
        if si == len(self.patch_nums) - 1:
            return f_hat_BhwC, f_hat_BhwC
        pn_next = self.patch_nums[si + 1]
        return f_hat_BhwC, area_resize(f_hat_BhwC, (pn_next, pn_next))

    def _check_indices(self, idx_BL: jax.Array) -> None:
        length = scales.sequence_length(self.patch_nums)
        if idx_BL.ndim != 2 or idx_BL.shape[1] != length:
            raise ValueError(
                f"token indices must be (B, L={length}) for patch_nums {tuple(self.patch_nums)}, "
                f"got {tuple(idx_BL.shape)}"
            )

    def create_params(self) -> jax.Array:
        """Touches every parameter on the smallest input (one latent pixel): the convolutions'
        parameters do not depend on the image size, so creating them never runs at full size."""
        side = 2 ** (len(self.spec.ch_mult) - 1)
        image = jnp.zeros((1, side, side, self.spec.in_channels), jnp.float32)
        latent = self.quant_conv(self.encoder(image))
        self.quantize(latent.astype(jnp.float32))
        return self.decoder(self.post_quant_conv(latent))

    def __call__(self, img_BHWC: jax.Array) -> jax.Array:
        """Reconstruction through the quantizer."""
        self.quantize(jnp.zeros((1, 1, 1, self.spec.z_channels), jnp.float32))
        return self.indices_to_image(self.encode_to_indices(img_BHWC))
