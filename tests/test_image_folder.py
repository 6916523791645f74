"""Your own images: channels and classes read from the folder (configs/image_folder.py), configs
that disagree with their data refused at start-up, and sample grids labelled with class names."""

import json
import subprocess
import sys

import numpy as np
import orbax.checkpoint
import pytest
from conftest import REPO_ROOT, cli_env, info_lines_from
from PIL import Image

from srdd_jax import experiment_config, image_grids, scales
from srdd_jax.data import image_folder, model_for_data, sources
from srdd_jax.modes import specs

CLASSES = ("apple", "grass", "sky")
COLOURS = ((200, 30, 30), (40, 180, 50), (40, 90, 220))


def _rgb_folder(root, per_class: int = 8):
    """root/<class>/*.png: a square of the class's colour on white, at random places and sizes."""
    rng = np.random.default_rng(0)
    for name, colour in zip(CLASSES, COLOURS):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.full((30, 26, 3), 255, np.uint8)
            y, x, side = *rng.integers(0, 12, 2), rng.integers(8, 14)
            pixels[y:y + side, x:x + side] = colour
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def _main(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "srdd_jax.main", *args], cwd=REPO_ROOT, env=cli_env(),
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_image_folder_config_trains_on_an_rgb_folder(tmp_path):
    folder, workdir = _rgb_folder(tmp_path / "images"), tmp_path / "run"
    run = _main("--config=configs/image_folder.py:tiny", f"--workdir={workdir}",
                f"--config.data.root={folder}")
    assert run.returncode == 0, run.stderr[-3000:]
    model = json.loads((workdir / "model" / "model_config.json").read_text())
    assert model["tokenizer"]["in_channels"] == 3 and model["transformer"]["num_classes"] == 3
    assert tuple(model["class_names"]) == CLASSES
    assert "model from the data: 3 channels, 3 classes (apple, grass, sky)" in run.stderr
    assert info_lines_from(run.stderr, orbax.checkpoint) == []
    # The grid: RGB, one 16 px column per class under a band with the class names.
    with Image.open(workdir / "samples" / "step_0000004.png") as grid:
        assert grid.mode == "RGB"
        pixels = np.asarray(grid)
    per_class, size, pad = 2, 16, 2
    band = pixels.shape[0] - (per_class * (size + pad) - pad)
    assert pixels.shape[1] == len(CLASSES) * (size + pad) - pad and band > 0
    for column in range(len(CLASSES)):  # some dark text above every column
        assert pixels[:band, column * (size + pad):column * (size + pad) + size].min() < 100
    with np.load(workdir / "samples" / "step_0000004.npz") as samples:
        assert samples["arr_0"].shape == (per_class * len(CLASSES), size, size, 3)
        assert samples["labels"].tolist() == [0, 1, 2] * per_class


def test_demo_config_on_an_rgb_folder_stops_at_start_up(tmp_path):
    folder, workdir = _rgb_folder(tmp_path / "images"), tmp_path / "run"
    run = _main("--config=configs/demo.py:tiny", f"--workdir={workdir}",
                "--config.data.source=image_folder", f"--config.data.root={folder}")
    assert run.returncode != 0
    for text in (f"config.model.tokenizer.in_channels=1, but the images under {folder} are RGB "
                 "(3 channels)",
                 f"config.model.transformer.num_classes=10, but the images under {folder} have 3 "
                 "classes (apple, grass, sky)",
                 "Use configs/image_folder.py",
                 "--config.model.tokenizer.in_channels=3 --config.model.transformer.num_classes=3"):
        assert text in run.stderr, run.stderr[-3000:]
    assert not (workdir / "tokenizer").exists()  # stopped before training anything


def _save(path, mode, pixels, **params):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(pixels, np.uint8)).convert(mode).save(path, **params)


