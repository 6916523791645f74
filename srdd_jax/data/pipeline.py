"""Deterministic, resumable batches from an in-memory `Source`.

Every epoch is a permutation drawn from (seed, epoch); a global batch is the next `global_batch`
indices of it (the incomplete tail of an epoch is dropped) and each process takes its slice.
The iterator's state is two integers, saved with checkpoints, so a resumed run sees exactly the
batches the uninterrupted run would have seen. `make_iterator` also serves sources that bring their
own iterator with the same interface (streamed TFDS splits, cached tokens).
"""

from __future__ import annotations

import numpy as np

from srdd_jax import errors
from srdd_jax.data.sources import Source


def local_batch(global_batch: int, process_count: int) -> int:
    """This process's part of a global batch; errors.ConfigError unless the processes share it
    evenly."""
    if global_batch % process_count:
        raise errors.ConfigError(f"batch_size={global_batch} must be divisible by the {process_count} "
                                 "processes")
    return global_batch // process_count


def batch_spec(global_batch: int, image_shape_HWC) -> dict:
    """Global batch shapes and dtypes: {'image': ((B, H, W, C), float32), 'label': ((B,), int32)}."""
    return {"image": ((global_batch, *image_shape_HWC), np.float32),
            "label": ((global_batch,), np.int32)}


class BatchIterator:
    """Yields {'image': float32 (b, H, W, C) in [-1, 1], 'label': int32 (b,)} for this process."""

    def __init__(self, source: Source, global_batch: int, seed: int, process_index: int = 0,
                 process_count: int = 1):
        self.local_batch = local_batch(global_batch, process_count)
        if global_batch > len(source.labels):
            raise errors.ConfigError(f"batch_size={global_batch} exceeds the dataset's {len(source.labels)} "
                             "images: lower batch_size")
        self.source = source
        self.global_batch = global_batch
        self.seed = seed
        self.offset = process_index * self.local_batch
        self.epoch, self.position = 0, 0
        self._order = self._permutation(0)

    @property
    def steps_per_epoch(self) -> int:
        return len(self.source.labels) // self.global_batch

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.source.labels))

    def batch_spec(self) -> dict:
        """Global batch shapes and dtypes: {'image': ((B, H, W, C), float32), 'label': ((B,), int32)}."""
        return batch_spec(self.global_batch, self.source.images.shape[1:])

    def get_state(self) -> dict:
        return {"epoch": int(self.epoch), "position": int(self.position)}

    def set_state(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order = self._permutation(self.epoch)

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self.position + self.global_batch > len(self._order):
            self.epoch, self.position = self.epoch + 1, 0
            self._order = self._permutation(self.epoch)
        start = self.position + self.offset
        indices = self._order[start:start + self.local_batch]
        self.position += self.global_batch
        return self._gather(indices)

    def _gather(self, indices: np.ndarray) -> dict:
        images = self.source.images[indices].astype(np.float32) / 127.5 - 1.0
        return {"image": images, "label": self.source.labels[indices]}


def make_iterator(source, global_batch: int, seed: int, process_index: int = 0,
                  process_count: int = 1):
    """BatchIterator for an in-memory Source, else the source's own resumable iterator."""
    if isinstance(source, Source):
        return BatchIterator(source, global_batch, seed, process_index, process_count)
    return source.batches(global_batch, seed, process_index, process_count)
