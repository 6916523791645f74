"""Resampling that matches PyTorch's `F.interpolate` exactly, as explicit matrices.

VAR moves feature maps between scales with two PyTorch modes that `jax.image.resize` does not
reproduce:

- ``mode='area'`` (= adaptive average pooling, overlapping bins when ``in % out != 0``),
- ``mode='bicubic', align_corners=False`` (Keys kernel with A = -0.75, clamped border taps, no
  antialiasing).

PyTorch's ``bilinear`` (used for edit masks) is here too. All are separable, so a resize is
``R_h @ x @ R_w^T`` with small (out, in) matrices built here in numpy at trace time and applied
in float32 with HIGHEST matmul precision (TPU/GPU default
precision would round the operands to bf16 and change token choices).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

_BICUBIC_A = -0.75


@functools.cache
def area_matrix(size_in: int, size_out: int) -> np.ndarray:
    """PyTorch 'area' / adaptive-average-pool weights, shape (size_out, size_in).

    Output i averages inputs [floor(i*in/out), ceil((i+1)*in/out)).
    """
    _check_sizes(size_in, size_out)
    mat = np.zeros((size_out, size_in), np.float64)
    for i in range(size_out):
        start = (i * size_in) // size_out
        end = -((-(i + 1) * size_in) // size_out)
        mat[i, start:end] = 1.0 / (end - start)
    return mat


def _cubic_near(t: np.float32) -> np.float32:
    """Kernel weight for taps at distance t in [0, 1] (float32, as PyTorch computes it)."""
    a = np.float32(_BICUBIC_A)
    return ((a + 2) * t - (a + 3)) * t * t + np.float32(1)


def _cubic_far(u: np.float32) -> np.float32:
    """Kernel weight for taps at distance u in [1, 2] (float32, as PyTorch computes it)."""
    a = np.float32(_BICUBIC_A)
    return ((a * u - 5 * a) * u + 8 * a) * u - 4 * a


@functools.cache
def bicubic_matrix(size_in: int, size_out: int) -> np.ndarray:
    """PyTorch bicubic (A=-0.75, align_corners=False) weights, shape (size_out, size_in).

    Source coordinate s = (dst + 0.5) * in/out - 0.5 (not clamped); taps at floor(s) - 1 ... + 2
    are clamped to [0, in - 1], so weights of clamped taps accumulate on the border pixel. The
    coordinates and weights are computed in float32 in PyTorch's order, so the weights are
    PyTorch's to the bit.
    """
    _check_sizes(size_in, size_out)
    mat = np.zeros((size_out, size_in), np.float32)
    scale = np.float32(size_in) / np.float32(size_out)
    one = np.float32(1)
    for dst in range(size_out):
        src = scale * (np.float32(dst) + np.float32(0.5)) - np.float32(0.5)
        x0 = int(np.floor(src))
        t = src - np.float32(x0)
        weights = (_cubic_far(t + one), _cubic_near(t), _cubic_near(one - t),
                   _cubic_far((one - t) + one))
        for offset, weight in zip(range(-1, 3), weights):
            mat[dst, min(max(x0 + offset, 0), size_in - 1)] += weight
    return mat


@functools.cache
def bilinear_matrix(size_in: int, size_out: int) -> np.ndarray:
    """PyTorch bilinear (align_corners=False, no antialias) weights, shape (size_out, size_in).

    s = max((dst + 0.5) * in/out - 0.5, 0); taps floor(s) and floor(s) + 1 (clamped).
    """
    _check_sizes(size_in, size_out)
    mat = np.zeros((size_out, size_in), np.float32)
    scale = np.float32(size_in) / np.float32(size_out)
    for dst in range(size_out):
        src = max(scale * (np.float32(dst) + np.float32(0.5)) - np.float32(0.5), np.float32(0))
        x0 = min(int(np.floor(src)), size_in - 1)
        x1 = min(x0 + 1, size_in - 1)
        frac = src - np.float32(x0)
        mat[dst, x0] += np.float32(1) - frac
        mat[dst, x1] += frac
    return mat


def _check_sizes(size_in: int, size_out: int) -> None:
    if size_in < 1 or size_out < 1:
        raise ValueError(f"resize sizes must be positive, got {size_in} -> {size_out}")


def apply_separable(x_BHWC: jax.Array, rows_OH: np.ndarray, cols_PW: np.ndarray) -> jax.Array:
    """Applies a separable linear resize: out[b,o,p,c] = sum_hw rows[o,h] x[b,h,w,c] cols[p,w].

    Args:
      x_BHWC: float array (B, H, W, C).
      rows_OH: (O, H) weights for the height axis.
      cols_PW: (P, W) weights for the width axis.
    Returns:
      (B, O, P, C) float32 array.
    """
    highest = jax.lax.Precision.HIGHEST
    rows = jnp.asarray(rows_OH, jnp.float32)
    cols = jnp.asarray(cols_PW, jnp.float32)
    y = jnp.einsum("pw,bhwc->bhpc", cols, x_BHWC, precision=highest)  # width first, like PyTorch
    return jnp.einsum("oh,bhpc->bopc", rows, y, precision=highest)


def area_resize(x_BHWC: jax.Array, out_hw: tuple[int, int]) -> jax.Array:
    """PyTorch `F.interpolate(mode='area')` on NHWC: (B, H, W, C) -> (B, oh, ow, C)."""
    _, h, w, _ = x_BHWC.shape
    if (h, w) == tuple(out_hw):
        return x_BHWC
    return apply_separable(x_BHWC, area_matrix(h, out_hw[0]), area_matrix(w, out_hw[1]))


def bilinear_resize(x_BHWC: jax.Array, out_hw: tuple[int, int]) -> jax.Array:
    """PyTorch `F.interpolate(mode='bilinear', align_corners=False)` on NHWC."""
    _, h, w, _ = x_BHWC.shape
    return apply_separable(x_BHWC, bilinear_matrix(h, out_hw[0]), bilinear_matrix(w, out_hw[1]))


def bicubic_resize(x_BHWC: jax.Array, out_hw: tuple[int, int]) -> jax.Array:
    """PyTorch `F.interpolate(mode='bicubic', align_corners=False)` on NHWC: (B,H,W,C) -> (B,oh,ow,C)."""
    _, h, w, _ = x_BHWC.shape
    if (h, w) == tuple(out_hw):
        return x_BHWC
    return apply_separable(x_BHWC, bicubic_matrix(h, out_hw[0]), bicubic_matrix(w, out_hw[1]))
