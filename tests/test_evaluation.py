"""In-domain evaluation: the dataset classifier, held-out NLL, and the evaluate mode end to end."""

import json
import math
import os

import flax.linen as nn
import jax
import numpy as np
import pytest
from test_tokenizer_losses import _state_dict as random_lpips_weights

from srdd_jax import experiment, experiment_config, models, parallel, saved_models, scales
from srdd_jax.data import sources
from srdd_jax.evaluation import classifier, evaluate, features, likelihood
from srdd_jax.evaluation.spec import EDIT_TASKS
from srdd_jax.modes import specs
from srdd_jax.tokenizer.vqvae import VQVAE

pytestmark = pytest.mark.skipif(not os.path.isdir(sources.FASHION_MNIST_DIR),
                                reason="needs `apt-get install dataset-fashion-mnist`")


@pytest.fixture(scope="module")
def fmnist():
    """The Fashion-MNIST test split at 16 px (10k images): the first half trains, the rest tests."""
    return sources.fashion_mnist("test", 16, 1)


@pytest.fixture(scope="module")
def trained(fmnist):
    return classifier.train(fmnist.images[:5000], fmnist.labels[:5000], fmnist.images[5000:6000],
                            fmnist.labels[5000:6000], 10, steps=150, seed=0)


def test_classifier_beats_chance_and_is_deterministic(trained, fmnist):
    assert trained.test_accuracy > 0.6  # chance: 0.1
    feats = trained.features(fmnist.images[:8])
    assert feats.shape == (8, 4 * trained.width) and trained.logits(fmnist.images[:8]).shape == (8, 10)
    again = classifier.train(fmnist.images[:256], fmnist.labels[:256], fmnist.images[:64],
                             fmnist.labels[:64], 10, steps=3, seed=1)
    other = classifier.train(fmnist.images[:256], fmnist.labels[:256], fmnist.images[:64],
                             fmnist.labels[:64], 10, steps=3, seed=1)
    assert again.fingerprint == other.fingerprint


def test_cached_classifier_round_trip_and_mismatch_is_refused(trained, fmnist, tmp_path):
    trained.save(str(tmp_path))
    loaded = classifier.load(str(tmp_path), 16, 1, 10)
    assert loaded.fingerprint == trained.fingerprint and loaded.test_accuracy == trained.test_accuracy
    np.testing.assert_allclose(loaded.logits(fmnist.images[:16]), trained.logits(fmnist.images[:16]),
                               rtol=1e-5, atol=1e-5)
    for size, channels, classes in ((32, 1, 10), (16, 3, 10), (16, 1, 5)):
        with pytest.raises(ValueError, match="was trained for .* but this model needs"):
            classifier.load(str(tmp_path), size, channels, classes)


def test_in_domain_fid_real_vs_real_is_far_below_real_vs_noise(trained, fmnist):
    mesh = parallel.make_mesh()
    half_a = trained.features(fmnist.images[6000:8000], 200, mesh)
    half_b = trained.features(fmnist.images[8000:10000], 200, mesh)
    noise = np.random.default_rng(0).integers(0, 256, (2000, 16, 16, 1)).astype(np.uint8)
    real = features.FeatureStats.from_features(half_a)
    same = features.compare(features.FeatureStats.from_features(half_b), real)
    noisy = features.compare(features.FeatureStats.from_features(trained.features(noise)), real)
    assert same["fid"] < 0.05 * noisy["fid"]
    assert same["precision"] > 0.5 and noisy["precision"] < 0.1


def _random_model(mask):
    spec = specs.model_spec(experiment_config.tiny_model()).with_transformer(mask=mask)
    params = {which: nn.unbox(models.Model(spec).init_params(jax.random.key(i), which))
              for i, which in enumerate(("tokenizer", "transformer"))}
    return spec, jax.device_get(params)


@pytest.mark.parametrize("mask", ["markov", "var"])
def test_nll_matches_a_direct_cross_entropy(mask):
    spec, params = _random_model(mask)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 16, 16, 1)).astype(np.uint8)
    labels = rng.integers(0, 10, 12).astype(np.int32)
    nll = likelihood.Likelihood(spec, batch_size=8, mesh=parallel.make_mesh())  # 12 = 8 + 4 padded
    tok, tr = models.Model(spec).tokenizer, models.Model(spec).transformer

    @jax.jit
    def log_probs(params, x, cond):  # the whole batch at once, no mesh: (B, L) indices, (B, L, V)
        idx = tok.apply({"params": params["tokenizer"]}, x, method=VQVAE.encode_to_indices)
        x_in = tok.apply({"params": params["tokenizer"]}, idx, method=VQVAE.teacher_forcing_input)
        return idx, jax.nn.log_softmax(tr.apply({"params": params["transformer"]}, cond, x_in))

    counts = np.array([pn * pn for pn in spec.patch_nums])
    for unconditional in (False, True):
        got = nll.nll(params, images, labels, unconditional)
        cond = np.full(12, 10, np.int32) if unconditional else labels
        idx, logp = log_probs(params, images.astype(np.float32) / 127.5 - 1.0, cond)
        ce = -np.take_along_axis(np.asarray(logp, np.float64), np.asarray(idx)[..., None], -1)[..., 0]
        want = [piece.mean() / math.log(2) for piece in scales.split_scales(ce, spec.patch_nums)]
        np.testing.assert_allclose(got["bits_per_token_per_scale"], want, rtol=2e-5)
        total = np.dot(got["bits_per_token_per_scale"], counts) / counts.sum()
        assert got["bits_per_token"] == pytest.approx(total, rel=1e-6)
        assert got["bits_per_image"] == pytest.approx(total * counts.sum(), rel=1e-6)
        assert got["images"] == 12 and got["tokens_per_image"] == counts.sum()


