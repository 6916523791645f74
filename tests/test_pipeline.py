"""The one grain pipeline (data/pipeline.py) under every source: its documented order, resumable
state (also the pre-grain iterator's), token caches, TFDS ArrayRecord splits, and the errors of a
worker that dies or a batch that is all unreadable."""

import json
import os

import numpy as np
import pytest

from srdd_jax import errors
from srdd_jax.data import pipeline, sources, tokens

N, CLASSES = 50, 10


def _source() -> sources.Source:
    rng = np.random.default_rng(0)
    return sources.Source(rng.integers(0, 256, (N, 4, 4, 1)).astype(np.uint8),
                          rng.integers(0, CLASSES, N).astype(np.int32), tuple("abcdefghij"))


def _documented_order(seed, global_batch, process_index, process_count, steps):
    """Record indices by the module docstring: epoch e's permutation default_rng([seed, e]),
    global batches of consecutive entries (the tail dropped), process p's rows p*b..(p+1)*b-1."""
    local, per_epoch = global_batch // process_count, N // global_batch
    out = []
    for step in range(steps):
        epoch, within = divmod(step, per_epoch)
        order = np.random.default_rng([seed, epoch]).permutation(N)
        start = within * global_batch + process_index * local
        out.append(order[start:start + local])
    return out


@pytest.mark.parametrize("process_count", [1, 2])
def test_in_memory_batches_follow_the_documented_order(process_count):
    """The order the in-memory iterator had before grain, so runs and their numbers are unchanged."""
    source = _source()
    for process in range(process_count):
        run = source.batches(8, 3, process, process_count)
        for want in _documented_order(3, 8, process, process_count, 15):
            batch = next(run)
            np.testing.assert_array_equal(batch["label"], source.labels[want])
            np.testing.assert_array_equal(batch["image"], pipeline.to_unit_range(source.images[want]))
    assert run.get_state() == {"step": 15}


def test_states_of_the_iterator_before_grain_resume_in_place():
    source = _source()
    resumed = source.batches(8, 3, 1, 2)
    resumed.set_state({"epoch": 2, "position": 16})  # 6 steps per epoch: step 14
    np.testing.assert_array_equal(next(resumed)["label"],
                                  source.labels[_documented_order(3, 8, 1, 2, 15)[14]])
    with pytest.raises(errors.IncompatibleCheckpointError, match="data state"):
        resumed.set_state({"next_index": 3})


def test_token_cache_batches_resume(tmp_path):
    rng = np.random.default_rng(1)
    cache_tokens = rng.integers(0, 4096, (N, 7)).astype(np.int16)
    directory = str(tmp_path / "cache")
    tokens.write_cache(directory, cache_tokens, rng.integers(0, 3, N),
                       {"tokenizer": {"vocab_size": 4096}, "class_names": ["x", "y", "z"]})
    cache = tokens.load_cache(directory)
    run = cache.batches(8, seed=4)
    batches = [next(run) for _ in range(10)]
    assert batches[0]["tokens"].dtype == np.int32 and batches[0]["tokens"].shape == (8, 7)
    again = cache.batches(8, seed=4)
    for _ in range(4):
        next(again)
    resumed = tokens.load_cache(directory).batches(8, seed=4)
    resumed.set_state(json.loads(json.dumps(again.get_state())))
    for want in batches[4:]:
        got = next(resumed)
        np.testing.assert_array_equal(got["tokens"], want["tokens"])
        np.testing.assert_array_equal(got["label"], want["label"])
    assert resumed.batch_spec() == {"tokens": ((8, 7), np.int32), "label": ((8,), np.int32)}


class _Failing:
    """Records whose read of record `bad` exits its process (a worker dying) or, with
    `unreadable`, whose every record is unreadable."""

    num_examples = 16

    def __init__(self, bad=-1, unreadable=False):
        self.bad, self.unreadable, self.skipped = bad, unreadable, []

    def read(self, index, rng):
        if index == self.bad:
            os._exit(3)
        return {"image": np.zeros((2, 2, 1), np.uint8), "label": np.int32(0),
                "ok": not self.unreadable}

    def example_spec(self):
        return {"image": ((2, 2, 1), np.float32), "label": ((), np.int32)}

    def finish(self, batch):
        return batch


def test_a_dead_worker_and_an_unreadable_batch_stop_with_one_error():
    dying = pipeline.Batches(_Failing(bad=5), 4, seed=0, workers=1, where="the test records")
    with pytest.raises(errors.DataReadError, match=r"a data worker failed reading the test "
                                                   r"records.*--config\.data\.workers=0"):
        for _ in range(8):
            next(dying)
    unreadable = pipeline.Batches(_Failing(unreadable=True), 4, seed=0, where="the test records")
    with pytest.raises(errors.DataReadError, match="a whole batch of the test records is unreadable"):
        next(unreadable)


def test_tfds_array_record_splits_read_through_grain(tmp_path):
    """A TFDS split stored as ArrayRecord is random-access: the grain pipeline reads it, with
    random crops, resumably, processes disjoint."""
    tfds = pytest.importorskip("tensorflow_datasets")
    from test_data_training import NUM_IMAGES, TinyImages

    from srdd_jax.data import tfds_source

    TinyImages(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
    del tfds
    stream = tfds_source.open_split("tiny_images", "train", 16, 3, str(tmp_path),
                                    train_crop="random")
    assert stream.random_access and stream.num_examples == NUM_IMAGES
    run = stream.batches(4, seed=2)
    assert isinstance(run, pipeline.Batches)
    batches, clean = [], []
    for _ in range(7):
        seen = len(stream.skipped)
        batches.append(next(run))
        clean.append(len(stream.skipped) == seen)
    assert not all(clean)  # the corrupt record, its slot filled from its batch
    again = stream.batches(4, seed=2)
    for _ in range(3):
        next(again)
    resumed = tfds_source.open_split("tiny_images", "train", 16, 3, str(tmp_path),
                                     train_crop="random", workers=1).batches(4, seed=2)
    resumed.set_state(again.get_state())
    for want in batches[3:]:
        np.testing.assert_array_equal(next(resumed)["image"], want["image"])
    halves = [stream.batches(4, 2, process_index=p, process_count=2) for p in range(2)]
    for want, whole in zip(batches, clean):
        parts = np.concatenate([next(h)["image"] for h in halves])
        if whole:  # (a filled slot takes a row of its process's part)
            np.testing.assert_array_equal(parts, want["image"])
    centre = tfds_source.open_split("tiny_images", "train", 16, 3, str(tmp_path)).batches(4, 2)
    assert not np.array_equal(next(centre)["image"], batches[0]["image"])
