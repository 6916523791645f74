"""Prepared ArrayRecord shards (mode=prepare, data.source='shards'): they read exactly as the folder
they were made from, resume, split among processes, refuse what does not fit, and train."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from test_folder_stream import CLASSES, PER_CLASS, REPO_ROOT, SIZE, _folder, _ids

from srdd_jax import errors
from srdd_jax.data import loading, shards
from srdd_jax.data.image_folder import FolderStream
from srdd_jax.data.spec import DataSpec, PrepareSpec
from srdd_jax.models import ModelSpec
from srdd_jax.tokenizer.spec import TokenizerSpec


@pytest.fixture
def prepared(tmp_path):
    """(image folder, its shards: PNG, two records per shard file so reads cross files)."""
    root = str(_folder(tmp_path / "images"))
    directory = str(tmp_path / "shards")
    meta = shards.write(FolderStream(root, SIZE, 3, workers=0), directory,
                        PrepareSpec(records_per_shard=2 * PER_CLASS - 3))
    assert meta["num_examples"] == CLASSES * PER_CLASS and len(meta["shards"]) == 2
    return root, directory


def test_png_shards_read_exactly_as_their_folder(prepared):
    root, directory = prepared
    folder, stored = FolderStream(root, SIZE, 3, workers=0), shards.Shards(directory, SIZE, 3)
    (want, want_labels), (got, got_labels) = next(folder.ordered(100)), next(stored.ordered(100))
    np.testing.assert_array_equal(got, want)  # centre crop: evaluation, grids, token caches
    np.testing.assert_array_equal(got_labels, want_labels)
    for crop in ("center", "random"):  # training reads: same records, same crops
        a = FolderStream(root, SIZE, 3, train_crop=crop, workers=0).batches(4, seed=3)
        b = shards.Shards(directory, SIZE, 3, train_crop=crop, workers=0).batches(4, seed=3)
        for _ in range(8):  # crosses into the second epoch
            x, y = next(a), next(b)
            np.testing.assert_array_equal(x["image"], y["image"])
            np.testing.assert_array_equal(x["label"], y["label"])


def test_shards_resume_split_among_processes_and_decode_in_a_worker(prepared):
    _, directory = prepared
    stored = shards.Shards(directory, SIZE, 3, train_crop="random", workers=0)
    run = stored.batches(4, seed=1)
    batches = [next(run) for _ in range(9)]
    again = stored.batches(4, seed=1)
    for _ in range(4):
        next(again)
    resumed = shards.Shards(directory, SIZE, 3, train_crop="random", workers=1).batches(4, 1)
    resumed.set_state(json.loads(json.dumps(again.get_state())))  # as saved with a checkpoint
    for want in batches[4:]:
        np.testing.assert_array_equal(next(resumed)["image"], want["image"])
    halves = [stored.batches(4, seed=1, process_index=p, process_count=2) for p in range(2)]
    for want in batches[:7]:
        parts = [_ids(next(h)) for h in halves]
        assert not set(parts[0]) & set(parts[1]) and parts[0] + parts[1] == _ids(want)


def test_jpeg_shards_are_smaller_and_close(tmp_path, prepared):
    root, directory = prepared
    jpeg = str(tmp_path / "jpeg")
    shards.write(FolderStream(root, SIZE, 3, workers=0), jpeg, PrepareSpec(encoding="jpeg"))
    size = lambda d: sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))  # noqa: E731
    assert size(jpeg) < size(directory)
    exact, lossy = (next(shards.Shards(d, SIZE, 3).ordered(100))[0].astype(int)
                    for d in (directory, jpeg))
    assert np.abs(exact - lossy).mean() < 6


def test_shard_errors_name_the_field_and_the_fix(tmp_path, prepared):
    root, directory = prepared
    with pytest.raises(errors.MissingFileError, match=r"holds no prepared shards .*--config\.mode=prepare"):
        shards.Shards(str(tmp_path), SIZE, 3)
    with pytest.raises(errors.MissingFileError, match="config.data.root is empty"):
        shards.Shards("", SIZE, 3)
    with pytest.raises(errors.ConfigError, match=r"for 16 px, the model takes 3 channels at 32 px"):
        shards.Shards(directory, 32, 3)
    meta_path = os.path.join(directory, shards.META_FILE)
    meta = json.loads(open(meta_path).read())
    os.rename(os.path.join(directory, meta["shards"][1]["file"]), os.path.join(tmp_path, "moved"))
    with pytest.raises(errors.MissingFileError, match="lacks 1 of its shards"):
        shards.Shards(directory, SIZE, 3)
    json.dump(dict(meta, shards=[], num_examples=0), open(meta_path, "w"))
    with pytest.raises(errors.ConfigError, match="its shard list is empty"):
        shards.Shards(directory, SIZE, 3)
    with pytest.raises(ValueError, match=r"config\.prepare\.encoding='webp'"):
        PrepareSpec(encoding="webp").validate()


def test_unreadable_images_are_skipped_when_preparing(tmp_path):
    root = _folder(tmp_path / "images")
    (root / "c1" / "broken.png").write_bytes(b"not a png")
    meta = shards.write(FolderStream(str(root), SIZE, 3, workers=0), str(tmp_path / "s"),
                        PrepareSpec())
    assert meta["skipped"] == 1 and meta["skipped_files"][0].endswith("broken.png")
    assert meta["num_examples"] == CLASSES * PER_CLASS


@pytest.mark.parametrize("config,classes", [("ffhq", 1), ("afhq", 3), ("miniimagenet", 100),
                                            ("sun397", 397)])
def test_paper_configs_read_their_data_from_shards(tmp_path, config, classes):
    """Each folder-based paper config (tiny variant) takes its model and batches from shards."""
    from absl import flags
    from ml_collections import config_flags

    from srdd_jax.modes import model_resolver, specs

    root = tmp_path / "images"
    for c in range(classes):
        (root / f"k{c:03d}").mkdir(parents=True)
        for i in range(2):
            pixels = np.full((20, 20, 3), (7 * c + i) % 256, np.uint8)
            Image.fromarray(pixels).save(root / f"k{c:03d}/{i}.png")
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", flag_values=flag_values)
    flag_values(["test", f"--config={REPO_ROOT / 'configs' / config}.py:tiny"])
    cfg = flag_values.config
    size, _ = loading.image_shape(specs.model_spec(cfg.model))
    shards.write(FolderStream(str(root), size, 3, workers=0), str(tmp_path / "s"), PrepareSpec())
    cfg.data.update(dict(source="shards", root=str(tmp_path / "s")))
    parsed = specs.parse(cfg)
    model = model_resolver.for_training(parsed, cfg.model_from_data)
    assert model.class_names[-1] == f"k{classes - 1:03d}"
    batch = next(loading.iterator(loading.load(parsed.data, model), 2, seed=0))
    assert batch["image"].shape == (2, size, size, 3)


@pytest.mark.slow
def test_prepare_then_train_from_shards_through_main(tmp_path):
    """mode=prepare writes the tiny image-folder config's shards (a rerun reuses them, another
    preparation is refused), and training reads them with random crops in a worker process."""
    folder, workdir = _folder(tmp_path / "images"), tmp_path / "run"
    base = [sys.executable, "-m", "srdd_jax.main", "--config=configs/image_folder.py:tiny",
            f"--workdir={workdir}"]
    env = dict(os.environ, JAX_PLATFORMS="cpu")

    def main(*flags):
        return subprocess.run(base + list(flags), cwd=REPO_ROOT, env=env, capture_output=True,
                              text=True, timeout=900)

    prepare = ["--config.mode=prepare", f"--config.data.root={folder}"]
    first = main(*prepare)
    assert first.returncode == 0, first.stderr[-3000:]
    directory = workdir / "shards" / "train"
    assert json.loads((directory / "meta.json").read_text())["num_examples"] == CLASSES * PER_CLASS
    assert "nothing to do" in main(*prepare).stderr
    refused = main(*prepare, "--config.prepare.encoding=jpeg")
    assert refused.returncode == 1 and "already holds shards of another preparation" in refused.stderr
    train = main("--config.data.source=shards", f"--config.data.root={directory}",
                 "--config.data.train_crop=random", "--config.data.workers=1")
    assert train.returncode == 0, train.stderr[-3000:]
    assert "streaming" not in train.stderr and (workdir / "model" / "model_config.json").exists()


def test_the_data_spec_reads_shards(prepared):
    _, directory = prepared
    spec = ModelSpec(patch_nums=(1, 2, 4), tokenizer=TokenizerSpec(ch=32, ch_mult=(1, 1, 2)))
    data = DataSpec(source="shards", root=directory, workers=0)
    assert isinstance(loading.load(data, spec), shards.Shards)
    assert loading.facts(dataclasses.replace(data)).class_names == ("c0", "c1", "c2")
