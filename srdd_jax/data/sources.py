"""Image sources held in memory as uint8 arrays: Fashion-MNIST (the embedded default) and folders.

Each loader returns `Source(images_NHWC uint8, labels_N int32, class_names, skipped)`. Images are
already at the model's resolution and channel count. `DataFacts` (channels and class names) can be
read before loading, so a model that disagrees with the data is refused at start-up.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import gzip
import os

import numpy as np
from absl import logging
from PIL import Image

from srdd_jax import errors, image_files
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
class Source:
    images: np.ndarray  # (N, H, W, C) uint8
    labels: np.ndarray  # (N,) int32
    class_names: tuple[str, ...]
    skipped: list[str] = dataclasses.field(default_factory=list)  # unreadable files

    @property
    def num_examples(self) -> int:
        return len(self.labels)

    def head(self, n: int) -> np.ndarray:
        """The first n images, float32 (n, H, W, C) in [-1, 1]."""
        return self.images[:n].astype(np.float32) / 127.5 - 1.0

    def ordered(self, batch: int):
        """All images in order: yields (images uint8 (b, H, W, C), labels (b,)), b <= batch."""
        for start in range(0, self.num_examples, batch):
            yield self.images[start:start + batch], self.labels[start:start + batch]


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


def read_image(path, image_size: int, channels: int) -> np.ndarray:
    """A file path or object -> (size, size, channels) uint8 by VAR's evaluation transform
    (`image_files.decode`); raises image_files.UnreadableImageError."""
    return image_files.decode(path, "RGB" if channels == 3 else "L", image_size)


def folder_classes(root: str) -> list[tuple[str, list[str]]]:
    """[(class name, image paths)] of `root/<class>/*` in sorted order (hidden folders skipped);
    a root without sub-folders is one class named after it. Files are taken by extension.

    Raises FileNotFoundError for a missing root and ValueError for a class folder without images
    directly inside it (nested folders are not read).
    """
    if not root:
        raise errors.MissingFileError("config.data.root is empty: point it at your images, "
                                "--config.data.root=DIR (DIR/<class>/*.png|jpg, or a flat folder "
                                "of one class)")
    if not os.path.isdir(root):
        raise errors.MissingFileError(f"image folder {root} does not exist (data.root)")

    class_dirs = sorted(d for d in os.listdir(root)
                        if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    if not class_dirs:
        return [(os.path.basename(os.path.normpath(root)), image_files.list_images(root))]
    loose = image_files.list_images(root)
    if loose:
        logging.warning("%d images directly in %s are not read: it has class folders (%s, ...), and "
                        "only their images are", len(loose), root, class_dirs[0])
    groups = [(name, image_files.list_images(os.path.join(root, name))) for name in class_dirs]
    empty = [name for name, files in groups if not files]
    if empty:
        raise errors.ConfigError(f"class folders without images under {root}: {', '.join(empty)}. Each "
                         "class is root/<class>/ with the images directly inside (nested folders "
                         "are not read): flatten them, or move those folders out")
    return groups


def image_folder_facts(root: str) -> DataFacts:
    """Channels and classes of `root` from the image headers: 3 if any image is in colour, else 1.
    Unreadable files are left to the loader, which skips and counts them."""
    groups = folder_classes(root)
    grey = colour = 0
    for _, files in groups:
        for path in files:
            grey_image = image_files.is_grey(path)
            grey += grey_image is True
            colour += grey_image is False
    if grey and colour:
        logging.info("%s: %d greyscale images among %d colour ones; they are read as RGB", root,
                     grey, colour)
    return DataFacts(3 if colour or not grey else 1, tuple(name for name, _ in groups),
                     f"the images under {root}")


def read_in_order(files, image_size: int, channels: int, skipped: list[str], chunk: int = 256):
    """Yields (label, uint8 (size, size, channels) image) for each readable file of `files`
    ((path, label) pairs) in their order, by the evaluation transform, decoded by one thread per
    CPU core (PIL decodes without the GIL) `chunk` files at a time, so memory stays bounded.
    Unreadable files are appended to `skipped` and logged, never fatal."""

    def read(path):
        try:
            return read_image(path, image_size, channels)
        except image_files.UnreadableImageError as err:
            return err

    with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
        for start in range(0, len(files), chunk):
            part = files[start:start + chunk]
            for (path, label), image in zip(part, pool.map(read, (p for p, _ in part))):
                if isinstance(image, Exception):
                    skipped.append(path)
                    logging.warning("skipping unreadable image %s: %s", path, image)
                else:
                    yield label, image


def image_folder(root: str, image_size: int, channels: int, groups=None) -> Source:
    """Images in `root/<class name>/*` (FFHQ/AFHQ/MiniImageNet layouts; a flat folder is one class),
    read by one thread per CPU core (`read_in_order`), with a progress line. `groups`: the
    folder's `folder_classes` when already listed.

    Unreadable or corrupt files are skipped, counted and logged, never fatal.
    """
    groups = groups if groups is not None else folder_classes(root)
    files = [(path, label) for label, (_, paths) in enumerate(groups) for path in paths]
    images, labels, skipped = [], [], []
    progress = Progress(f"reading {root}", len(files), "images")
    for label, image in read_in_order(files, image_size, channels, skipped):
        images.append(image)
        labels.append(label)
        progress.update(len(images) + len(skipped))
    if not images:
        raise errors.ConfigError(f"no readable images under {root} ({len(skipped)} unreadable)")
    if skipped:
        logging.warning("skipped %d unreadable images under %s", len(skipped), root)
    return Source(np.stack(images), np.asarray(labels, np.int32),
                  tuple(name for name, _ in groups), skipped)
