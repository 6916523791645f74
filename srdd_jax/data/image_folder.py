"""Image folders streamed through grain: files decoded when read, never the whole set in memory.

`FolderStream` lists `root/<class>/*` once (paths and labels) and reads images on demand:
- as `pipeline.Records`, training batches from the grain pipeline (`pipeline.Batches`: per-epoch
  permutation, per-process rows, resumable state, `workers` decoding processes), each image decoded
  with VAR's training transform: shorter side to round(1.125 * size), then a random crop (or the
  centre, `train_crop`), and a mirror when `flip`, drawn from the read's random stream.
- `head(n)`, `ordered(batch)`: the evaluation transform (centre crop), in file order, for
  reconstruction grids, evaluation, token caches and prepared shards.

Unreadable files are skipped and counted, never fatal (see `pipeline.fill_unreadable`).
"""

from __future__ import annotations

import concurrent.futures
import os

import numpy as np
from absl import logging

from srdd_jax import errors, image_files
from srdd_jax.data import pipeline, sources


def training_crop(train_crop: str, flip: bool, rng: np.random.Generator):
    """(crop_at, flip) of one training read: crop fractions drawn for 'random' (None: centre) and
    a mirror half the time when `flip`."""
    crop_at = tuple(rng.uniform(size=2)) if train_crop == "random" else None
    return crop_at, bool(flip and rng.uniform() < 0.5)


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


def facts(root: str) -> sources.DataFacts:
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
    return sources.DataFacts(3 if colour or not grey else 1, tuple(name for name, _ in groups),
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


class FolderStream(pipeline.ImageRecords):
    """The images of an image folder at `image_size` and `channels`, read on demand."""

    def __init__(self, root: str, image_size: int, channels: int, train_crop: str = "random",
                 flip: bool = False, workers: int = -1):
        self.groups = groups = folder_classes(root)  # [(class name, paths)]
        self.root, self.image_size, self.channels = root, image_size, channels
        self.train_crop, self.flip = train_crop, flip
        self.workers = pipeline.default_workers() if workers < 0 else workers
        self.files = [(path, label) for label, (_, paths) in enumerate(groups) for path in paths]
        self.class_names = tuple(name for name, _ in groups)
        self.num_examples = len(self.files)
        self.skipped: list[str] = []  # unreadable files met so far
        self.mode = "RGB" if channels == 3 else "L"
        self.where = f"the images under {root}"

    # ----------------------------------------------------------------------- evaluation reads
    def ordered(self, batch: int):
        """(uint8 (b, H, W, C) images, int32 (b,) labels) batches of the readable files in file
        order with the centre crop (`read_in_order`); unreadable files are skipped and
        counted in `skipped`."""
        images, labels = [], []
        for label, image in read_in_order(self.files, self.image_size, self.channels,
                                                  self.skipped, chunk=max(batch, 1)):
            images.append(image)
            labels.append(label)
            if len(images) == batch:
                yield np.stack(images), np.asarray(labels, np.int32)
                images, labels = [], []
        if images:
            yield np.stack(images), np.asarray(labels, np.int32)

    def head(self, n: int) -> np.ndarray:
        """The first n readable images, float32 (n, H, W, C) in [-1, 1], centre-cropped."""
        images, _ = next(self.ordered(max(n, 1)))
        return pipeline.to_unit_range(images[:n])

    # ----------------------------------------------------------------------- training reads
    def read(self, index: int, rng: np.random.Generator) -> dict:
        """File `index` by the training transform: {'image': uint8 (H, W, C), 'label', 'ok'}."""
        path, label = self.files[index]
        crop_at, flip = training_crop(self.train_crop, self.flip, rng)
        try:
            return self.example(image_files.decode(path, self.mode, self.image_size, crop_at, flip),
                                label)
        except image_files.UnreadableImageError:
            return self.example(None, label)
