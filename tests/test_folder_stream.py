"""Image folders streamed through grain (data/image_folder.py): disjoint per-process shards that
cover each epoch, resumable batches, random crops that change between epochs and images, the
evaluation transform unchanged, unreadable files skipped without moving batch boundaries."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from srdd_jax import errors
from srdd_jax.data import image_folder, loading, sources
from srdd_jax.data.image_folder import FolderStream
from srdd_jax.data.spec import DataSpec
from srdd_jax.models import ModelSpec
from srdd_jax.tokenizer.spec import TokenizerSpec

CLASSES, PER_CLASS, SIZE = 3, 8, 16
REPO_ROOT = Path(__file__).resolve().parents[1]


def _folder(root: Path) -> Path:
    """24 RGB images 20 x 24 px: red = 10 x image id (uniform), green = 10 x column (a ramp whose
    value at the crop's corner tells the crop's left edge)."""
    for c in range(CLASSES):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(PER_CLASS):
            pixels = np.zeros((20, 24, 3), np.uint8)
            pixels[..., 0] = 10 * (c * PER_CLASS + i)
            pixels[..., 1] = 10 * np.arange(24)[None]
            Image.fromarray(pixels).save(root / f"c{c}" / f"{i}.png")
    return root


def _ids(batch) -> list[int]:
    return np.round((batch["image"][:, 0, 0, 0] + 1) * 127.5 / 10).astype(int).tolist()


def test_processes_read_disjoint_shards_that_cover_every_epoch(tmp_path):
    stream = FolderStream(str(_folder(tmp_path)), SIZE, 3, train_crop="random", workers=0)
    iterators = [stream.batches(4, seed=5, process_index=p, process_count=2) for p in range(2)]
    steps = CLASSES * PER_CLASS // 4
    epochs = []
    for _ in range(2):  # two epochs: each one every image once, the second in another order
        epoch = []
        for _ in range(steps):
            parts = [_ids(next(it)) for it in iterators]
            assert not set(parts[0]) & set(parts[1])
            epoch.append(sorted(parts[0] + parts[1]))
        assert sorted(sum(epoch, [])) == list(range(CLASSES * PER_CLASS))
        epochs.append(epoch)
    assert epochs[0] != epochs[1]
    # one process reading the global batch gets, step by step, what the two read together
    single = stream.batches(4, seed=5)
    assert [sorted(_ids(next(single))) for _ in range(steps)] == epochs[0]


def test_a_resumed_iterator_reads_the_batches_the_uninterrupted_one_reads(tmp_path):
    stream = FolderStream(str(_folder(tmp_path)), SIZE, 3, train_crop="random", workers=0)
    run = stream.batches(4, seed=1)
    for _ in range(7):  # into the second epoch
        next(run)
    state = json.loads(json.dumps(run.get_state()))  # as saved with a checkpoint
    expected = [next(run) for _ in range(4)]
    resumed = FolderStream(str(tmp_path), SIZE, 3, train_crop="random", workers=0).batches(4, 1)
    resumed.set_state(state)
    for want in expected:
        got = next(resumed)
        np.testing.assert_array_equal(got["image"], want["image"])
        np.testing.assert_array_equal(got["label"], want["label"])


def test_random_crops_differ_between_epochs_and_images_and_the_centre_crop_is_unchanged(tmp_path):
    root = str(_folder(tmp_path))
    stream = FolderStream(root, SIZE, 3, train_crop="random", workers=0)
    run = stream.batches(CLASSES * PER_CLASS, seed=0)  # one batch = one epoch
    lefts = []
    for _ in range(2):
        batch = next(run)
        order = np.argsort(_ids(batch))
        lefts.append(batch["image"][order, 0, 0, 1])  # green at the corner: the crop's left edge
    assert len(set(np.round(lefts[0], 3))) > 1, "every image got the same crop"
    assert not np.array_equal(lefts[0], lefts[1]), "the second epoch repeated the first's crops"
    centre = FolderStream(root, SIZE, 3, train_crop="center", workers=0).batches(
        CLASSES * PER_CLASS, seed=0)
    assert len(set(np.round(next(centre)["image"][:, 0, 0, 1], 3))) == 1
    images, labels = next(stream.ordered(CLASSES * PER_CLASS))
    files = [f for _, paths in image_folder.folder_classes(root) for f in paths]
    np.testing.assert_array_equal(images, np.stack([image_folder.read_image(f, SIZE, 3) for f in files]))
    assert labels.tolist() == [c for c in range(CLASSES) for _ in range(PER_CLASS)]


def test_unreadable_files_are_counted_and_their_slots_filled_from_the_batch(tmp_path):
    root = _folder(tmp_path)
    (root / "c1" / "broken.png").write_bytes(b"not a png")
    stream = FolderStream(str(root), SIZE, 3, workers=0)
    run = stream.batches(CLASSES * PER_CLASS + 1, seed=0)
    batch = next(run)
    assert len(stream.skipped) == 1 and batch["image"].shape[0] == CLASSES * PER_CLASS + 1
    assert sorted(set(_ids(batch))) == list(range(CLASSES * PER_CLASS))
    images, _ = next(stream.ordered(100))
    assert len(images) == CLASSES * PER_CLASS and len(stream.skipped) == 2


def test_the_data_spec_picks_the_stream(tmp_path):
    root = str(_folder(tmp_path))
    spec = ModelSpec(patch_nums=(1, 2, 4), tokenizer=TokenizerSpec(ch=32, ch_mult=(1, 1, 2)))
    data = DataSpec(source="image_folder", root=root)
    assert isinstance(loading.load(data, spec), sources.Source)  # small: in memory
    for streamed in (dataclasses.replace(data, streaming="always"),
                     dataclasses.replace(data, train_crop="random"),
                     dataclasses.replace(data, max_in_memory_mb=0.01)):
        assert isinstance(loading.load(streamed, spec), FolderStream)
    with pytest.raises(ValueError, match="train_crop='random' .* needs the streamed folder"):
        DataSpec(source="image_folder", root=root, train_crop="random", streaming="never").validate()
    with pytest.raises(errors.ConfigError,
                       match=r"batch_size=64 exceeds the size of the images under .* \(24 examples\)"):
        FolderStream(root, SIZE, 3, workers=0).batches(64, 0)


@pytest.mark.slow
def test_training_streams_a_folder_with_random_crops_and_worker_processes(tmp_path):
    """The tiny image-folder config trains from the stream with one decoding process, and a rerun
    resumes from the checkpoint with the saved iterator state."""
    folder, workdir = _folder(tmp_path / "images"), tmp_path / "run"
    args = [sys.executable, "-m", "srdd_jax.main", "--config=configs/image_folder.py:tiny",
            f"--workdir={workdir}", f"--config.data.root={folder}", "--config.data.train_crop=random",
            "--config.data.workers=1"]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    run = subprocess.run(args, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "streaming 24 images" in run.stderr
    assert (workdir / "model" / "model_config.json").exists()
    again = subprocess.run(args + ["--config.training.steps=6"], cwd=REPO_ROOT, env=env,
                           capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "restore" in again.stderr


_TWO_PROCESS_READER = """
import json, sys
import jax
jax.distributed.initialize(sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))
import numpy as np
from srdd_jax.data import loading
from srdd_jax.data.image_folder import FolderStream
stream = FolderStream(sys.argv[3], 16, 3, train_crop="random", workers=0)
batches = loading.iterator(stream, 4, seed=2)  # this process's part, by jax.process_index()
ids = [np.round((next(batches)["image"][:, 0, 0, 0] + 1) * 127.5 / 10).astype(int).tolist()
       for _ in range(12)]
json.dump({"process": jax.process_index(), "ids": ids}, open(sys.argv[4], "w"))
"""


@pytest.mark.slow
def test_two_jax_processes_read_disjoint_parts_that_cover_each_epoch(tmp_path):
    import socket

    root = _folder(tmp_path / "images")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo")
    runs = [subprocess.Popen([sys.executable, "-c", _TWO_PROCESS_READER, f"127.0.0.1:{port}",
                              str(p), str(root), str(tmp_path / f"ids{p}.json")], cwd=REPO_ROOT,
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for p in range(2)]
    for run in runs:
        assert run.wait(timeout=300) == 0, run.stdout.read()[-3000:]
    parts = [json.loads((tmp_path / f"ids{p}.json").read_text())["ids"] for p in range(2)]
    steps = CLASSES * PER_CLASS // 4
    for epoch in range(2):
        seen = []
        for step in range(epoch * steps, (epoch + 1) * steps):
            assert not set(parts[0][step]) & set(parts[1][step])
            seen += parts[0][step] + parts[1][step]
        assert sorted(seen) == list(range(CLASSES * PER_CLASS))
