"""Pixel similarity of two images over a region: PSNR and SSIM (pure numpy functions).

Images are float (B, H, W, C) in [0, 1]; a region is a (B, H, W) or (H, W) weight in [0, 1]
(1: counted), None for the whole image. Each function returns one value per image, (B,).

- PSNR: 10 log10(1 / MSE) over the region's pixels and all channels; identical regions give
  `PSNR_CAP` (a finite stand-in for infinity, so means stay finite).
- SSIM (Wang et al. 2004, "Image quality assessment: from error visibility to structural
  similarity"): the per-pixel SSIM map with an 11 x 11 Gaussian window (sigma 1.5), K1 = 0.01,
  K2 = 0.03 and data range 1, computed at every position where the window fits inside the image
  ('valid', as the paper's reference code), averaged over channels and over the region's pixels
  at the windows' centres; NaN for an image whose region holds no window centre.
"""

from __future__ import annotations

import numpy as np

PSNR_CAP = 100.0
_WINDOW, _SIGMA, _K1, _K2 = 11, 1.5, 0.01, 0.03


def _region(region, shape_BHW) -> np.ndarray:
    if region is None:
        return np.ones(shape_BHW, np.float64)
    return np.broadcast_to(np.asarray(region, np.float64), shape_BHW)


def psnr(a_BHWC, b_BHWC, region=None) -> np.ndarray:
    """(B,) PSNR in dB of a against b over `region` (see the module docstring)."""
    a, b = np.asarray(a_BHWC, np.float64), np.asarray(b_BHWC, np.float64)
    weight = _region(region, a.shape[:3])[..., None]
    squared = ((a - b) ** 2 * weight).sum(axis=(1, 2, 3))
    count = weight.sum(axis=(1, 2, 3)) * a.shape[-1]
    mse = squared / np.maximum(count, 1e-12)
    with np.errstate(divide="ignore"):
        return np.minimum(10 * np.log10(1.0 / mse), PSNR_CAP)


def _gaussian_window() -> np.ndarray:
    x = np.arange(_WINDOW) - _WINDOW // 2
    g = np.exp(-x ** 2 / (2 * _SIGMA ** 2))
    return g / g.sum()


def _filter_valid(x_BHWC: np.ndarray) -> np.ndarray:
    """Separable Gaussian filter, 'valid' positions: (B, H - 10, W - 10, C)."""
    g = _gaussian_window()
    rows = sum(g[i] * x_BHWC[:, i:x_BHWC.shape[1] - _WINDOW + 1 + i] for i in range(_WINDOW))
    return sum(g[i] * rows[:, :, i:rows.shape[2] - _WINDOW + 1 + i] for i in range(_WINDOW))


def ssim(a_BHWC, b_BHWC, region=None) -> np.ndarray:
    """(B,) mean SSIM of a against b over `region` (see the module docstring); images need at
    least 11 pixels per side."""
    a, b = np.asarray(a_BHWC, np.float64), np.asarray(b_BHWC, np.float64)
    if min(a.shape[1:3]) < _WINDOW:
        raise ValueError(f"SSIM needs images of at least {_WINDOW} x {_WINDOW} pixels, got "
                         f"{a.shape[1]} x {a.shape[2]}")
    c1, c2 = _K1 ** 2, _K2 ** 2
    mu_a, mu_b = _filter_valid(a), _filter_valid(b)
    var_a = _filter_valid(a * a) - mu_a ** 2
    var_b = _filter_valid(b * b) - mu_b ** 2
    cov = _filter_valid(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1)
                                                            * (var_a + var_b + c2))
    half = _WINDOW // 2
    weight = _region(region, a.shape[:3])[:, half:a.shape[1] - half, half:a.shape[2] - half]
    per_pixel = ssim_map.mean(axis=-1)
    total = weight.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):  # NaN: no window centre in the region
        return np.where(total > 0, (per_pixel * weight).sum(axis=(1, 2)) / total, np.nan)
