"""srdd_jax.pretrained offline: a Hugging Face Hub cache holding the tiny reference under VAR's
released file names (conftest.tiny_var_hub), converted once, then loaded without torch."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import REPO_ROOT, cli_env

from srdd_jax import models, pretrained, saved_models

LOAD = ("from srdd_jax import pretrained; params, spec = pretrained.load('var_d16'); "
        "print('LOADED', spec.transformer.depth, spec.transformer.num_classes, tuple(spec.patch_nums))")
NO_TORCH = "import sys; sys.modules['torch'] = None; "  # `import torch` now raises ImportError


def _python(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=dict(cli_env(), **env),
                          capture_output=True, text=True, timeout=600)


def test_load_converts_once_then_needs_neither_torch_nor_the_hub(tiny_var_hub, converted, tmp_path):
    env = dict(tiny_var_hub, SRDD_JAX_CACHE=str(tmp_path / "cache"))
    first = _python(LOAD, env)
    assert first.returncode == 0, first.stderr[-3000:]
    depth, num_classes = converted[0].transformer.depth, converted[0].transformer.num_classes
    assert f"LOADED {depth} {num_classes} {tuple(converted[0].patch_nums)}" in first.stdout
    # The converted model in the cache equals the direct conversion of the same files.
    params, spec = saved_models.load_model(str(tmp_path / "cache" / "var_d16"))
    expected_spec, expected = converted
    assert json.dumps(spec.to_dict(), sort_keys=True) == json.dumps(expected_spec.to_dict(), sort_keys=True)
    jax.tree.map(lambda got, want: np.testing.assert_array_equal(np.asarray(got), want), params, expected)
    # Later loads: no torch, and an empty Hub cache; only the converted directory is read.
    (tmp_path / "empty_hub").mkdir()
    later = _python(NO_TORCH + LOAD, dict(env, HF_HUB_CACHE=str(tmp_path / "empty_hub")))
    assert later.returncode == 0, later.stderr[-3000:]
    assert f"LOADED {depth} {num_classes}" in later.stdout
    # Without the converted directory the same call must fail: it did need the hub and torch.
    failed = _python(NO_TORCH + LOAD, dict(env, HF_HUB_CACHE=str(tmp_path / "empty_hub"),
                                           SRDD_JAX_CACHE=str(tmp_path / "other")))
    assert failed.returncode != 0


def test_missing_files_offline_say_what_to_download_and_where(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty_hub"))
    with pytest.raises(FileNotFoundError) as err:
        pretrained.load("var_d20", cache=str(tmp_path / "cache"))
    message = str(err.value)
    for text in ("vae_ch160v4096z32.pth", "var_d20.pth", "HF_HUB_OFFLINE",
                 "https://huggingface.co/FoundationVision/var/resolve/main/var_d20.pth",
                 f"python -m srdd_jax.convert --vae=vae_ch160v4096z32.pth --var=var_d20.pth "
                 f"--out={tmp_path / 'cache' / 'var_d20'}", str(tmp_path / "empty_hub")):
        assert text in message, message
    assert not (tmp_path / "cache" / "var_d20").exists()


def test_unknown_names_list_the_released_ones(tmp_path):
    with pytest.raises(ValueError, match="var_d16, var_d20, var_d24, var_d30, var_d36"):
        pretrained.model_dir("var_d99")
    with pytest.raises(FileNotFoundError, match="'var_d61' is neither a released model name "
                                                r"\(var_d16, .*\) nor a model directory"):
        pretrained.load("var_d61")
    assert pretrained.resolve("models/mine") == "models/mine"  # not a name: a directory


def test_main_samples_a_pretrained_name(tiny_var_hub, converted, tmp_path):
    spec = converted[0]
    labels = [spec.transformer.num_classes // 2, spec.transformer.num_classes - 1]
    size = models.Model(spec).image_size
    workdir = tmp_path / "run"
    run = subprocess.run(
        [sys.executable, "-m", "srdd_jax.main", "--config=configs/var_imagenet.py:tiny",
         f"--workdir={workdir}", "--config.init.model=var_d16",
         f"--config.sample.labels=({labels[0]},{labels[1]})",
         "--config.sample.per_class=1", "--config.sample.batch_size=2"],
        cwd=REPO_ROOT, env=dict(cli_env(), **tiny_var_hub), capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    with np.load(workdir / "samples" / "samples.npz") as samples:
        assert samples["arr_0"].shape == (2, size, size, 3)
        assert samples["labels"].tolist() == labels
