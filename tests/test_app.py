"""The Gradio app (srdd_jax/app.py): its functions directly, bad inputs as page messages, and the
page itself started on a free port and driven by headless Chromium to a result image."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np
import pytest

from srdd_jax import app, experiment_config, models, saved_models
from srdd_jax.modes import specs

REPO_ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("SRDD_TEST_ARTIFACTS", REPO_ROOT / "test-artifacts"))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny random grey model (16 px, 10 classes) saved as a model directory."""
    spec = specs.model_spec(experiment_config.tiny_model())
    params = {which: nn.unbox(models.Model(spec).init_params(jax.random.key(i), which))
              for i, which in enumerate(("tokenizer", "transformer"))}
    directory = str(tmp_path_factory.mktemp("app") / "model")
    saved_models.save_model(directory, jax.device_get(params), spec)
    return directory


@pytest.fixture(scope="module")
def studio(model_dir):
    return app.Studio(model_dir)


def test_sample_grid_and_edits(studio):
    picture, message = studio.sample_grid("0, 3", per_class=2, seed=1, cfg=2.0, top_p=0.9,
                                          mr=True, mr_threshold=0.05, mr_iterations=2)
    assert picture.ndim in (2, 3) and picture.dtype == np.uint8 and "4 images in" in message
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3)).astype(np.uint8)
    painted = np.zeros((16, 16), bool)
    painted[4:12, 4:12] = True
    for task in ("inpaint", "outpaint", "super_resolution"):
        strip, message = studio.edit(image, painted, task, factor=2, label=3, samples=2, seed=0)
        assert strip is not None, message
        zoom = 128 // 16  # shown enlarged, nearest
        assert strip.shape == (16 * zoom, (3 * 16 + 2 * 2) * zoom) and f"{task}: 2 results in" in message
    # the strip's first tile is the input as the model sees it: black where inpainting generates
    strip, _ = studio.edit(image, painted, "inpaint", samples=1)
    assert strip[4 * 8:12 * 8, 4 * 8:12 * 8].max() == 0 and strip[:4 * 8, :16 * 8].max() > 0


def test_bad_inputs_give_a_message_not_a_traceback(studio):
    image = np.zeros((16, 16, 3), np.uint8)
    painted = np.ones((16, 16), bool)
    cases = [
        (studio.edit(np.zeros((20, 16, 3), np.uint8), painted), "is 16x20 px, the model takes 16x16"),
        (studio.edit(np.zeros((16, 16, 2), np.uint8), painted), "give a grey, RGB or RGBA image"),
        (studio.edit(image, np.zeros((16, 16), bool)), "nothing is painted"),
        (studio.edit(None, painted), "upload an image first"),
        (studio.edit(image, painted, label=12), "label 12: this model has classes 0..9"),
        (studio.sample_grid("0, 11"), "this model has classes 0..9"),
        (studio.sample_grid("one"), "give class numbers"),
        (studio.sample_grid("", top_p=2.0), "top_p"),
    ]
    for (result, message), expected in cases:
        assert result is None and message.startswith("**Error:**") and expected in message, message


def test_painted_pixels_read_the_editor_layers():
    layer = np.zeros((16, 16, 4), np.uint8)
    layer[2:5, 3:6, 3] = 255
    painted = app.painted_pixels({"background": np.zeros((16, 16, 3)), "layers": [layer]})
    assert painted.sum() == 9 and painted[2, 3]
    assert app.painted_pixels({"background": None, "layers": []}) is None


@pytest.mark.slow
def test_the_page_samples_in_a_headless_browser(model_dir):
    """Starts `python -m srdd_jax.app` on a free port, clicks Sample in headless Chromium (Debian's
    package) until the result image shows, and keeps a screenshot in test-artifacts/."""
    playwright = pytest.importorskip("playwright.sync_api")
    chromium = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser")
                     if os.path.exists(p)), None)
    if chromium is None:
        pytest.fail("Chromium is missing: apt-get install -y chromium (the README's test command "
                    "installs it)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, JAX_PLATFORMS="cpu", GRADIO_ANALYTICS_ENABLED="False")
    server = subprocess.Popen([sys.executable, "-m", "srdd_jax.app", f"--model={model_dir}",
                               f"--port={port}"], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert server.poll() is None, server.stdout.read()[-3000:]
            time.sleep(1)
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, headless=True,
                                        args=["--no-sandbox"])
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}", timeout=120_000)
            page.click("#sample-button")
            page.wait_for_selector("#sample-result img", timeout=300_000)
            page.wait_for_function(
                "document.querySelector('#sample-message').innerText.includes('images in')",
                timeout=60_000)
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "app_sample.png"), full_page=True)
            assert "images in" in page.inner_text("#sample-message")
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert (ARTIFACTS / "app_sample.png").stat().st_size > 1000