def test_bad_evaluate_fields_are_named():
    cfg = experiment_config.base_config(experiment_config.tiny_model())
    for field, value, message in (("per_class", 0, "config.evaluate.per_class=0"),
                                  ("split", "val", "config.evaluate.split='val'"),
                                  ("pr_k", 50, "config.evaluate.pr_k=50")):
        bad = cfg.copy_and_resolve_references()
        bad.evaluate[field] = value
        if field == "pr_k":
            bad.evaluate.per_class = 2
        with pytest.raises(ValueError, match=message):
            specs.parse(bad)


def test_evaluate_mode_end_to_end(fmnist, tmp_path):
    config = experiment_config.base_config(experiment_config.tiny_model())
    experiment_config.tiny_evaluation(config)
    config.data.split = "test"  # classifier on 90 % of the test split: only that split is read
    config.evaluate.update(dict(per_class=2, batch_size=10, reference_images=300))
    config.sample.settings.cfg = 2.0
    np.savez(tmp_path / "lpips.npz", **random_lpips_weights())
    config.evaluate.edit.update(dict(tasks=EDIT_TASKS, images=12,
                                     lpips_weights=str(tmp_path / "lpips.npz")))
    spec, params = _random_model("markov")
    saved_models.save_model(str(tmp_path / "model"), params, spec)
    config.mode = "evaluate"
    experiment.run(config, str(tmp_path))
    with open(tmp_path / "evaluate" / "report.json") as f:
        report = json.load(f)
    # the editing evaluation: the tokenizer's reconstruction (the bound), then every task
    assert tuple(report["edit"]) == ("reconstruction",) + EDIT_TASKS
    for task, scores in report["edit"].items():
        regions = (("whole",) if task == "reconstruction" else ("whole", "input")
                   if task.startswith("super") else ("whole", "known", "generated"))
        keys = [f"{r}_psnr" for r in regions] + ["whole_ssim", "whole_lpips", "fid_fmnist",
                                                  "class_accuracy"]
        assert scores["images"] == 12 and all(np.isfinite(scores[k]) for k in keys), task
        assert scores["whole_lpips"] > 0, task  # LPIPS of the edits (random VGG weights here)
        # at 16 px the centre box leaves no 11 x 11 window centre in the known region
        assert ("known_ssim" in scores) == (task not in ("inpaint_center",) and "paint" in task)
    for key in ("fid_fmnist", "precision_fmnist", "recall_fmnist", "class_accuracy",
                "classifier_test_accuracy", "nll_bits_per_token", "nll_bits_per_image",
                "nll_uncond_bits_per_token", "images_per_s"):
        assert np.isfinite(report[key]), key
    assert len(report["nll_bits_per_token_per_scale"]) == 3 and report["images"] == 20
    assert report["nll_images"] == 40 and "inception" in report and "fid_inception" not in report
    assert report["settings"]["cfg"] == 2.0
    # A sweep reuses the trained classifier and the cached statistics.
    parsed = specs.parse(config)
    evaluator = evaluate.Evaluator(spec, parsed.evaluate, parsed.data, parsed.seed, str(tmp_path))
    clf = evaluator.load_classifier()
    reference = tmp_path / "evaluate" / "reference"
    real = evaluator.real_statistics(clf, fmnist.images[:300], str(reference))
    assert len(os.listdir(reference)) == 1  # read back, not recomputed
    settings = specs.sampler_settings(config.sample.settings)  # the settings evaluate sampled with
    first = evaluator.sample_metrics(params, settings, clf, real, 1, 0)
    again = evaluator.sample_metrics(params, settings, clf, real, 1, 0)
    assert first["fid_fmnist"] == again["fid_fmnist"] and again["compile_s"] == 0.0
    # A classifier trained with other settings lives beside the cached one, never taken for it.
    other = config.copy_and_resolve_references()
    other.evaluate.classifier_steps = config.evaluate.classifier_steps + 5
    retrained = evaluate.Evaluator(spec, specs.eval_spec(other.evaluate), parsed.data, parsed.seed,
                                   str(tmp_path)).load_classifier()
    folders = sorted((tmp_path / "evaluate" / "classifier").iterdir())
    assert len(folders) == 2 and retrained.steps == other.evaluate.classifier_steps != clf.steps
    recorded = {json.loads((f / "settings.json").read_text())["steps"] for f in folders}
    assert recorded == {config.evaluate.classifier_steps, other.evaluate.classifier_steps}
