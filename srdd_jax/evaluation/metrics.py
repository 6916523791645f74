"""Fréchet distance and Inception Score in float64 numpy (no scipy).

FID follows pytorch-fid / torch-fidelity: Gaussian statistics of (N, D) features (mean and
unbiased covariance) and ``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr sqrt(S1 S2)``. The square-root
trace is taken from the eigenvalues of the symmetric PSD matrix ``sqrt(S1) S2 sqrt(S1)``, which
has the same spectrum as ``S1 S2``, so (near-)singular covariances need no regularising offset.

The Inception Score follows torch-fidelity: the N predictions are shuffled with a fixed seed,
cut into `splits` contiguous chunks, and each chunk scores ``exp(mean_i KL(p(y|x_i) || p(y)))``.
"""

from __future__ import annotations

import numpy as np


def feature_statistics(feats_ND) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of N feature rows, in float64 (as numpy.cov)."""
    feats = np.asarray(feats_ND, np.float64)
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise ValueError(f"feature statistics need (N >= 2, D) features, got shape {feats.shape}")
    mu_D = feats.mean(axis=0)
    centred = feats - mu_D
    sigma_DD = centred.T @ centred / (feats.shape[0] - 1)
    return mu_D, sigma_DD


def _psd_sqrt(sym_DD: np.ndarray) -> np.ndarray:
    """Square root of a symmetric PSD matrix; round-off negative eigenvalues become 0."""
    eigvals, eigvecs = np.linalg.eigh((sym_DD + sym_DD.T) / 2)
    return (eigvecs * np.sqrt(np.clip(eigvals, 0.0, None))) @ eigvecs.T


def frechet_distance(mu1_D, sigma1_DD, mu2_D, sigma2_DD) -> float:
    """Fréchet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2), in float64."""
    mu1, mu2 = np.asarray(mu1_D, np.float64), np.asarray(mu2_D, np.float64)
    s1, s2 = np.asarray(sigma1_DD, np.float64), np.asarray(sigma2_DD, np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != mu1.shape * 2:
        raise ValueError(f"mismatched statistics: mu {mu1.shape} / {mu2.shape}, "
                         f"sigma {s1.shape} / {s2.shape}")
    sqrt_s1 = _psd_sqrt(s1)
    middle = sqrt_s1 @ s2 @ sqrt_s1
    eigvals = np.linalg.eigvalsh((middle + middle.T) / 2)
    tr_covmean = np.sqrt(np.clip(eigvals, 0.0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


def inception_score(scores_NK, splits: int = 10, probs: bool = False,
                    shuffle_seed: int | None = 2020) -> tuple[float, float]:
    """(mean, std) over `splits` chunks of exp(E_x KL(p(y|x) || p(y))).

    scores_NK: classifier logits (softmax is applied), or probabilities when `probs` is True.
    Rows are permuted with np.random.RandomState(shuffle_seed) first, as torch-fidelity does
    (None keeps the order). std is the population standard deviation (numpy's default).
    """
    scores = np.asarray(scores_NK, np.float64)
    n = scores.shape[0]
    if scores.ndim != 2 or not 1 <= splits <= n:
        raise ValueError(f"inception score needs (N, K) scores with N >= splits={splits}, "
                         f"got shape {scores.shape}")
    if shuffle_seed is not None:
        scores = scores[np.random.RandomState(shuffle_seed).permutation(n)]
    if probs:
        p_NK = scores / scores.sum(axis=1, keepdims=True)
    else:
        shifted = scores - scores.max(axis=1, keepdims=True)
        p_NK = np.exp(shifted)
        p_NK /= p_NK.sum(axis=1, keepdims=True)
    split_scores = []
    for i in range(splits):
        p = p_NK[i * n // splits:(i + 1) * n // splits]
        q = p.mean(axis=0, keepdims=True)
        # 0 * log 0 = 0: classes a prediction gives no mass add nothing to its KL.
        ratio = np.divide(p, q, out=np.ones_like(p), where=p > 0)
        kl_n = (p * np.log(ratio)).sum(axis=1)
        split_scores.append(np.exp(kl_n.mean()))
    return float(np.mean(split_scores)), float(np.std(split_scores))
