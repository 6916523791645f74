"""LPIPS against a plain-torch implementation, weight loading, and the adversarial tokenizer step."""

import logging

import flax.linen as nn
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import torch
import torch.nn.functional as F
from test_training import Recorder, _synthetic_source, _validate

from srdd_jax import experiment_config, parallel
from srdd_jax.modes import specs
from srdd_jax.training import loop, perceptual, runs, steps, tokenizer_losses

CHANNELS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)


def _state_dict(seed=0) -> dict[str, np.ndarray]:
    """Random torchvision-vgg16 `features` + lpips `lin` weights, torch layouts."""
    rng = np.random.default_rng(seed)
    state, c_in = {}, 3
    for i, c in zip(sum(perceptual.VGG_SLICES, ()), CHANNELS):
        state[f"features.{i}.weight"] = (rng.standard_normal((c, c_in, 3, 3)) * np.sqrt(2 / (9 * c_in))
                                         ).astype(np.float32)
        state[f"features.{i}.bias"] = (0.1 * rng.standard_normal(c)).astype(np.float32)
        c_in = c
    for k, c in enumerate((64, 128, 256, 512, 512)):
        state[f"lin{k}.model.1.weight"] = rng.uniform(0, 0.1, (1, c, 1, 1)).astype(np.float32)
    return state


