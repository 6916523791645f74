"""VAR's convolutional encoder and decoder (the latent-diffusion vq-f16 layout), NHWC.

Sub-module names mirror the PyTorch state dict (`down_0/block_1/norm1` <-> `down.0.block.1.norm1`)
so that checkpoint conversion is a mechanical rename. Shapes: images (B, H, W, 3); latents
(B, H/2^(levels-1), W/2^(levels-1), z_channels).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

_GROUPS = 32
_EPS = 1e-6


def group_norm(name: str, dtype) -> nn.GroupNorm:
    """GroupNorm(32, eps 1e-6) with PyTorch's two-pass variance."""
    return nn.GroupNorm(
        num_groups=_GROUPS, epsilon=_EPS, use_fast_variance=False, dtype=dtype, name=name
    )


def conv(features: int, kernel: int, name: str, dtype, stride: int = 1, padding="SAME") -> nn.Conv:
    return nn.Conv(
        features, (kernel, kernel), strides=(stride, stride), padding=padding, dtype=dtype, name=name
    )


class ResnetBlock(nn.Module):
    """x + conv2(SiLU(GN(conv1(SiLU(GN(x)))))), with a 1x1 `nin_shortcut` when channels change."""

    out_channels: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BHWC: jax.Array) -> jax.Array:
        h = conv(self.out_channels, 3, "conv1", self.dtype)(
            nn.silu(group_norm("norm1", self.dtype)(x_BHWC))
        )
        h = conv(self.out_channels, 3, "conv2", self.dtype)(
            nn.silu(group_norm("norm2", self.dtype)(h))
        )
        if x_BHWC.shape[-1] != self.out_channels:
            x_BHWC = conv(self.out_channels, 1, "nin_shortcut", self.dtype)(x_BHWC)
        return x_BHWC + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions (row-major), scale C^-1/2."""

    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BHWC: jax.Array) -> jax.Array:
        b, h, w, c = x_BHWC.shape
        qkv = conv(3 * c, 1, "qkv", self.dtype)(group_norm("norm", self.dtype)(x_BHWC))
        q, k, v = jnp.split(qkv.reshape(b, h * w, 3 * c), 3, axis=-1)
        weights_BLL = jax.nn.softmax(
            jnp.einsum("bic,bjc->bij", q, k).astype(jnp.float32) * c**-0.5, axis=-1
        )
        out = jnp.einsum("bij,bjc->bic", weights_BLL.astype(v.dtype), v).reshape(b, h, w, c)
        return x_BHWC + conv(c, 1, "proj_out", self.dtype)(out)


class Downsample(nn.Module):
    """Zero-pad right/bottom by one, then a stride-2 3x3 conv: (B, H, W, C) -> (B, H/2, W/2, C)."""

    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BHWC: jax.Array) -> jax.Array:
        c = x_BHWC.shape[-1]
        return conv(c, 3, "conv", self.dtype, stride=2, padding=((0, 1), (0, 1)))(x_BHWC)


def _fold_taps(kernel_3xx, phase: int, axis: int) -> jax.Array:
    """The three taps of a 3x3 kernel along `axis`, as seen from the low-resolution grid by the
    output rows (or columns) of one phase of a nearest x2 upsampling: phase 0 (even outputs) reads
    low-res offsets (-1, 0) with taps (k0, k1 + k2); phase 1 (odd outputs) reads (0, +1) with
    (k0 + k1, k2)."""
    k0, k1, k2 = jnp.split(kernel_3xx, 3, axis=axis)
    return jnp.concatenate([k0, k1 + k2] if phase == 0 else [k0 + k1, k2], axis=axis)


def upsample_conv(x_BhwC: jax.Array, kernel_33IO: jax.Array, bias_O: jax.Array) -> jax.Array:
    """conv3x3 (zero padding) of the nearest x2 upsampled x, computed on the low-resolution grid.

    Each of the four output phases (row parity, column parity) is a 2x2 convolution of x with the
    3x3 kernel's taps folded (`_fold_taps`), so the upsampled image is never built and the work is
    16 instead of 36 multiply-adds per input pixel and channel pair (the same sums, added in
    another order). (B, h, w, I) -> (B, 2h, 2w, O).
    """
    b, h, w, _ = x_BhwC.shape
    rows = []
    for row_phase in (0, 1):
        kernel_row = _fold_taps(kernel_33IO, row_phase, axis=0)
        columns = []
        for col_phase in (0, 1):
            kernel_22IO = _fold_taps(kernel_row, col_phase, axis=1)
            padding = ((1, 0) if row_phase == 0 else (0, 1), (1, 0) if col_phase == 0 else (0, 1))
            columns.append(jax.lax.conv_general_dilated(
                x_BhwC, kernel_22IO, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")))
        rows.append(jnp.stack(columns, axis=3))  # (B, h, w, 2, O)
    out = jnp.stack(rows, axis=2)  # (B, h, 2, w, 2, O)
    return out.reshape(b, 2 * h, 2 * w, kernel_33IO.shape[-1]) + bias_O


class UpsampleConv(nn.Module):
    """The parameters of a 3x3 `nn.Conv` (`kernel` (3, 3, C, C), `bias` (C,), same initialisers),
    applied by `upsample_conv` to a nearest x2 upsampling of its input."""

    features: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BhwC: jax.Array) -> jax.Array:
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (3, 3, x_BhwC.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        return upsample_conv(x_BhwC.astype(self.dtype), kernel.astype(self.dtype),
                             bias.astype(self.dtype))


class Upsample(nn.Module):
    """Nearest x2, then a 3x3 conv: (B, H, W, C) -> (B, 2H, 2W, C), computed as `upsample_conv`."""

    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BHWC: jax.Array) -> jax.Array:
        return UpsampleConv(x_BHWC.shape[-1], self.dtype, name="conv")(x_BHWC)


class Level(nn.Module):
    """One resolution level: res blocks (each followed by attention when `with_attn`), then resize."""

    out_channels: int
    num_blocks: int
    with_attn: bool
    resize: str  # "down", "up" or "none"
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        self.block = [ResnetBlock(self.out_channels, self.dtype) for _ in range(self.num_blocks)]
        if self.with_attn:
            self.attn = [AttnBlock(self.dtype) for _ in range(self.num_blocks)]
        if self.resize == "down":
            self.downsample = Downsample(self.dtype)
        elif self.resize == "up":
            self.upsample = Upsample(self.dtype)

    def __call__(self, x_BHWC: jax.Array) -> jax.Array:
        for i, block in enumerate(self.block):
            x_BHWC = block(x_BHWC)
            if self.with_attn:
                x_BHWC = self.attn[i](x_BHWC)
        if self.resize == "down":
            x_BHWC = self.downsample(x_BHWC)
        elif self.resize == "up":
            x_BHWC = self.upsample(x_BHWC)
        return x_BHWC


class Mid(nn.Module):
    """block_1 -> attn_1 (optional) -> block_2 at constant width."""

    channels: int
    with_attn: bool
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BHWC: jax.Array) -> jax.Array:
        x_BHWC = ResnetBlock(self.channels, self.dtype, name="block_1")(x_BHWC)
        if self.with_attn:
            x_BHWC = AttnBlock(self.dtype, name="attn_1")(x_BHWC)
        return ResnetBlock(self.channels, self.dtype, name="block_2")(x_BHWC)


class Encoder(nn.Module):
    """Image (B, H, W, 3) -> features (B, H/2^(n-1), W/2^(n-1), z_channels), n = len(ch_mult)."""

    ch: int
    ch_mult: Sequence[int]
    num_res_blocks: int
    z_channels: int
    using_sa: bool = True
    using_mid_sa: bool = True
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        last = len(self.ch_mult) - 1
        self.conv_in = conv(self.ch, 3, "conv_in", self.dtype)
        self.down = [
            Level(
                self.ch * mult,
                self.num_res_blocks,
                with_attn=self.using_sa and level == last,
                resize="none" if level == last else "down",
                dtype=self.dtype,
            )
            for level, mult in enumerate(self.ch_mult)
        ]
        self.mid = Mid(self.ch * self.ch_mult[-1], self.using_mid_sa, self.dtype)
        self.norm_out = group_norm("norm_out", self.dtype)
        self.conv_out = conv(self.z_channels, 3, "conv_out", self.dtype)

    def __call__(self, img_BHWC: jax.Array) -> jax.Array:
        h = self.conv_in(img_BHWC)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return self.conv_out(nn.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """Latent (B, h, w, z_channels) -> image (B, h*2^(n-1), w*2^(n-1), 3), not clamped."""

    ch: int
    ch_mult: Sequence[int]
    num_res_blocks: int
    out_channels: int = 3
    using_sa: bool = True
    using_mid_sa: bool = True
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        last = len(self.ch_mult) - 1
        self.conv_in = conv(self.ch * self.ch_mult[-1], 3, "conv_in", self.dtype)
        self.mid = Mid(self.ch * self.ch_mult[-1], self.using_mid_sa, self.dtype)
        self.up = [
            Level(
                self.ch * mult,
                self.num_res_blocks + 1,
                with_attn=self.using_sa and level == last,
                resize="none" if level == 0 else "up",
                dtype=self.dtype,
            )
            for level, mult in enumerate(self.ch_mult)
        ]
        self.norm_out = group_norm("norm_out", self.dtype)
        self.conv_out = conv(self.out_channels, 3, "conv_out", self.dtype)

    def __call__(self, z_BhwC: jax.Array) -> jax.Array:
        h = self.mid(self.conv_in(z_BhwC))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(nn.silu(self.norm_out(h)))
