"""Image folders streamed through grain: files decoded when read, never the whole set in memory.

`FolderStream` lists `root/<class>/*` once (paths and labels) and reads images on demand:
- `batches(...)`: training batches from a grain pipeline (https://github.com/google/grain):
  the file list shuffled per epoch from the seed (`MapDataset.shuffle` then `repeat`: every epoch
  is a new permutation), each image decoded with VAR's training transform (shorter side to
  round(1.125 * size), then a random crop, and a mirror when `flip`) from a random stream keyed by
  (seed, global position), and the global batch split among processes: process p of P takes
  positions p, p + P, ... of the stream, so at every step the processes read disjoint images that
  together make the global batch, whatever P is. Decoding runs on `workers` processes (0: threads of
  this process). The iterator's state (one position, or the workers' positions) is saved with each
  checkpoint, so a resumed run reads exactly the batches the uninterrupted run would have read.
- `head(n)`, `ordered(batch)`: the evaluation transform (centre crop), in file order, for
  reconstruction grids, evaluation and token caches.

Unreadable files are skipped and counted, never fatal: in a training batch each one's slot is
filled by a readable image of the same batch (as the TFDS stream does), so batch boundaries and
the resumable position never depend on which files failed.
"""

from __future__ import annotations

import os

import grain
import numpy as np
from absl import flags, logging

from srdd_jax import errors, image_files
from srdd_jax.data import pipeline, sources


def default_workers() -> int:
    """Decoding processes when data.workers is -1: one per core beyond two, at most 16 (0: decode
    on threads of the training process, the choice on small machines)."""
    return max(0, min(16, (os.cpu_count() or 1) - 2))


class FolderStream:
    """The images of an image folder at `image_size` and `channels`, read on demand."""

    def __init__(self, root: str, image_size: int, channels: int, train_crop: str = "random",
                 flip: bool = False, workers: int = -1):
        self.groups = groups = sources.folder_classes(root)  # [(class name, paths)]
        self.root, self.image_size, self.channels = root, image_size, channels
        self.train_crop, self.flip = train_crop, flip
        self.workers = default_workers() if workers < 0 else workers
        self.files = [(path, label) for label, (_, paths) in enumerate(groups) for path in paths]
        self.class_names = tuple(name for name, _ in groups)
        self.num_examples = len(self.files)
        self.skipped: list[str] = []  # unreadable files met so far
        self.mode = "RGB" if channels == 3 else "L"

    # ----------------------------------------------------------------------- evaluation reads
    def ordered(self, batch: int):
        """(uint8 (b, H, W, C) images, int32 (b,) labels) batches of the readable files in file
        order with the centre crop (`sources.read_in_order`); unreadable files are skipped and
        counted in `skipped`."""
        images, labels = [], []
        for label, image in sources.read_in_order(self.files, self.image_size, self.channels,
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
        return images[:n].astype(np.float32) / 127.5 - 1.0

    # ----------------------------------------------------------------------- training reads
    def training_example(self, file: tuple[str, int], rng: np.random.Generator) -> dict:
        """One file by the training transform: {'image': uint8 (H, W, C), 'label', 'ok'}."""
        path, label = file
        crop_at = tuple(rng.uniform(size=2)) if self.train_crop == "random" else None
        flip = bool(self.flip and rng.uniform() < 0.5)
        try:
            image = image_files.decode(path, self.mode, self.image_size, crop_at, flip)
            ok = True
        except image_files.UnreadableImageError:
            image, ok = np.zeros((self.image_size, self.image_size, self.channels), np.uint8), False
        return {"image": image, "label": np.int32(label), "ok": ok}

    def batches(self, global_batch: int, seed: int, process_index: int = 0, process_count: int = 1):
        return GrainBatches(self, global_batch, seed, process_index, process_count)


def fill_unreadable(batch: dict) -> dict:
    """A batch whose unreadable rows are replaced by readable rows of the same batch, with the
    number replaced in 'unreadable'."""
    ok = np.asarray(batch["ok"], bool)
    bad = np.flatnonzero(~ok)
    good = np.flatnonzero(ok)
    images, labels = batch["image"], batch["label"]
    if len(bad) and len(good):
        donors = good[np.arange(len(bad)) % len(good)]
        images, labels = images.copy(), labels.copy()
        images[bad], labels[bad] = images[donors], labels[donors]
    return {"image": images, "label": labels, "unreadable": np.int32(len(bad))}


class GrainBatches:
    """Resumable training batches of a `FolderStream` for one process, the `BatchIterator`
    interface: {'image': float32 (b, H, W, C) in [-1, 1], 'label': int32 (b,)} with
    b = global_batch / process_count; state: the grain iterator's."""

    def __init__(self, stream: FolderStream, global_batch: int, seed: int, process_index: int = 0,
                 process_count: int = 1):
        self.local_batch = pipeline.local_batch(global_batch, process_count)
        if global_batch > stream.num_examples:
            raise errors.ConfigError(f"batch_size={global_batch} exceeds the {stream.num_examples} "
                                     f"images under {stream.root}: lower batch_size")
        self.stream, self.global_batch = stream, global_batch
        dataset = (grain.MapDataset.source(stream.files).seed(seed).shuffle().repeat(None)
                   .random_map(stream.training_example)[process_index::process_count]
                   .batch(self.local_batch).map(fill_unreadable))
        threads = 0 if stream.workers else min(16, os.cpu_count() or 1)
        iterable = dataset.to_iter_dataset(grain.ReadOptions(num_threads=threads,
                                                             prefetch_buffer_size=2 * threads))
        if stream.workers:
            if not flags.FLAGS.is_parsed():  # grain's workers read absl flags (main parses them)
                flags.FLAGS.mark_as_parsed()
            iterable = iterable.mp_prefetch(grain.MultiprocessingOptions(
                num_workers=stream.workers))
        self._iterator = iter(iterable)

    def batch_spec(self) -> dict:
        """See `pipeline.batch_spec`."""
        size = self.stream.image_size
        return pipeline.batch_spec(self.global_batch, (size, size, self.stream.channels))

    def get_state(self) -> dict:
        return self._iterator.get_state()

    def set_state(self, state: dict) -> None:
        self._iterator.set_state(state)

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        batch = next(self._iterator)
        if batch["unreadable"]:
            self.stream.skipped.extend(["(a training read)"] * int(batch["unreadable"]))
            logging.warning("%d unreadable images under %s so far", len(self.stream.skipped),
                            self.stream.root)
        return {"image": batch["image"].astype(np.float32) / 127.5 - 1.0, "label": batch["label"]}
