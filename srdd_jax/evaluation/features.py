"""Batched feature extraction and cached reference statistics, for any feature network.

`extract_features` runs a jitted per-batch function over (N, H, W, C) uint8 images in fixed-size
batches (the last one padded, so it compiles once), sharding each batch over a mesh when given,
and logs progress. `InceptionFeatures` is that function for the FID Inception-v3; another
network (e.g. a small dataset classifier) passes its own function to the same helpers.
`FeatureStats` keeps the Gaussian statistics (for FID) and the features (for precision/recall)
of a set, and `cached_stats` computes them once per name and reuses the `.npz` afterwards.

Batches are placed with `jax.device_put` from host numpy, so the mesh must be single-process.

    inception = InceptionFeatures("pt_inception-2015-12-05-6726825d.pth", mesh)
    real = cached_stats(cache_dir, "fashion_mnist_train",
                        lambda: inception(images.load_images(real_folder))["pool"])
    fake_out = inception(images.load_images("samples.npz"))
    scores = compare(FeatureStats.from_features(fake_out["pool"]), real)  # fid, precision, recall
    is_mean, is_std = metrics.inception_score(fake_out["logits_unbiased"])  # as torch-fidelity
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh

from srdd_jax import parallel
from srdd_jax.evaluation import inception, inception_weights, metrics, precision_recall
from srdd_jax.progress import Progress

FeatureFn = Callable[[jax.Array], dict[str, jax.Array]]


def extract_features(feature_fn: FeatureFn, images_NHWC: np.ndarray, batch_size: int = 50,
                     mesh: Mesh | None = None, name: str = "features") -> dict[str, np.ndarray]:
    """{key: (N, ...) numpy} from `feature_fn` ((B, H, W, C) -> {key: (B, ...)}) over all images."""
    n = images_NHWC.shape[0]
    if n == 0:
        raise ValueError("no images to extract features from")
    sharding = None if mesh is None else parallel.batch_sharding(mesh, images_NHWC.ndim, batch_size)
    num_batches = -(-n // batch_size)
    chunks: dict[str, list[np.ndarray]] = {}
    progress = Progress(name, n, "images")
    for b in range(num_batches):
        batch = images_NHWC[b * batch_size:(b + 1) * batch_size]
        valid = batch.shape[0]
        if valid < batch_size:
            batch = np.concatenate([batch, np.zeros((batch_size - valid,) + batch.shape[1:], batch.dtype)])
        out = feature_fn(jax.device_put(batch, sharding) if sharding is not None else batch)
        for key, value in jax.device_get(out).items():
            chunks.setdefault(key, []).append(np.asarray(value)[:valid])
        progress.update(min((b + 1) * batch_size, n))
    return {key: np.concatenate(parts) for key, parts in chunks.items()}


class InceptionFeatures:
    """FID Inception-v3 features of uint8 (N, H, W, 1|3) images:
    {pool: (N, 2048), logits: (N, 1008), logits_unbiased: (N, 1008)} as float32 numpy.

    weights: the `.pth` or converted `.npz` (see `inception_weights`). With a mesh, parameters
    are replicated and each batch is split over the mesh (batch_size should divide evenly).
    """

    def __init__(self, weights: str, mesh: Mesh | None = None, batch_size: int = 50):
        params = inception_weights.load_params(weights)
        self.params = params if mesh is None else jax.device_put(params, parallel.replicated(mesh))
        self.mesh = mesh
        self.batch_size = batch_size
        apply = jax.jit(inception.InceptionV3().apply)
        self.batch_fn: FeatureFn = lambda images_BHWC: apply({"params": self.params}, images_BHWC)

    def __call__(self, images_NHWC: np.ndarray) -> dict[str, np.ndarray]:
        return extract_features(self.batch_fn, images_NHWC, self.batch_size, self.mesh,
                                name="inception")


@dataclasses.dataclass(frozen=True)
class FeatureStats:
    """Statistics of one image set: mu (D,), sigma (D, D) in float64, features (N, D) float32."""

    mu: np.ndarray
    sigma: np.ndarray
    features: np.ndarray

    @classmethod
    def from_features(cls, features_ND) -> FeatureStats:
        mu, sigma = metrics.feature_statistics(features_ND)
        return cls(mu, sigma, np.asarray(features_ND, np.float32))

    def save(self, path: str) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = path + ".tmp.npz"
        np.savez(tmp, mu=self.mu, sigma=self.sigma, features=self.features)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str) -> FeatureStats:
        with np.load(path) as data:
            return cls(data["mu"], data["sigma"], data["features"])


def cached_stats(cache_dir: str, name: str, compute_features: Callable[[], np.ndarray]) -> FeatureStats:
    """Statistics stored in `cache_dir/name.npz`; computed (compute_features() -> (N, D)) and
    written the first time only. Delete the file when the images or the network change."""
    path = os.path.join(cache_dir, f"{name}.npz")
    if os.path.isfile(path):
        logging.info("reference statistics: reading %s", path)
        return FeatureStats.load(path)
    stats = FeatureStats.from_features(compute_features())
    stats.save(path)
    logging.info("reference statistics: wrote %s (%d images)", path, stats.features.shape[0])
    return stats


def compare(fake: FeatureStats, real: FeatureStats, k: int = 3) -> dict[str, float]:
    """{fid, precision, recall} of a generated set against a reference set."""
    precision, recall = precision_recall.precision_recall(real.features, fake.features, k)
    return dict(fid=metrics.frechet_distance(fake.mu, fake.sigma, real.mu, real.sigma),
                precision=precision, recall=recall)