def test_folder_channels_are_read_from_the_image_headers(tmp_path):
    grey = np.tile(np.arange(0, 240, 10, dtype=np.uint8), (24, 1))
    _save(tmp_path / "a" / "grey.png", "L", grey)
    _save(tmp_path / "a" / "grey_alpha.png", "LA", grey)
    _save(tmp_path / "b" / "grey_palette.png", "P", grey)  # a palette of grey entries only
    assert image_folder.facts(str(tmp_path)).channels == 1
    colour = np.stack([grey, grey[::-1], grey], axis=-1)
    _save(tmp_path / "b" / "colour_palette.gif", "P", colour)
    facts = image_folder.facts(str(tmp_path))
    assert facts.channels == 3 and facts.class_names == ("a", "b")
    data = sources.in_memory(image_folder.FolderStream(str(tmp_path), 16, facts.channels), "the folder")
    assert data.images.shape == (4, 16, 16, 3)
    first = data.images[0].astype(int)  # a grey image read as RGB repeats its channel
    assert (first[..., 0] == first[..., 1]).all() and (first[..., 1] == first[..., 2]).all()


def test_transparent_pixels_are_laid_on_white(tmp_path):
    rgba = np.zeros((20, 20, 4), np.uint8)  # transparent black...
    rgba[5:15, 5:15] = (0, 0, 255, 255)  # ...around an opaque blue square
    Image.fromarray(rgba).save(tmp_path / "icon.png")
    pixels = image_folder.read_image(str(tmp_path / "icon.png"), 16, 3)
    assert (pixels[0, 0] == 255).all() and tuple(pixels[8, 8]) == (0, 0, 255)


def test_folder_layouts(tmp_path):
    _save(tmp_path / "flat" / "0.png", "RGB", np.zeros((8, 8, 3)))
    assert image_folder.facts(str(tmp_path / "flat")).class_names == ("flat",)
    _save(tmp_path / "nested" / "cats" / "0.png", "RGB", np.zeros((8, 8, 3)))
    _save(tmp_path / "nested" / "dogs" / "terriers" / "0.png", "RGB", np.zeros((8, 8, 3)))
    with pytest.raises(ValueError, match="without images under .*: dogs.*nested folders are not read"):
        image_folder.facts(str(tmp_path / "nested"))
    with pytest.raises(FileNotFoundError, match="config.data.root is empty"):
        image_folder.facts("")


def test_model_for_data_fits_or_names_each_disagreement():
    # 16 px, downsampling 4
    demo = specs.model_spec(experiment_config.tiny_model(num_classes=10, in_channels=1))
    eleven = sources.DataFacts(3, tuple(f"c{i}" for i in range(11)), "the images under X")
    with pytest.raises(ValueError) as err:
        model_for_data.check(demo, eleven)
    assert ("config.model.tokenizer.in_channels=1, but the images under X are RGB" in str(err.value)
            and "config.model.transformer.num_classes=10, but the images under X have 11 classes "
                "(c0, c1, c2, c3, c4, c5, c6, c7, ...)" in str(err.value))
    with pytest.raises(ValueError, match=r"config.data.image_size=32, but the model makes 16 px"):
        model_for_data.check(demo, sources.DataFacts(1, tuple("abcdefghij"), "X"), image_size=32)
    fitted = model_for_data.fit(demo, eleven, image_size=64)
    assert (fitted.tokenizer.in_channels, fitted.transformer.num_classes) == (3, 11)
    assert tuple(fitted.class_names) == eleven.class_names
    assert tuple(fitted.patch_nums) == scales.pyramid(16) == (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
    assert demo.tokenizer.in_channels == 1  # the config given is not changed
    assert tuple(model_for_data.fit(demo, eleven).patch_nums) == tuple(demo.patch_nums)
    with pytest.raises(ValueError, match="data.image_size=30 is not a multiple of the tokenizer's "
                                         "downsampling 4"):
        model_for_data.fit(demo, eleven, image_size=30)


def test_grid_picture_writes_class_names_above_columns():
    images = np.zeros((4, 32, 32, 3), np.uint8)
    plain = image_grids.grid_picture(images, 2)
    labelled = image_grids.grid_picture(images, 2, ("cat", "a very long class name"))
    assert plain.size == (66, 66) and labelled.width == 66 and labelled.height > 66
    band = np.asarray(labelled)[:labelled.height - 66]
    assert band[:, :32].min() < 100 and band[:, 34:].min() < 100  # text above both columns
    assert (band[:, 32:34] == 255).all()  # the long name is cut at its column's edge

