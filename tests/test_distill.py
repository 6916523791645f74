"""Scale distillation: student init, consistency with subset sampling, training, config errors."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from srdd_jax import experiment, experiment_config, models, saved_models
from srdd_jax.data import loading, sources
from srdd_jax.modes import specs
from srdd_jax.sampling.sampler import Sampler
from srdd_jax.sampling.settings import SamplerSettings
from srdd_jax.training import distill, optimizer, steps
from srdd_jax.training.spec import OptimSpec, TrainSpec


def _teacher():
    spec = specs.model_spec(experiment_config.tiny_model())
    params = {which: jax.device_get(nn.unbox(models.Model(spec).init_params(jax.random.key(i), which)))
              for i, which in enumerate(("tokenizer", "transformer"))}
    return spec, params


def _student(spec, params, subset):
    ids = distill.subset_ids(spec.patch_nums, subset)
    student_spec = distill.student_spec(spec, subset)
    return student_spec, {"tokenizer": params["tokenizer"], "transformer":
                          distill.student_transformer_params(params["transformer"], spec.patch_nums, ids)}


def test_student_starts_as_the_teacher_sampled_on_the_subset():
    spec, params = _teacher()
    student_spec, student = _student(spec, params, (2, 4))  # drops the first scale: pos_start changes
    tr, st = params["transformer"], student["transformer"]
    np.testing.assert_array_equal(st["pos_embed"], tr["pos_embed"][1:])  # scales 1 (4) and 2 (16)
    np.testing.assert_array_equal(st["lvl_embed"]["embedding"], tr["lvl_embed"]["embedding"][[1, 2]])
    np.testing.assert_array_equal(st["pos_start"], np.repeat(tr["pos_start"], 4, axis=0))
    shapes = jax.tree.map(np.shape, nn.unbox(models.Model(student_spec).abstract_params("transformer")))
    assert jax.tree.map(np.shape, st) == shapes
    # (1, 2, 4) -> (2, 4) changes VAR's Phi choice for 2 scales, so this also checks the Phi view.
    settings = dict(greedy=True, cfg=1.5)
    labels = np.array([0, 3, 10])
    ref = Sampler(spec, SamplerSettings(scale_ids=(1, 2), **settings)).sample(params, labels,
                                                                             jax.random.key(0))
    out = Sampler(student_spec, SamplerSettings(**settings)).sample(student, labels, jax.random.key(0))
    np.testing.assert_array_equal(out["idx_BL"], ref["idx_BL"])
    np.testing.assert_allclose(out["f_hat_BhwC"], ref["f_hat_BhwC"], atol=1e-5)


def test_distill_step_lowers_the_loss():
    spec, params = _teacher()
    student_spec, student = _student(spec, params, (1, 4))
    rng = np.random.default_rng(0)
    batch = {"image": rng.uniform(-1, 1, (8, 16, 16, 1)).astype(np.float32),
             "label": np.arange(8, dtype=np.int32)}
    run = TrainSpec(steps=20, batch_size=8, optim=OptimSpec(base_lr=0.3, warmup_steps=0))
    tx, _ = optimizer.make_optimizer(run.optim, run.steps, run.batch_size)
    model = models.Model(student_spec)
    step = jax.jit(steps.make_transformer_step(model.transformer, model.tokenizer, tx))
    state = steps.TrainState(step=np.int32(0), params=student["transformer"],
                             opt_state=tx.init(student["transformer"]))
    losses = []
    for _ in range(6):
        state, metrics = step(state, student["tokenizer"], batch, jax.random.key(0))
        losses.append(float(metrics["loss"]))
        assert metrics["loss_per_scale"].shape == (2,)
    assert losses[-1] < losses[0] - 0.1, losses


@pytest.mark.parametrize("subset", [(1, 2), (4, 2), (1, 3, 4), ()])
def test_bad_subset_names_the_field(subset):
    cfg = experiment_config.base_config(experiment_config.tiny_model())
    cfg.mode, cfg.distill.patch_nums = "distill", subset
    cfg.training.batch_size = cfg.tokenizer_training.batch_size = cfg.distill.batch_size = 8
    with pytest.raises(ValueError, match=r"config\.distill\.patch_nums"):
        specs.parse(cfg)


def test_distill_mode_writes_a_samplable_student(tmp_path, monkeypatch):
    spec, params = _teacher()
    saved_models.save_model(str(tmp_path / "teacher"), params, spec)
    rng = np.random.default_rng(0)
    source = sources.Source(rng.integers(0, 256, (32, 16, 16, 1)).astype(np.uint8),
                            (np.arange(32) % 10).astype(np.int32), tuple("abcdefghij"))
    monkeypatch.setattr(loading, "load", lambda data, spec, split="": source)
    config = experiment_config.base_config(experiment_config.tiny_model())
    config.mode = "distill"
    config.distill.update(dict(teacher=str(tmp_path / "teacher"), patch_nums=(1, 4), steps=2,
                               batch_size=8, log_every=1, checkpoint_every=2))
    config.sample.per_class, config.sample.batch_size = 1, 8  # 8 host devices
    workdir = tmp_path / "run"
    experiment.run(config, str(workdir))
    student, student_cfg = saved_models.load_model(str(workdir / "student"))
    assert student_cfg.patch_nums == (1, 4) and student_cfg.tokenizer_patch_nums == (1, 2, 4)
    assert student["transformer"]["pos_embed"].shape[0] == 17
    assert (workdir / "samples" / "student.png").is_file() and (workdir / "distill").is_dir()
    config.mode, config.init.model = "sample", str(workdir / "student")
    config.model = experiment_config.tiny_model()
    experiment.run(config, str(workdir))
    assert np.load(workdir / "samples" / "samples.npz")["idx"].shape == (10, 17)