def _torch_lpips(state, x0, x1):
    """LPIPS in plain torch ops on NCHW tensors in [-1, 1]."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    total = 0
    feats = []
    for x in (x0, x1):
        h, outs = (x - shift) / scale, []
        for s, block in enumerate(perceptual.VGG_SLICES):
            if s:
                h = F.max_pool2d(h, 2, 2)
            for i in block:
                h = F.relu(F.conv2d(h, torch.from_numpy(state[f"features.{i}.weight"]),
                                    torch.from_numpy(state[f"features.{i}.bias"]), padding=1))
            outs.append(h)
        feats.append(outs)
    for k, (a, b) in enumerate(zip(*feats)):
        a = a / (torch.sqrt(torch.sum(a ** 2, dim=1, keepdim=True)) + 1e-10)
        b = b / (torch.sqrt(torch.sum(b ** 2, dim=1, keepdim=True)) + 1e-10)
        d = F.conv2d((a - b) ** 2, torch.from_numpy(state[f"lin{k}.model.1.weight"]))
        total = total + d.mean(dim=(2, 3), keepdim=True)
    return total.reshape(-1)


def test_lpips_matches_torch_and_loads_pth_and_npz(tmp_path):
    state = _state_dict()
    rng = np.random.default_rng(1)
    x0, x1 = (rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32) for _ in range(2))
    with torch.no_grad():
        want = _torch_lpips(state, torch.from_numpy(x0).permute(0, 3, 1, 2),
                            torch.from_numpy(x1).permute(0, 3, 1, 2)).numpy()
    torch.save({k: torch.from_numpy(v) for k, v in state.items() if k.startswith("features")},
               tmp_path / "vgg16.pth")
    torch.save({k: torch.from_numpy(v) for k, v in state.items() if k.startswith("lin")},
               tmp_path / "vgg.pth")
    np.savez(tmp_path / "lpips.npz", **state)
    for params in (perceptual.load_lpips(str(tmp_path / "vgg.pth"), str(tmp_path / "vgg16.pth")),
                   perceptual.load_lpips(str(tmp_path / "lpips.npz"))):
        got = np.asarray(jax.jit(perceptual.lpips)(params, x0, x1))
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert want.min() > 0.01  # a non-trivial distance
    np.testing.assert_allclose(perceptual.lpips(params, x0, x0), 0.0, atol=1e-6)
    with pytest.raises(ValueError, match="lin0.model.1.weight"):
        perceptual.load_lpips(str(tmp_path / "vgg16.pth"), str(tmp_path / "vgg16.pth"))


def _config(**tokenizer_training):
    cfg = experiment_config.base_config(experiment_config.tiny_model())
    run = cfg.tokenizer_training
    run.steps, run.batch_size, run.log_every, run.checkpoint_every = 3, 8, 1, 2
    run.optim.warmup_steps = run.disc_optim.warmup_steps = 1
    run.disc_channels, run.disc_layers = 16, 2
    run.update(tokenizer_training)
    return cfg


@pytest.mark.parametrize("field,value,message", [
    ("perceptual_weight", 0.1, r"lpips_weights=''.*vgg16-397923af\.pth"),
    ("adversarial_weight", -1.0, r"config\.tokenizer_training\.adversarial_weight=-1\.0"),
    ("disc_layers", 0, r"config\.tokenizer_training\.disc_channels=16 and disc_layers=0"),
])
def test_bad_tokenizer_loss_fields_are_named(field, value, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        _validate(_config(**{field: value}))


def _train(cfg, workdir, steps):
    cfg.tokenizer_training.steps = steps
    spec, run = specs.model_spec(cfg.model), specs.train_spec(cfg, "tokenizer_training")
    mesh = parallel.make_mesh(1, 1, jax.devices()[:1])
    boxed_init, tx, step, frozen = tokenizer_losses.build(spec, run)
    writer = Recorder()
    params = loop.train("tokenizer", run, str(workdir), mesh,
                        _synthetic_source().batches(run.batch_size, cfg.seed), boxed_init, tx,
                        step, cfg.seed, runs.tokenizer_context(spec), frozen=frozen,
                        frozen_shardings=jax.tree.map(lambda _: parallel.replicated(mesh), frozen),
                        writer=writer)
    return params, writer.scalars, boxed_init


def test_perceptual_term_in_the_step(tmp_path):
    np.savez(tmp_path / "lpips.npz", **_state_dict())
    cfg = _config(perceptual_weight=0.5, lpips_weights=str(tmp_path / "lpips.npz"))
    parsed = _validate(cfg)
    boxed_init, tx, step, frozen = tokenizer_losses.build(parsed.model, parsed.run("tokenizer_training"))
    state = jax.jit(steps.unboxed_init(boxed_init, tx))(jax.random.key(0))
    assert set(state.params) == {"tokenizer"}
    batch = next(_synthetic_source().batches(8, 0))
    state, metrics = jax.jit(step)(state, *frozen, batch, jax.random.key(1))
    assert float(metrics["perceptual"]) > 0 and int(state.step) == 1
    recon_only = float(metrics["recon_mse"]) + float(metrics["vq_loss"])
    assert float(metrics["loss"]) == pytest.approx(recon_only + 0.5 * float(metrics["perceptual"]),
                                                   rel=1e-5)


def test_adversarial_step_trains_the_discriminator_and_resumes(tmp_path, caplog):
    cfg = _config(adversarial_weight=0.1, adversarial_start=1)
    params, scalars, boxed_init = _train(cfg, tmp_path, 2)
    init = nn.unbox(jax.jit(boxed_init)(jax.random.split(jax.random.key(cfg.seed))[0]))
    changed = {name: not np.array_equal(init["discriminator"][name]["kernel"], layer["kernel"])
               for name, layer in params["discriminator"].items() if "kernel" in layer}
    assert len(changed) == 4 and all(changed.values()), changed  # (hinge: the last bias's gradient
    # is 0 while every logit lies in (-1, 1))
    assert scalars[1]["disc_loss"] == 0 and scalars[2]["disc_loss"] > 0  # adversarial_start=1
    for name in ("gen_adv", "disc_real", "disc_fake", "recon_mse"):
        assert np.isfinite(scalars[2][name]), name
    with ocp.StandardCheckpointer() as checkpointer:
        metadata = checkpointer.metadata(str(tmp_path / "tokenizer" / "2" / "state"))
    tree = metadata.item_metadata if hasattr(metadata, "item_metadata") else metadata
    assert set(tree["params"]) == {"tokenizer", "discriminator"}
    cfg.tokenizer_training.steps = 3  # the mode's entry point restores both and returns the tokenizer
    with caplog.at_level(logging.INFO):
        mesh = parallel.make_mesh(1, 1, jax.devices()[:1])
        tokenizer = runs.tokenizer_params(specs.model_spec(cfg.model),
                                          specs.train_spec(cfg, "tokenizer_training"), cfg.seed,
                                          str(tmp_path), mesh, _synthetic_source())
    assert "tokenizer: resumed from step 2" in caplog.text
    assert set(tokenizer) == set(params["tokenizer"])
    assert (tmp_path / "samples" / "tokenizer_reconstructions.png").is_file()
