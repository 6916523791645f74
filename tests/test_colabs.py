"""The Colab notebooks run top to bottom (papermill, this interpreter's kernel; the install line is
skipped): the sampling notebook from the pretrained name var_d16, served offline by a Hugging Face
Hub cache that holds the tiny reference (conftest.tiny_var_hub); the editing notebook on the tiny
demo checkpoint."""

import re

import jax
import nbformat
import numpy as np
import papermill
import pytest
from conftest import REPO_ROOT
from PIL import Image

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_model(tiny_demo_workdir):
    """DIR/model of `python -m srdd_jax.main --config=configs/demo.py:tiny --workdir=DIR`."""
    return tiny_demo_workdir / "model"


def _execute(tmp_path, monkeypatch, name: str, **parameters) -> nbformat.NotebookNode:
    """Runs a notebook in a fresh kernel, which shares this session's XLA compilation cache."""
    source = REPO_ROOT / "colabs" / name
    saved = nbformat.read(source, as_version=4)
    assert all(not cell.get("outputs") for cell in saved.cells), f"{name} is committed with outputs"
    out = tmp_path / name
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", jax.config.jax_compilation_cache_dir)
    papermill.execute_notebook(str(source), str(out), parameters=dict(INSTALL=False, **parameters),
                               kernel_name="python3", cwd=str(tmp_path), progress_bar=False)
    return nbformat.read(out, as_version=4)


def _outputs(notebook) -> tuple[str, int]:
    """(all printed text, number of displayed PNG images)."""
    text, images = [], 0
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            text.append(output.get("text", ""))
            images += "image/png" in output.get("data", {})
    return "".join(text), images


def test_sampling_notebook_from_a_pretrained_name(tiny_var_hub, converted, tmp_path, monkeypatch):
    for name, value in tiny_var_hub.items():  # read by the kernel's huggingface_hub and pretrained
        monkeypatch.setenv(name, value)
    num_classes = converted[0].transformer.num_classes
    classes = sorted({0, num_classes // 2, num_classes - 1})
    notebook = _execute(tmp_path, monkeypatch, "sampling_demo.ipynb", MODEL="var_d16",
                        MASK="markov", CLASSES=classes, PER_CLASS=1, CFG=2.0, TOP_K=32, TOP_P=0.9,
                        MR=True, MR_ITERATIONS=2, SPEED_BATCH=2, SPEED_REPEATS=1)
    quick = next(cell for cell in notebook.cells if "pretrained.load(MODEL)" in cell.source)
    code = [line for line in quick.source.splitlines() if line.strip() and not line.startswith("#")]
    assert len(code) <= 3, code  # install, import, load-sample-and-show
    assert any("image/png" in output.get("data", {}) for output in quick.outputs)
    text, images = _outputs(notebook)
    assert images == 2  # the quick grid, then the one with every setting
    assert "tokens redrawn by MR per scale" in text
    for mask in ("var", "markov"):
        assert re.search(rf"{mask} +[0-9.]+ images/s", text), text
    assert re.search(r"markov/var speed: [0-9.]+x", text), text


def test_editing_notebook(demo_model, tmp_path, monkeypatch):
    picture = tmp_path / "photo.png"  # a user image of another size and channel count
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 40, 3), np.uint8)).save(picture)
    notebook = _execute(tmp_path, monkeypatch, "zero_shot_editing.ipynb", MODEL=str(demo_model),
                        IMAGES=f"{picture}, {picture}", SAMPLES=1, LABEL=2)
    text, images = _outputs(notebook)
    assert images == 4  # the inputs, then one before/after grid per task
    for task in ("inpaint", "outpaint", "super_resolution"):
        assert f"{task}: original | input | 1 result(s)" in text
