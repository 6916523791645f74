"""k-NN manifold precision and recall (Kynkäänniemi et al., 2019), as torch-fidelity computes it.

Each set's manifold is the union of balls around its points whose radius is the distance to the
k-th nearest other point of the same set. Precision is the fraction of fake points inside the
real manifold, recall the fraction of real points inside the fake manifold (a point on a ball's
boundary counts as inside). Distances are computed on the default device in row chunks of a
jitted kernel, so (10k, 10k) pairs need only chunk x N memory.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


def _sq_dists(rows_RD: jax.Array, points_ND: jax.Array) -> jax.Array:
    """Squared Euclidean distances (R, N), via |a|^2 + |b|^2 - 2ab in full-precision matmuls."""
    cross_RN = jnp.matmul(rows_RD, points_ND.T, precision=lax.Precision.HIGHEST)
    sq_R = jnp.sum(rows_RD * rows_RD, axis=1)
    sq_N = jnp.sum(points_ND * points_ND, axis=1)
    return jnp.maximum(sq_R[:, None] + sq_N[None, :] - 2.0 * cross_RN, 0.0)


@functools.partial(jax.jit, static_argnames="k")
def _kth_neighbour_sq_dist(rows_RD, points_ND, k: int):
    """(R,) squared distance to the k-th nearest point, the row itself (distance 0) excluded."""
    neg_smallest_RK = lax.top_k(-_sq_dists(rows_RD, points_ND), k + 1)[0]
    return -neg_smallest_RK[:, k]


@jax.jit
def _inside_any_ball(rows_RD, centres_ND, sq_radii_N):
    """(R,) bool: whether each row lies within any ball (centre n, squared radius n)."""
    return jnp.any(_sq_dists(rows_RD, centres_ND) <= sq_radii_N[None, :], axis=1)


def _chunked(fn, rows_ND: np.ndarray, chunk: int) -> np.ndarray:
    """fn over row chunks of equal size (the last one zero-padded, so it compiles once)."""
    n = rows_ND.shape[0]
    size = min(chunk, n)
    out = []
    for start in range(0, n, size):
        block = rows_ND[start:start + size]
        pad = size - block.shape[0]
        if pad:
            block = np.concatenate([block, np.zeros((pad, block.shape[1]), block.dtype)])
        out.append(np.asarray(fn(block))[:size - pad])
    return np.concatenate(out)


def knn_sq_radii(feats_ND, k: int = 3, chunk: int = 1024) -> np.ndarray:
    """(N,) squared distance from each point to its k-th nearest neighbour in the same set."""
    feats = np.asarray(feats_ND, np.float32)
    if not 1 <= k < feats.shape[0]:
        raise ValueError(f"k={k} nearest neighbours need more than k points, got {feats.shape[0]}")
    points = jnp.asarray(feats)
    return _chunked(lambda rows: _kth_neighbour_sq_dist(rows, points, k), feats, chunk)


def coverage_fraction(query_MD, centres_ND, sq_radii_N, chunk: int = 1024) -> float:
    """Fraction of the M query points that fall inside any ball around the N centres."""
    centres, sq_radii = jnp.asarray(centres_ND, jnp.float32), jnp.asarray(sq_radii_N, jnp.float32)
    inside = _chunked(lambda rows: _inside_any_ball(rows, centres, sq_radii),
                      np.asarray(query_MD, np.float32), chunk)
    return float(inside.mean())


def precision_recall(real_ND, fake_MD, k: int = 3, chunk: int = 1024) -> tuple[float, float]:
    """(precision, recall) of fake (M, D) features against real (N, D) features."""
    real, fake = np.asarray(real_ND, np.float32), np.asarray(fake_MD, np.float32)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"precision/recall need (N, D) and (M, D) features, got {real.shape} "
                         f"and {fake.shape}")
    precision = coverage_fraction(fake, real, knn_sq_radii(real, k, chunk), chunk)
    recall = coverage_fraction(real, fake, knn_sq_radii(fake, k, chunk), chunk)
    return precision, recall
