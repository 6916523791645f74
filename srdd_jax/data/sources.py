"""Image sources held in memory as uint8 arrays: Fashion-MNIST (the embedded default), and any
stream small enough (`in_memory`: an image folder or TFDS split read once).

Each gives `Source(images_NHWC uint8, labels_N int32, class_names, skipped)`, images already at
the model's resolution and channel count, batched by the grain pipeline of `data/pipeline.py`.
`DataFacts` (channels and class names) can be read before loading, so a model that disagrees
with the data is refused at start-up.
"""

from __future__ import annotations

import dataclasses
import gzip
import os

import numpy as np
from absl import logging
from PIL import Image

from srdd_jax import errors
from srdd_jax.data import pipeline
from srdd_jax.progress import Progress

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ("t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                         "sneaker", "bag", "ankle boot")


@dataclasses.dataclass(frozen=True)
class DataFacts:
    """What a model must agree with: channels (1 grey, 3 RGB; None when unknown), the class names
    (one per label, in label order), and what the data is, for messages ("the images under DIR")."""

    channels: int | None
    class_names: tuple[str, ...]
    where: str


FASHION_MNIST_FACTS = DataFacts(1, FASHION_MNIST_CLASSES, "the Fashion-MNIST images")


def listed(class_names, at_most: int = 8) -> str:
    """`3 classes (a, b, c)`, with the names after the first `at_most` left out as `...`."""
    shown = ", ".join(class_names[:at_most]) + (", ..." if len(class_names) > at_most else "")
    return f"{len(class_names)} classes ({shown})"


@dataclasses.dataclass
class Source(pipeline.ImageRecords):
    """Images held in memory; as `pipeline.Records`, read by the same grain pipeline as streamed
    sources (threads only: the arrays are not copied to worker processes)."""

    images: np.ndarray  # (N, H, W, C) uint8
    labels: np.ndarray  # (N,) int32
    class_names: tuple[str, ...]
    skipped: list[str] = dataclasses.field(default_factory=list)  # unreadable files

    @property
    def num_examples(self) -> int:
        return len(self.labels)

    def head(self, n: int) -> np.ndarray:
        """The first n images, float32 (n, H, W, C) in [-1, 1]."""
        return pipeline.to_unit_range(self.images[:n])

    def ordered(self, batch: int):
        """All images in order: yields (images uint8 (b, H, W, C), labels (b,)), b <= batch."""
        for start in range(0, self.num_examples, batch):
            yield self.images[start:start + batch], self.labels[start:start + batch]

    @property
    def image_size(self) -> int:
        return self.images.shape[1]

    @property
    def channels(self) -> int:
        return self.images.shape[-1]

    def read_many(self, indices: np.ndarray) -> dict:
        """The rows `indices` at once (one gather)."""
        return {"image": self.images[indices], "label": self.labels[indices],
                "ok": np.ones(len(indices), bool)}


def _read_idx(path: str) -> np.ndarray:
    """Reads a gzipped IDX file (the MNIST format)."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def fit_square(images_NHWC: np.ndarray, size: int) -> np.ndarray:
    """Centre-pads (with the border value 0) or Lanczos-resizes square images to size x size."""
    n, h, w, c = images_NHWC.shape
    if h == size:
        return images_NHWC
    if h < size and (size - h) % 2 == 0:
        pad = (size - h) // 2
        return np.pad(images_NHWC, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    resized = [np.asarray(Image.fromarray(img[..., 0] if c == 1 else img).resize(
        (size, size), Image.LANCZOS)) for img in images_NHWC]
    return np.stack(resized).reshape(n, size, size, c)


def to_channels(images_NHWC: np.ndarray, channels: int) -> np.ndarray:
    have = images_NHWC.shape[-1]
    if have == channels:
        return images_NHWC
    if have == 1 and channels == 3:
        return np.repeat(images_NHWC, 3, axis=-1)
    if have == 3 and channels == 1:
        weights = np.array([0.299, 0.587, 0.114], np.float32)
        return np.rint(images_NHWC.astype(np.float32) @ weights)[..., None].astype(np.uint8)
    raise errors.ConfigError(f"cannot convert {have}-channel images to {channels} channels")


def fashion_mnist(split: str, image_size: int, channels: int, root: str = FASHION_MNIST_DIR) -> Source:
    """Fashion-MNIST from the Debian package `dataset-fashion-mnist` (70k 28x28 images, 10 classes)."""
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise errors.ConfigError(f"Fashion-MNIST split must be 'train' or 'test', got {split!r}")
    images_path = os.path.join(root, f"{prefix}-images-idx3-ubyte.gz")
    labels_path = os.path.join(root, f"{prefix}-labels-idx1-ubyte.gz")
    if not os.path.isfile(images_path) or not os.path.isfile(labels_path):
        raise errors.MissingFileError(
            f"Fashion-MNIST not found under {root}: install it with "
            "`sudo apt-get install dataset-fashion-mnist` (or set data.root)")
    images = _read_idx(images_path)[..., None]
    labels = _read_idx(labels_path).astype(np.int32)
    images = to_channels(fit_square(images, image_size), channels)
    return Source(images, labels, FASHION_MNIST_CLASSES)


def in_memory(stream, where: str) -> Source:
    """All readable images of a stream (its `ordered` reads: the evaluation transform) as an
    in-memory Source, with a progress line; errors.ConfigError when none is readable."""
    images, labels = [], []
    progress = Progress(f"reading {where}", stream.num_examples, "images")
    for batch_images, batch_labels in stream.ordered(1024):
        images.append(batch_images)
        labels.append(batch_labels)
        progress.update(sum(map(len, labels)) + len(stream.skipped))
    if not images:
        raise errors.ConfigError(f"no readable images in {where} ({len(stream.skipped)} unreadable)")
    if stream.skipped:
        logging.warning("skipped %d unreadable images in %s", len(stream.skipped), where)
    return Source(np.concatenate(images), np.concatenate(labels).astype(np.int32),
                  tuple(stream.class_names), list(stream.skipped))
