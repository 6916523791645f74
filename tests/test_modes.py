"""Modes through `main` on the tiny demo model: what each mode records in a workdir, sampling-time
overrides, and batches that do not divide the devices."""

import json
import subprocess
import sys

import numpy as np
from conftest import REPO_ROOT, cli_env

MAIN = [sys.executable, "-m", "srdd_jax.main", "--config=configs/demo.py:tiny"]


def _main(*flags, env=None):
    return subprocess.run(MAIN + list(flags), cwd=REPO_ROOT, env=env or cli_env(), capture_output=True,
                          text=True, timeout=900)


def _demo_sized_model(directory):
    """configs/demo.py's model with random weights whose attention matters from the start
    (AdaLN gammas of 1 instead of VAR's 1e-5), saved as a model directory."""
    import importlib.util

    import flax.linen as nn
    import jax

    from srdd_jax import models, saved_models
    from srdd_jax.modes import specs

    found = importlib.util.spec_from_file_location("demo", REPO_ROOT / "configs" / "demo.py")
    module = importlib.util.module_from_spec(found)
    found.loader.exec_module(module)
    spec = specs.model_spec(module.get_config().model).with_transformer(init_adaln_gamma=1.0)
    params = {w: jax.device_get(nn.unbox(models.Model(spec).init_params(jax.random.key(i), w)))
              for i, w in enumerate(("tokenizer", "transformer"))}
    saved_models.save_model(str(directory), params, spec)
    return directory


def test_sampling_modes_leave_the_training_record_and_honour_the_mask(tiny_demo_workdir, tmp_path):
    workdir = tiny_demo_workdir
    training_record = (workdir / "config.json").read_bytes()
    assert json.loads(training_record)["mode"] == "train"
    as_var = _main(f"--workdir={workdir}", "--config.mode=sample", "--config.model.transformer.mask=var")
    assert as_var.returncode == 0, as_var.stderr[-3000:]
    assert (workdir / "config.json").read_bytes() == training_record
    recorded = json.loads((workdir / "config_sample.json").read_text())
    assert recorded["mode"] == "sample" and recorded["model"]["transformer"]["mask"] == "var"

    model = _demo_sized_model(tmp_path / "demo_model")
    tokens = {}
    for mask in ("var", "markov"):
        run = tmp_path / mask
        done = subprocess.run([sys.executable, "-m", "srdd_jax.main", "--config=configs/demo.py",
                               f"--workdir={run}", "--config.mode=sample", f"--config.init.model={model}",
                               "--config.sample.per_class=2", f"--config.model.transformer.mask={mask}"],
                              cwd=REPO_ROOT, env=cli_env(), capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        assert json.loads((run / "config_sample.json").read_text())["model"]["transformer"]["mask"] == mask
        tokens[mask] = np.load(run / "samples" / "samples.npz")["idx"]
    assert tokens["var"].shape == tokens["markov"].shape
    assert (tokens["var"] != tokens["markov"]).mean() > 0.05  # same seed and labels: only the mask

    refused = _main(f"--workdir={tmp_path / 'deeper'}", "--config.mode=sample",
                    f"--config.init.model={workdir / 'model'}", "--config.model.transformer.depth=5")
    assert refused.returncode != 0
    assert "--config.model.transformer.depth=5 disagrees with the model" in refused.stderr
    assert not (tmp_path / "deeper" / "samples").exists()


def test_a_batch_of_ten_on_eight_devices_is_split_not_replicated(tiny_demo_workdir, tmp_path):
    env = dict(cli_env(), XLA_FLAGS="--xla_force_host_platform_device_count=8")
    done = _main(f"--workdir={tmp_path}", "--config.mode=sample",
                 f"--config.init.model={tiny_demo_workdir / 'model'}", "--config.sample.per_class=1",
                 "--config.sample.batch_size=10", "--config.mesh.data=8", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "JAX" in done.stderr and "on 8 devices" in done.stderr
    assert "batch 10 padded to 16 to split it over 8 devices" in done.stderr
    samples = np.load(tmp_path / "samples" / "samples.npz")
    assert samples["arr_0"].shape[0] == 10 and sorted(samples["labels"]) == list(range(10))
