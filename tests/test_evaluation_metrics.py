"""FID, Inception Score, precision/recall, batched extraction and cached statistics."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from PIL import Image

from srdd_jax import parallel
from srdd_jax.evaluation import features, images, metrics, precision_recall


def _scipy_fid(mu1, s1, mu2, s2):
    """The pytorch-fid formula: tr sqrtm(S1 S2) from scipy, in float64."""
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real)


def _gaussian_stats(rng, n, d, rank=None):
    mix = rng.normal(size=(rank or d, d))
    x = rng.normal(size=(n, rank or d)) @ mix + rng.normal(size=d)
    return metrics.feature_statistics(x)


def test_feature_statistics_match_numpy():
    x = np.random.default_rng(0).normal(size=(30, 5)).astype(np.float32)
    mu, sigma = metrics.feature_statistics(x)
    np.testing.assert_allclose(mu, x.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(x.astype(np.float64), rowvar=False), rtol=1e-10)


@pytest.mark.parametrize("rank", [None, 20])  # 20 < D: singular covariance
def test_frechet_distance_matches_scipy_sqrtm(rank):
    rng = np.random.default_rng(1)
    mu1, s1 = _gaussian_stats(rng, 400, 24)
    mu2, s2 = _gaussian_stats(rng, 400, 24, rank)
    if rank is not None:
        s2 = s2 + 1e-9 * np.eye(24)  # near-singular, still invertible, so sqrtm is well defined
    ours = metrics.frechet_distance(mu1, s1, mu2, s2)
    np.testing.assert_allclose(ours, _scipy_fid(mu1, s1, mu2, s2), rtol=1e-6)
    np.testing.assert_allclose(metrics.frechet_distance(mu2, s2, mu1, s1), ours, rtol=1e-6)


def test_frechet_distance_of_a_set_with_itself_is_zero():
    mu, sigma = _gaussian_stats(np.random.default_rng(2), 50, 32)  # N < D: rank-deficient
    assert abs(metrics.frechet_distance(mu, sigma, mu, sigma)) < 1e-8 * np.trace(sigma)


def test_inception_score_bounds():
    k = 10
    assert metrics.inception_score(np.zeros((40, k)), splits=4) == pytest.approx((1.0, 0.0))
    one_hot = np.tile(np.eye(k), (3, 1))  # each split of 10 rows holds every class once
    mean, std = metrics.inception_score(one_hot, splits=3, probs=True, shuffle_seed=None)
    assert mean == pytest.approx(k) and std == pytest.approx(0.0, abs=1e-9)
    mean, _ = metrics.inception_score(100.0 * one_hot, splits=1)
    assert mean == pytest.approx(k, rel=1e-6)


def test_precision_recall_identical_and_disjoint():
    rng = np.random.default_rng(3)
    real = rng.normal(size=(37, 8)).astype(np.float32)
    assert precision_recall.precision_recall(real, real, k=3, chunk=16) == (1.0, 1.0)
    far = rng.normal(size=(29, 8)).astype(np.float32) + 100.0
    assert precision_recall.precision_recall(real, far, k=3, chunk=16) == (0.0, 0.0)


def test_precision_recall_matches_brute_force():
    rng = np.random.default_rng(4)
    real = rng.normal(size=(40, 6))
    fake = rng.normal(size=(33, 6)) * 1.5 + 0.5

    def brute(a, b, k):  # fraction of b inside the k-NN balls of a
        d_aa = np.linalg.norm(a[:, None] - a[None], axis=-1)
        radii = np.sort(d_aa, axis=1)[:, k]
        return (np.linalg.norm(b[:, None] - a[None], axis=-1) <= radii[None]).any(1).mean()

    precision, recall = precision_recall.precision_recall(real, fake, k=3, chunk=8)
    assert precision == pytest.approx(brute(real, fake, 3))
    assert recall == pytest.approx(brute(fake, real, 3))


def test_extract_features_pads_the_last_batch_and_shards():
    mesh = parallel.make_mesh()
    imgs = np.random.default_rng(5).integers(0, 256, size=(19, 4, 4, 1), dtype=np.uint8)
    fn = jax.jit(lambda x: dict(mean=jnp.mean(x.astype(jnp.float32), axis=(1, 2, 3)),
                                first=x[:, 0, 0, :]))
    out = features.extract_features(fn, imgs, batch_size=8, mesh=mesh)
    assert out["mean"].shape == (19,) and out["first"].shape == (19, 1)
    np.testing.assert_allclose(out["mean"], imgs.reshape(19, -1).mean(1), rtol=1e-6)


def test_cached_stats_compute_once(tmp_path):
    feats = np.random.default_rng(6).normal(size=(12, 3)).astype(np.float32)
    calls = []

    def compute():
        calls.append(1)
        return feats

    first = features.cached_stats(str(tmp_path), "ref", compute)
    second = features.cached_stats(str(tmp_path), "ref", compute)
    assert len(calls) == 1 and os.path.isfile(tmp_path / "ref.npz")
    np.testing.assert_array_equal(second.features, feats)
    np.testing.assert_allclose(second.sigma, first.sigma)
    result = features.compare(second, first, k=2)
    assert result["fid"] == pytest.approx(0.0, abs=1e-9)
    assert (result["precision"], result["recall"]) == (1.0, 1.0)


def test_load_images_from_npz_and_folder(tmp_path):
    rng = np.random.default_rng(7)
    gray = rng.integers(0, 256, size=(3, 5, 6), dtype=np.uint8)
    np.savez(tmp_path / "s.npz", arr_0=gray)
    assert images.load_images(str(tmp_path / "s.npz")).shape == (3, 5, 6, 1)
    folder = tmp_path / "imgs"
    folder.mkdir()
    rgb = rng.integers(0, 256, size=(2, 5, 6, 3), dtype=np.uint8)
    for i, im in enumerate(rgb):
        Image.fromarray(im).save(folder / f"{i}.png")
    np.testing.assert_array_equal(images.load_images(str(folder)), rgb)
    Image.fromarray(gray[0]).save(folder / "2.png")  # one grayscale file among RGB: tiled
    mixed = images.load_images(str(folder))
    assert mixed.shape == (3, 5, 6, 3)
    np.testing.assert_array_equal(mixed[2], np.repeat(gray[0][..., None], 3, -1))
    with pytest.raises(FileNotFoundError):
        images.load_images(str(tmp_path / "missing.npz"))
