"""The FID Inception-v3 ("pt_inception-2015-12-05") in flax.linen, NHWC.

A port of the network that pytorch-fid and torch-fidelity use to reproduce the TensorFlow FID
graph: torchvision's Inception-v3 with the TF variants of the blocks (3x3 average pools that
ignore zero padding in the A, C and first E blocks, a 3x3 max pool in the last E block), 1008
classes and no auxiliary head. Inputs go through torch-fidelity's preprocessing: uint8 images
become float32, are resized to 299x299 with TensorFlow 1.x bilinear resampling (align_corners
False, no half-pixel centres) and mapped to [-1, 1) by (x - 128) / 128. Grayscale images are
tiled to 3 channels first.

Each conv + BatchNorm(eps 1e-3, inference statistics) pair is one `BasicConv` whose BatchNorm is
folded into the conv's kernel and bias when the weights are loaded (see `inception_weights`).
Module names follow the PyTorch state dict (`Mixed_5b/branch1x1` <-> `Mixed_5b.branch1x1.*`).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

INPUT_SIZE = 299
POOL_DIM = 2048
NUM_LOGITS = 1008


def _tf1_bilinear_taps(size_in: int, size_out: int):
    """Low/high source indices and fractions (float32, as torch-fidelity computes them)."""
    pos = np.arange(size_out, dtype=np.float32) * np.float32(size_in / size_out)
    lo = pos.astype(np.int64)
    hi = np.minimum(lo + 1, size_in - 1)
    return lo, hi, pos - lo.astype(np.float32)


def resize_bilinear_tf1(x_BHWC: jax.Array, size: tuple[int, int]) -> jax.Array:
    """TensorFlow 1.x `resize_bilinear` (align_corners=False): (B, H, W, C) -> (B, h, w, C).

    Source position of output pixel i is i * in / out; interpolation runs along W, then H.
    """
    (ylo, yhi, dy), (xlo, xhi, dx) = (_tf1_bilinear_taps(x_BHWC.shape[1], size[0]),
                                      _tf1_bilinear_taps(x_BHWC.shape[2], size[1]))
    dx_W = jnp.asarray(dx)[None, None, :, None]
    dy_H = jnp.asarray(dy)[None, :, None, None]

    def along_w(rows_BhWC):
        left, right = rows_BhWC[:, :, xlo], rows_BhWC[:, :, xhi]
        return left + (right - left) * dx_W

    top, bottom = along_w(x_BHWC[:, ylo]), along_w(x_BHWC[:, yhi])
    return top + (bottom - top) * dy_H


def preprocess(images_BHWC: jax.Array) -> jax.Array:
    """uint8 (or [0, 255] float) images (B, H, W, 1|3) -> float32 (B, 299, 299, 3) in [-1, 1)."""
    if images_BHWC.shape[-1] == 1:
        images_BHWC = jnp.repeat(images_BHWC, 3, axis=-1)
    if images_BHWC.shape[-1] != 3:
        raise ValueError(f"Inception takes 1- or 3-channel images, got shape {images_BHWC.shape}")
    x = resize_bilinear_tf1(images_BHWC.astype(jnp.float32), (INPUT_SIZE, INPUT_SIZE))
    return (x - 128.0) / 128.0


class BasicConv(nn.Module):
    """Conv with explicit zero padding, BatchNorm folded into kernel and bias, then ReLU."""

    features: int
    kernel_size: tuple[int, int]
    stride: int = 1
    padding: tuple[int, int] = (0, 0)

    @nn.compact
    def __call__(self, x_BHWC):
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (*self.kernel_size, x_BHWC.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        (ph, pw) = self.padding
        y = lax.conv_general_dilated(
            x_BHWC, kernel, (self.stride, self.stride), ((ph, ph), (pw, pw)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=lax.Precision.HIGHEST)
        return nn.relu(y + bias)


def _avg_pool_3x3(x_BHWC):
    """3x3 stride-1 average pool whose border windows average only the real pixels."""
    return nn.avg_pool(x_BHWC, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_s2(x_BHWC):
    return nn.max_pool(x_BHWC, (3, 3), (2, 2), "VALID")


class InceptionA(nn.Module):
    """35x35 block: 1x1, 5x5, double 3x3 and pooled branches."""

    pool_features: int

    @nn.compact
    def __call__(self, x):
        b1 = BasicConv(64, (1, 1), name="branch1x1")(x)
        b5 = BasicConv(48, (1, 1), name="branch5x5_1")(x)
        b5 = BasicConv(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
        b3 = BasicConv(64, (1, 1), name="branch3x3dbl_1")(x)
        b3 = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
        b3 = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
        bp = BasicConv(self.pool_features, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    """35x35 -> 17x17 reduction block."""

    @nn.compact
    def __call__(self, x):
        b3 = BasicConv(384, (3, 3), stride=2, name="branch3x3")(x)
        bd = BasicConv(64, (1, 1), name="branch3x3dbl_1")(x)
        bd = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = BasicConv(96, (3, 3), stride=2, name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class InceptionC(nn.Module):
    """17x17 block with factorised 7x7 convolutions of `channels_7x7` inner channels."""

    channels_7x7: int

    @nn.compact
    def __call__(self, x):
        c7 = self.channels_7x7
        b1 = BasicConv(192, (1, 1), name="branch1x1")(x)
        b7 = BasicConv(c7, (1, 1), name="branch7x7_1")(x)
        b7 = BasicConv(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
        b7 = BasicConv(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
        bd = BasicConv(c7, (1, 1), name="branch7x7dbl_1")(x)
        bd = BasicConv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
        bd = BasicConv(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
        bd = BasicConv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
        bd = BasicConv(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
        bp = BasicConv(192, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    """17x17 -> 8x8 reduction block."""

    @nn.compact
    def __call__(self, x):
        b3 = BasicConv(192, (1, 1), name="branch3x3_1")(x)
        b3 = BasicConv(320, (3, 3), stride=2, name="branch3x3_2")(b3)
        b7 = BasicConv(192, (1, 1), name="branch7x7x3_1")(x)
        b7 = BasicConv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = BasicConv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = BasicConv(192, (3, 3), stride=2, name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class InceptionE(nn.Module):
    """8x8 block with split 1x3 / 3x1 branches; `max_pool` selects the TF graph's last block."""

    max_pool: bool = False

    @nn.compact
    def __call__(self, x):
        b1 = BasicConv(320, (1, 1), name="branch1x1")(x)
        b3 = BasicConv(384, (1, 1), name="branch3x3_1")(x)
        b3 = jnp.concatenate([BasicConv(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                              BasicConv(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3)], -1)
        bd = BasicConv(448, (1, 1), name="branch3x3dbl_1")(x)
        bd = BasicConv(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate([BasicConv(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
                              BasicConv(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd)], -1)
        if self.max_pool:
            pooled = nn.max_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)))
        else:
            pooled = _avg_pool_3x3(x)
        bp = BasicConv(192, (1, 1), name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3(nn.Module):
    """FID Inception-v3: images (B, H, W, 1|3) -> pool (B, 2048), logits and logits_unbiased
    (B, 1008; the latter without the fc bias, which is what torch-fidelity's Inception Score
    uses)."""

    @nn.compact
    def __call__(self, images_BHWC):
        x = preprocess(images_BHWC)
        x = BasicConv(32, (3, 3), stride=2, name="Conv2d_1a_3x3")(x)
        x = BasicConv(32, (3, 3), name="Conv2d_2a_3x3")(x)
        x = BasicConv(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
        x = _max_pool_3x3_s2(x)
        x = BasicConv(80, (1, 1), name="Conv2d_3b_1x1")(x)
        x = BasicConv(192, (3, 3), name="Conv2d_4a_3x3")(x)
        x = _max_pool_3x3_s2(x)
        x = InceptionA(32, name="Mixed_5b")(x)
        x = InceptionA(64, name="Mixed_5c")(x)
        x = InceptionA(64, name="Mixed_5d")(x)
        x = InceptionB(name="Mixed_6a")(x)
        for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
            x = InceptionC(c7, name=name)(x)
        x = InceptionD(name="Mixed_7a")(x)
        x = InceptionE(name="Mixed_7b")(x)
        x = InceptionE(max_pool=True, name="Mixed_7c")(x)
        pool_BD = jnp.mean(x, axis=(1, 2))
        fc_kernel = self.param("fc_kernel", nn.initializers.lecun_normal(), (POOL_DIM, NUM_LOGITS))
        fc_bias = self.param("fc_bias", nn.initializers.zeros, (NUM_LOGITS,))
        logits_unbiased = jnp.matmul(pool_BD, fc_kernel, precision=lax.Precision.HIGHEST)
        return dict(pool=pool_BD, logits=logits_unbiased + fc_bias, logits_unbiased=logits_unbiased)
