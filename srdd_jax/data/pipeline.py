"""One resumable, per-process batch pipeline on grain for every source (https://github.com/google/grain).

A source is random-access `Records`: `num_examples`, `read(index, rng)` -> one example (a dict of
numpy arrays with 'label' and 'ok': False for an unreadable record) or, for sources read without
randomness, `read_many(indices)` -> the stacked examples of a batch at once; `example_spec()` and
`finish(batch)` (uint8 images to float32 in [-1, 1]). In-memory arrays, streamed image folders,
prepared ArrayRecord shards, TFDS splits stored as ArrayRecord and token caches all are; `Batches`
turns any of them into training batches, one grain element per batch:

- Order: epoch e is the permutation `default_rng([seed, e]).permutation(N)`; a global batch is the
  next `global_batch` entries of it (the incomplete tail of an epoch is dropped) and process p of P
  takes rows [p * b, (p + 1) * b) of it, b = global_batch / P. The processes thus read disjoint
  records that together make each global batch, and the order does not depend on P.
- Randomness of a read (the random crop) comes from (seed, global stream position), so it does not
  depend on the process count, the worker count or where a run was resumed.
- Reads run on threads of this process, or on `workers` grain worker processes (decoders); a
  worker that fails stops the run with one error that names the fix.
- State: {'step': global batches consumed}, JSON, saved with each checkpoint; a resumed run reads
  exactly the batches the uninterrupted run would have read. The state of the iterator that
  preceded grain ({'epoch', 'position'}) is read too.
- Unreadable records are counted; each one's slot is filled by a readable row of the same batch,
  so batch boundaries never depend on which records failed.
"""

from __future__ import annotations

import os
from typing import Protocol

import grain
import numpy as np
from absl import flags, logging

from srdd_jax import errors

RANDOM_STREAM = 1  # second key of a read's random stream: default_rng([seed, RANDOM_STREAM, position])


class Records(Protocol):
    """See the module docstring; a source defines `read` or `read_many`."""

    num_examples: int
    skipped: list

    def read(self, index: int, rng: np.random.Generator) -> dict: ...

    def example_spec(self) -> dict: ...

    def finish(self, batch: dict) -> dict: ...


class ImageRecords:
    """What the image sources share as `Records`: uint8 (size, size, C) examples and float32
    batches in [-1, 1]. A subclass sets image_size, channels, skipped and `workers` (decoding
    processes; 0: threads), names itself in `where`, and defines `read` (with `example`) or
    `read_many`."""

    workers = 0
    where = "the images"

    def example(self, image: np.ndarray | None, label) -> dict:
        """A read's example; an unreadable image (None) is zeros with 'ok' False."""
        if image is None:
            return {"image": np.zeros((self.image_size, self.image_size, self.channels), np.uint8),
                    "label": np.int32(label), "ok": False}
        return {"image": image, "label": np.int32(label), "ok": True}

    def example_spec(self) -> dict:
        return {"image": ((self.image_size, self.image_size, self.channels), np.float32),
                "label": ((), np.int32)}

    def finish(self, batch: dict) -> dict:
        return {"image": to_unit_range(batch["image"]), "label": batch["label"]}

    def batches(self, global_batch: int, seed: int, process_index: int = 0, process_count: int = 1):
        """This process's resumable training batches (`Batches`)."""
        return Batches(self, global_batch, seed, process_index, process_count, self.workers,
                       self.where)


def local_batch(global_batch: int, process_count: int) -> int:
    """This process's part of a global batch; errors.ConfigError unless the processes share it
    evenly."""
    if global_batch % process_count:
        raise errors.ConfigError(f"batch_size={global_batch} must be divisible by the {process_count} "
                                 "processes")
    return global_batch // process_count


def batch_spec(records, global_batch: int) -> dict:
    """Global batch shapes and dtypes of `records`: {field: ((B, ...), dtype)}."""
    return {name: ((global_batch, *shape), dtype)
            for name, (shape, dtype) in records.example_spec().items()}


