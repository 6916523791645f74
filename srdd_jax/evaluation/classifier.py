"""A small CNN classifier of the dataset's own images, for in-domain sample metrics.

Inception features describe 299 px natural photos; for 16 px Fashion-MNIST they say little. This
classifier is trained on the training split at the model's image size and channel count, and its
penultimate features (`features`, (N, F)) and `logits` ((N, K)) feed the in-domain Fréchet
distance, k-NN precision/recall and the class accuracy of conditional samples.

Training is deterministic given the seed (one batch order from numpy, Adam from optax). A trained
classifier is a directory: `params.npz` (flattened parameter paths) and `classifier.json` (image
size, channels, classes, width, steps, seed and the test accuracy); `load` refuses a directory
trained for another image size, channel count or number of classes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import traverse_util
from jax.sharding import Mesh

from srdd_jax import parallel
from srdd_jax.evaluation import features as features_lib
from srdd_jax.progress import Progress

PARAMS_FILE = "params.npz"
META_FILE = "classifier.json"


class CNN(nn.Module):
    """Two 3x3 conv + ReLU + 2x2 max-pool stages (width, 2*width channels), average pooling to a
    4x4 grid, a `4*width` ReLU feature layer and a linear head."""

    num_classes: int
    width: int = 16

    @nn.compact
    def __call__(self, images_BHWC: jax.Array) -> dict[str, jax.Array]:
        """uint8 (or [0, 255] float) (B, H, W, C) -> {features: (B, 4*width), logits: (B, K)}."""
        x = images_BHWC.astype(jnp.float32) / 127.5 - 1.0
        for stage, channels in enumerate((self.width, 2 * self.width)):
            x = nn.relu(nn.Conv(channels, (3, 3), name=f"conv{stage}")(x))
            x = nn.max_pool(x, (2, 2), (2, 2)) if min(x.shape[1:3]) >= 2 else x
        b, h, w, c = x.shape
        if h > 4 and w > 4 and h % 4 == 0 and w % 4 == 0:
            x = x.reshape(b, 4, h // 4, 4, w // 4, c).mean(axis=(2, 4))
        features = nn.relu(nn.Dense(4 * self.width, name="features")(x.reshape(b, -1)))
        return dict(features=features, logits=nn.Dense(self.num_classes, name="head")(features))


@dataclasses.dataclass
class Classifier:
    """A trained `CNN` with its metadata. Call it on uint8 (N, H, W, C) images."""

    params: dict
    image_size: int
    channels: int
    num_classes: int
    width: int
    test_accuracy: float
    steps: int = 0
    seed: int = 0

    def __post_init__(self):
        module = CNN(self.num_classes, self.width)
        self._apply = jax.jit(module.apply)
        self._placed = {}  # mesh -> params replicated over it

    @property
    def fingerprint(self) -> str:
        """12 hex digits identifying the parameters (names reference statistics caches)."""
        digest = hashlib.sha1()
        for path, value in sorted(traverse_util.flatten_dict(self.params, sep="/").items()):
            digest.update(path.encode())
            digest.update(np.ascontiguousarray(np.asarray(value, np.float32)).tobytes())
        return digest.hexdigest()[:12]

    def batch_fn(self, mesh: Mesh | None = None) -> features_lib.FeatureFn:
        """(B, H, W, C) uint8 -> {features: (B, F), logits: (B, K)}, for `extract_features`."""
        if mesh not in self._placed:
            self._placed[mesh] = (self.params if mesh is None else
                                  jax.device_put(self.params, parallel.replicated(mesh)))
        params = self._placed[mesh]
        return lambda images_BHWC: self._apply({"params": params}, images_BHWC)

    def __call__(self, images_NHWC: np.ndarray, batch_size: int = 256,
                 mesh: Mesh | None = None) -> dict[str, np.ndarray]:
        """{features: (N, F), logits: (N, K)} float32 numpy of uint8 (N, H, W, C) images."""
        if images_NHWC.shape[1:] != (self.image_size, self.image_size, self.channels):
            raise ValueError(f"the classifier takes ({self.image_size}, {self.image_size}, "
                             f"{self.channels}) images, got {images_NHWC.shape[1:]}")
        return features_lib.extract_features(self.batch_fn(mesh), images_NHWC, batch_size, mesh,
                                             name="classifier")

    def features(self, images_NHWC: np.ndarray, batch_size: int = 256,
                 mesh: Mesh | None = None) -> np.ndarray:
        """Penultimate features (N, F) of uint8 (N, H, W, C) images."""
        return self(images_NHWC, batch_size, mesh)["features"]

    def logits(self, images_NHWC: np.ndarray, batch_size: int = 256,
               mesh: Mesh | None = None) -> np.ndarray:
        """Class logits (N, K) of uint8 (N, H, W, C) images."""
        return self(images_NHWC, batch_size, mesh)["logits"]

    def accuracy(self, images_NHWC: np.ndarray, labels_N: np.ndarray, mesh: Mesh | None = None) -> float:
        """Fraction of images whose argmax class is their label."""
        return float(np.mean(np.argmax(self.logits(images_NHWC, mesh=mesh), -1) == labels_N))

    # ------------------------------------------------------------------------------ storage
    def save(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        flat = traverse_util.flatten_dict(jax.device_get(self.params), sep="/")
        tmp = os.path.join(directory, PARAMS_FILE + ".tmp.npz")
        np.savez(tmp, **{k: np.asarray(v) for k, v in flat.items()})
        os.replace(tmp, os.path.join(directory, PARAMS_FILE))
        meta = dict(image_size=self.image_size, channels=self.channels, num_classes=self.num_classes,
                    width=self.width, test_accuracy=self.test_accuracy, steps=self.steps, seed=self.seed)
        with open(os.path.join(directory, META_FILE), "w") as f:
            json.dump(meta, f, indent=1)


def exists(directory: str) -> bool:
    return os.path.isfile(os.path.join(directory, META_FILE))


def load(directory: str, image_size: int, channels: int, num_classes: int) -> Classifier:
    """The classifier saved in `directory`; ValueError if it was trained for other images/classes."""
    with open(os.path.join(directory, META_FILE)) as f:
        meta = json.load(f)
    expected = dict(image_size=image_size, channels=channels, num_classes=num_classes)
    found = {k: meta.get(k) for k in expected}
    if found != expected:
        raise ValueError(f"the classifier in {directory} was trained for {found} but this model needs "
                         f"{expected}: point config.evaluate.classifier_dir elsewhere or delete it")
    with np.load(os.path.join(directory, PARAMS_FILE)) as data:
        params = traverse_util.unflatten_dict({k: data[k] for k in data.files}, sep="/")
    return Classifier(params, **meta)


def train(train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray,
          test_labels: np.ndarray, num_classes: int, steps: int = 1500, batch_size: int = 128,
          learning_rate: float = 2e-3, width: int = 16, seed: int = 0) -> Classifier:
    """Trains a `CNN` with Adam (cosine-decayed learning rate) on uint8 (N, H, W, C) images and
    (N,) int labels for `steps` batches; reports its accuracy on the test images."""
    n, size, _, channels = train_images.shape
    if n < batch_size:
        batch_size = n
    model = CNN(num_classes, width)
    params = jax.jit(model.init)(jax.random.key(seed), train_images[:1])["params"]
    tx = optax.adam(optax.cosine_decay_schedule(learning_rate, steps, alpha=0.05))
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, images_BHWC, labels_B):
        def loss_fn(p):
            logits = model.apply({"params": p}, images_BHWC)["logits"]
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels_B).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    rng = np.random.default_rng(seed)
    order, position, start = rng.permutation(n), 0, time.time()
    progress = Progress("classifier", steps, "steps", step_prefix=True)
    for i in range(steps):
        if position + batch_size > n:
            order, position = rng.permutation(n), 0
        chosen = order[position:position + batch_size]
        position += batch_size
        params, opt_state, loss = step(params, opt_state, train_images[chosen], train_labels[chosen])
        if (i + 1) % 250 == 0 or i + 1 == steps:
            progress.update(i + 1, f"loss {float(loss):.4f}", force=True)
    trained = Classifier(jax.device_get(params), size, channels, num_classes, width, 0.0, steps, seed)
    trained.test_accuracy = trained.accuracy(test_images, test_labels)
    logging.info("classifier: test accuracy %.4f on %d images after %d steps (%.1fs)",
                 trained.test_accuracy, len(test_labels), steps, time.time() - start)
    return trained