def to_unit_range(images_uint8: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [-1, 1]."""
    return images_uint8.astype(np.float32) / 127.5 - 1.0


def default_workers() -> int:
    """Decoding processes when data.workers is -1: one per core beyond two, at most 16 (0: decode
    on threads of the training process, the choice on small machines)."""
    return max(0, min(16, (os.cpu_count() or 1) - 2))


class EpochOrder:
    """Which record each stream position reads: position g of the global stream is entry
    g mod (steps_per_epoch * B) of epoch g // (steps_per_epoch * B)'s permutation."""

    def __init__(self, num_examples: int, global_batch: int, seed: int):
        self.num_examples, self.seed = num_examples, seed
        self.per_epoch = (num_examples // global_batch) * global_batch
        self._epoch, self._permutation = -1, None

    def record(self, position: int) -> int:
        epoch, within = divmod(position, self.per_epoch)
        if epoch != self._epoch:  # one permutation held at a time (each worker has its own)
            self._permutation = np.random.default_rng([self.seed, epoch]).permutation(
                self.num_examples)
            self._epoch = epoch
        return int(self._permutation[within])


class _ProcessSteps:
    """Random access over this process's steps from `start_step` on: item i is step
    start_step + i (endless: epochs follow one another)."""

    def __init__(self, start_step: int):
        self.start_step = start_step

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, i: int) -> int:
        return self.start_step + i


class _ReadStep:
    """One step's rows of this process, stacked: positions step * B + p * b + (0 .. b-1) of the
    global stream, each read from its record with its own random stream, or all at once by
    `records.read_many(indices)` where a source has it (arrays in memory need no randomness).
    Picklable for worker processes."""

    def __init__(self, records: Records, order: EpochOrder, seed: int, global_batch: int,
                 local: int, process_index: int):
        self.records, self.order, self.seed = records, order, seed
        self.global_batch, self.local, self.process_index = global_batch, local, process_index

    def __call__(self, step: int) -> dict:
        first = step * self.global_batch + self.process_index * self.local
        positions = range(first, first + self.local)
        indices = np.asarray([self.order.record(p) for p in positions])
        if hasattr(self.records, "read_many"):
            return self.records.read_many(indices)
        rows = [self.records.read(int(i), np.random.default_rng([self.seed, RANDOM_STREAM, p]))
                for i, p in zip(indices, positions)]
        return {name: np.stack([row[name] for row in rows]) for name in rows[0]}


def fill_unreadable(batch: dict) -> dict:
    """A batch whose unreadable rows ('ok' False) are replaced by readable rows of the same batch,
    with the number replaced in 'unreadable'."""
    ok = np.asarray(batch.pop("ok"), bool)
    bad, good = np.flatnonzero(~ok), np.flatnonzero(ok)
    if len(bad) and len(good):
        donors = good[np.arange(len(bad)) % len(good)]
        batch = {name: value.copy() for name, value in batch.items()}
        for value in batch.values():
            value[bad] = value[donors]
    return dict(batch, unreadable=np.int32(len(bad)))


class Batches:
    """This process's training batches of `records` (see the module docstring): dicts of the
    records' fields with b = global_batch / process_count rows, after `records.finish`."""

    def __init__(self, records: Records, global_batch: int, seed: int, process_index: int = 0,
                 process_count: int = 1, workers: int = 0, where: str = "the data"):
        self.local_batch = local_batch(global_batch, process_count)
        if global_batch > records.num_examples:
            raise errors.ConfigError(f"batch_size={global_batch} exceeds the size of {where} "
                                     f"({records.num_examples} examples): lower batch_size")
        self.records, self.global_batch, self.seed = records, global_batch, seed
        self.process_index, self.workers, self.where = process_index, workers, where
        self.order = EpochOrder(records.num_examples, global_batch, seed)
        self.steps_per_epoch = records.num_examples // global_batch
        self.step, self._iterator = 0, None

    def batch_spec(self) -> dict:
        """Global batch shapes and dtypes: {field: ((B, ...), dtype)}."""
        return batch_spec(self.records, self.global_batch)

    def get_state(self) -> dict:
        return {"step": int(self.step)}

    def set_state(self, state: dict) -> None:
        if "step" in state:
            step = int(state["step"])
        elif {"epoch", "position"} <= set(state):  # the iterator before grain: same order
            step = int(state["epoch"]) * self.steps_per_epoch + int(state["position"]) // self.global_batch
        else:
            raise errors.IncompatibleCheckpointError(
                f"the checkpoint's data state {sorted(state)} is not one this version reads "
                "({'step'} or {'epoch', 'position'}): resume with the version that wrote it, or "
                "start the run again in a new workdir")
        self.step, self._iterator = step, None

    def _open(self):
        read = _ReadStep(self.records, self.order, self.seed, self.global_batch, self.local_batch,
                         self.process_index)
        dataset = grain.MapDataset.source(_ProcessSteps(self.step)).map(read).map(fill_unreadable)
        # Decoding processes read one batch each at a time; without them, threads of this
        # process do (one batch each), with as many batches ready as threads.
        threads = 0 if self.workers else min(16, os.cpu_count() or 1)
        iterable = dataset.to_iter_dataset(grain.ReadOptions(num_threads=threads,
                                                             prefetch_buffer_size=threads))
        if self.workers:
            if not flags.FLAGS.is_parsed():  # grain's workers read absl flags (main parses them)
                flags.FLAGS.mark_as_parsed()
            iterable = iterable.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.workers))
        return iter(iterable)

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self._iterator is None:
            self._iterator = self._open()
        try:
            batch = next(self._iterator)
        except RuntimeError as error:
            if not self.workers:
                raise
            raise errors.DataReadError(
                f"a data worker failed reading {self.where}: {errors.first_line(error)}. Rerun with "
                "--config.data.workers=0 to read in the training process and see the whole "
                "error") from error
        unreadable = int(batch.pop("unreadable"))
        if unreadable == self.local_batch:
            raise errors.DataReadError(f"a whole batch of {self.where} is unreadable (step "
                                       f"{self.step}): check the files, or the data path")
        if unreadable:
            self.records.skipped.extend([f"(step {self.step})"] * unreadable)
            logging.warning("%d unreadable examples in %s so far", len(self.records.skipped),
                            self.where)
        self.step += 1
        return self.records.finish(batch)
