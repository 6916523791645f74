"""The sampler against PyTorch VAR's greedy samples, and its MR / editing / sharding contracts."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import nhwc

from srdd_jax import image_grids, models, parallel
from srdd_jax.sampling import editing, layout
from srdd_jax.sampling.sampler import Sampler
from srdd_jax.sampling.settings import SamplerSettings
from srdd_jax.tokenizer.vqvae import VQVAE

FIXTURE_MASKS = {"var": "var", "markov": "markov_self", "markov_prev": "markov_prev"}
STOCHASTIC = SamplerSettings(cfg=2.0, top_k=60, top_p=0.95)


def _decode(spec, params, f_hat):
    module = models.Model(spec).tokenizer
    return np.asarray(jax.jit(lambda p, f: module.apply({"params": p}, f, method=VQVAE.decode))(
        params["tokenizer"], f_hat))


@pytest.mark.parametrize("mask", sorted(FIXTURE_MASKS))
@pytest.mark.parametrize("cfg_scale", [0.0, 1.5])
def test_greedy_samples_match_reference(reference, converted, mask, cfg_scale):
    spec, params = converted
    io = reference["io"]
    key = f"sample_{FIXTURE_MASKS[mask]}_cfg{cfg_scale}"
    out = Sampler(spec, SamplerSettings(cfg=cfg_scale, greedy=True), mask=mask).sample(
        params, io["labels"], jax.random.key(0))
    idx, want = np.asarray(out["idx_BL"]), io[f"{key}_idx"]
    agree = idx == want
    assert agree.mean() >= 0.99, f"{agree.mean():.2%} of tokens agree"
    first_scale = (spec.patch_nums[0] ** 2)
    assert agree[:, :first_scale].all()
    images = (_decode(spec, params, out["f_hat_BhwC"]) + 1) / 2
    same = agree.all(axis=1)  # images are comparable where every token agrees
    np.testing.assert_allclose(images[same], nhwc(io[f"{key}_img"])[same], atol=1e-3, rtol=0)


@pytest.fixture(scope="module")
def plain(converted, reference):
    """A stochastic markov sample without MR (seed 3), and its sampler."""
    spec, params = converted
    sampler = Sampler(spec, STOCHASTIC, mask="markov")
    return sampler, sampler.sample(params, reference["io"]["labels"], jax.random.key(3))


def _with(settings, **changes):
    return dataclasses.replace(settings, **changes)


def test_same_seed_same_samples_and_other_seed_differs(converted, reference, plain):
    sampler, first = plain
    _, params = converted
    again = sampler.sample(params, reference["io"]["labels"], jax.random.key(3))
    other = sampler.sample(params, reference["io"]["labels"], jax.random.key(4))
    np.testing.assert_array_equal(np.asarray(again["idx_BL"]), np.asarray(first["idx_BL"]))
    assert (np.asarray(other["idx_BL"]) != np.asarray(first["idx_BL"])).mean() > 0.1


def test_mr_threshold_zero_changes_nothing(converted, reference, plain):
    spec, params = converted
    _, base = plain
    out = Sampler(spec, _with(STOCHASTIC, mr=True, mr_threshold=0.0), mask="markov").sample(
        params, reference["io"]["labels"], jax.random.key(3))
    np.testing.assert_array_equal(np.asarray(out["idx_BL"]), np.asarray(base["idx_BL"]))
    assert int(np.asarray(out["resampled_K"]).sum()) == 0


def test_mr_threshold_one_redraws_every_token_on_chosen_scales(converted, reference):
    spec, params = converted
    labels = reference["io"]["labels"]
    last = len(spec.patch_nums) - 1
    chosen = tuple(sorted({1, last // 2 + 1, last}))  # some scales, the last among them
    settings = _with(STOCHASTIC, top_k=0, top_p=0.0, mr=True, mr_threshold=1.0, mr_iterations=1,
                     mr_scales=chosen)
    counts = np.asarray(Sampler(spec, settings, mask="markov").sample(
        params, labels, jax.random.key(3))["resampled_K"])
    expected = [len(labels) * pn * pn if si in chosen else 0 for si, pn in enumerate(spec.patch_nums)]
    np.testing.assert_array_equal(counts, expected)


def test_mr_counts_agree_with_direct_recount(converted, reference, plain):
    """With MR on one scale, its count equals the tokens of the MR-free run below the threshold."""
    spec, params = converted
    sampler, base = plain
    si = len(spec.patch_nums) - 3  # a scale with enough tokens to split at the median
    begin, end = sampler.plan.layout.begins[si], sampler.plan.layout.begins[si + 1]
    conf = np.asarray(base["confidence_BL"])[:, begin:end]
    threshold = float(np.median(conf))
    settings = _with(STOCHASTIC, mr=True, mr_threshold=threshold, mr_iterations=1, mr_scales=(si,))
    out = Sampler(spec, settings, mask="markov").sample(params, reference["io"]["labels"],
                                                         jax.random.key(3))
    counts = np.asarray(out["resampled_K"])
    assert counts[si] == int((conf < threshold).sum()) > 0
    assert counts.sum() == counts[si]
    np.testing.assert_array_equal(np.asarray(out["idx_BL"])[:, :begin],
                                  np.asarray(base["idx_BL"])[:, :begin])


def test_mr_keeps_every_confident_first_draw_and_reports_its_confidence(converted, reference,
                                                                         plain):
    """On the MR scale, a token whose first draw is at or above the threshold is that draw; the
    confidences reported are the first draw's (those of the MR-free run)."""
    spec, params = converted
    sampler, base = plain
    si = len(spec.patch_nums) - 2
    begin, end = sampler.plan.layout.begins[si], sampler.plan.layout.begins[si + 1]
    conf = np.asarray(base["confidence_BL"])[:, begin:end]
    threshold = float(np.quantile(conf, 0.3))
    out = Sampler(spec, _with(STOCHASTIC, mr=True, mr_threshold=threshold, mr_iterations=4,
                              mr_scales=(si,)), mask="markov").sample(
        params, reference["io"]["labels"], jax.random.key(3))
    idx, base_idx = np.asarray(out["idx_BL"])[:, begin:end], np.asarray(base["idx_BL"])[:, begin:end]
    confident = conf >= threshold
    np.testing.assert_array_equal(idx[confident], base_idx[confident])
    assert (idx[~confident] != base_idx[~confident]).any()
    np.testing.assert_array_equal(np.asarray(out["confidence_BL"])[:, :end],
                                  np.asarray(base["confidence_BL"])[:, :end])


def test_mr_calls_no_model_and_draws_only_where_a_token_is_below_the_threshold(
        converted, reference, monkeypatch):
    """Counted at run time: one model call per scale with or without MR; redraw rounds only on
    mr_scales, and none where no token is below the threshold."""
    from srdd_jax.sampling import scale_loop, tokens

    spec, params = converted
    model_calls, draws = [], []
    probs, uniforms = scale_loop.ScaleStep.model_probs, tokens.token_uniforms

    def counted_probs(self, f_hat, k, *args):
        jax.debug.callback(lambda k: model_calls.append(int(k)), k)
        return probs(self, f_hat, k, *args)

    def counted_uniforms(keys, k, draw, width):
        jax.debug.callback(lambda k, d: draws.append((int(k), int(d))), k, draw)
        return uniforms(keys, k, draw, width)

    monkeypatch.setattr(scale_loop.ScaleStep, "model_probs", counted_probs)
    monkeypatch.setattr(tokens, "token_uniforms", counted_uniforms)
    last = len(spec.patch_nums) - 1
    for threshold, redrawn in ((1.0, {1, last}), (0.0, set())):
        model_calls.clear()
        draws.clear()
        settings = _with(STOCHASTIC, top_k=0, top_p=0.0, mr=True, mr_threshold=threshold,
                         mr_iterations=2, mr_scales=(1, last))
        Sampler(spec, settings, mask="markov").sample(params, reference["io"]["labels"],
                                                      jax.random.key(5))
        jax.effects_barrier()
        assert sorted(model_calls) == list(range(last + 1))
        expected = [(k, 0) for k in range(last + 1)] + [(k, d) for k in redrawn for d in (1, 2)]
        assert sorted(draws) == sorted(expected), threshold


def test_more_smooth_changes_the_latent_not_the_first_draw(converted, reference, plain):
    """VAR's more_smooth adds a Gumbel-softmax mixture of codes: scale 0's tokens are drawn as
    without it (its noise is a stream of its own), the latent and so the later scales differ."""
    spec, params = converted
    sampler, base = plain
    out = Sampler(spec, _with(STOCHASTIC, more_smooth=True), mask="markov").sample(
        params, reference["io"]["labels"], jax.random.key(3))
    first = sampler.plan.layout.begins[1]
    np.testing.assert_array_equal(np.asarray(out["idx_BL"])[:, :first],
                                  np.asarray(base["idx_BL"])[:, :first])
    f_hat, base_f_hat = np.asarray(out["f_hat_BhwC"]), np.asarray(base["f_hat_BhwC"])
    assert np.isfinite(f_hat).all() and np.abs(f_hat - base_f_hat).mean() > 1e-3
    assert (np.asarray(out["idx_BL"])[:, first:] != np.asarray(base["idx_BL"])[:, first:]).any()


def test_guidance_ten_stays_finite(converted, reference):
    spec, params = converted
    settings = SamplerSettings(cfg=10.0, cfg_schedule="constant", mr=True, mr_iterations=3)
    out = Sampler(spec, settings, mask="markov").sample(params, reference["io"]["labels"],
                                                         jax.random.key(0))
    assert np.isfinite(np.asarray(out["f_hat_BhwC"])).all()
    assert np.isfinite(np.asarray(out["confidence_BL"])).all()


def test_scale_subset(converted, reference):
    spec, params = converted
    last = len(spec.patch_nums) - 1
    subset = tuple(range(0, last, 2)) + (last,)  # every other scale, and the last
    sampler = Sampler(spec, _with(STOCHASTIC, scale_ids=subset), mask="markov")
    labels = reference["io"]["labels"]
    out = sampler.sample(params, labels, jax.random.key(0))
    pns = [spec.patch_nums[i] for i in subset]
    assert out["idx_BL"].shape == (len(labels), sum(p * p for p in pns))
    assert int(np.asarray(out["idx_BL"]).max()) < spec.tokenizer.vocab_size
    assert np.isfinite(_decode(spec, params, out["f_hat_BhwC"])).all()
    with pytest.raises(ValueError, match="ending with the last scale"):
        Sampler(spec, _with(STOCHASTIC, scale_ids=(0, last - 1)), mask="markov")


def test_inpainting_keeps_known_tokens_at_every_scale(converted, reference):
    spec, params = converted
    io = reference["io"]
    sampler = Sampler(spec, STOCHASTIC, mask="markov")
    size = reference["config"]["image_size"]
    keep = editing.box_mask(size, (0.25, 0.25, 0.75, 0.75), keep_inside=False)
    lay = sampler.plan.layout
    known_idx, known = editing.inpainting_constraints(
        sampler.model.tokenizer, params["tokenizer"], nhwc(io["images"]), keep, lay)
    known_idx, known = np.asarray(known_idx), np.asarray(known)
    np.testing.assert_array_equal(known_idx, io["gt_idx"])
    out = np.asarray(sampler.sample(params, io["labels"], jax.random.key(5), known_idx, known)["idx_BL"])
    for begin, end in zip(lay.begins, lay.begins[1:] + (sampler.sequence_length,)):
        assert known[:, begin:end].any()  # every scale keeps some tokens
        np.testing.assert_array_equal(out[:, begin:end][known[:, begin:end]],
                                      known_idx[:, begin:end][known[:, begin:end]])
    assert 0.2 < known.mean() < 0.95
    assert (out[~known] != known_idx[~known]).mean() > 0.5  # the hole is generated


def test_forcing_every_token_gives_the_tokenizers_reconstruction(converted, reference):
    """The bound the editing evaluation reports beside its tasks (edit_eval.reconstruct): an edit
    that keeps every pixel forces every token, and decodes to the tokenizer's reconstruction."""
    from srdd_jax.evaluation import edit_eval

    spec, params = converted
    io = reference["io"]
    sampler = Sampler(spec, STOCHASTIC, mask="markov")
    images = nhwc(io["images"])
    keep = np.ones(images.shape[1:3], np.float32)
    known_idx, known = editing.inpainting_constraints(
        sampler.model.tokenizer, params["tokenizer"], images, keep, sampler.plan.layout)
    assert np.asarray(known).all()
    out = sampler.sample(params, io["labels"], jax.random.key(5), np.asarray(known_idx),
                         np.asarray(known))
    edited = np.clip(np.asarray(sampler.decoder.decode(params["tokenizer"], out["f_hat_BhwC"])),
                     -1, 1)
    recon = edit_eval.reconstruct(sampler.model.tokenizer, params["tokenizer"], images, 2)
    assert recon.shape == images.shape and np.abs(recon - images).max() > 1e-2  # not the input
    np.testing.assert_allclose(edited, recon, atol=1e-4)


def test_a_box_on_the_token_grid_gives_the_keep_flags_of_vars_editing_demo():
    """With grid=latent the box covers whole tokens, and the per-scale keep flags are VAR's demo's:
    the box rounded on the latent grid (round(y0 * side) ...), then bilinear to each pn, > 0.5,
    coarse scales with pn^2 <= 3 kept whole."""
    import jax.numpy as jnp

    from srdd_jax.sampling import editing
    from srdd_jax.tokenizer.resize import bilinear_resize

    patch_nums, latent, size = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16), 16, 256
    box = (0.1, 0.13, 0.8, 0.77)
    for keep_inside in (False, True):
        keep = editing.box_mask(size, box, keep_inside, grid=latent)
        flags = np.asarray(editing.scale_keep_masks(jnp.asarray(keep)[None], patch_nums, latent))
        token_box = np.zeros((latent, latent), np.float32)  # VAR's get_edit_mask, outpainting form
        token_box[round(box[0] * latent):round(box[2] * latent),
                  round(box[1] * latent):round(box[3] * latent)] = 1
        grid = token_box if keep_inside else 1 - token_box
        want = [np.ones(pn * pn, bool) if pn * pn <= 3 else
                np.asarray(bilinear_resize(jnp.asarray(grid)[None, ..., None], (pn, pn)) > 0.5
                           ).reshape(-1) for pn in patch_nums]
        np.testing.assert_array_equal(flags[0], np.concatenate(want))
    pixel = editing.box_mask(size, box, False)  # on pixels the box edges fall inside tokens
    assert not np.array_equal(pixel, editing.box_mask(size, box, False, grid=latent))


def test_super_resolution_reproduces_coarse_tokens(converted, reference):
    spec, params = converted
    io = reference["io"]
    sampler = Sampler(spec, STOCHASTIC, mask="markov")
    images = nhwc(io["images"])
    half = reference["config"]["image_size"] // 2
    low = np.asarray(jax.image.resize(images, (len(images), half, half, images.shape[-1]),
                                      "linear"))
    known_idx, known = editing.super_resolution_constraints(sampler.model.tokenizer, params["tokenizer"],
                                                            low, sampler.plan.layout)
    known_idx, known = np.asarray(known_idx), np.asarray(known)
    coarse = sampler.plan.layout.begins[sum(pn <= spec.patch_nums[-1] / 2 for pn in spec.patch_nums)]
    assert known[:, :coarse].all() and not known[:, coarse:].any()
    out = np.asarray(sampler.sample(params, io["labels"], jax.random.key(6), known_idx, known)["idx_BL"])
    np.testing.assert_array_equal(out[:, :coarse], known_idx[:, :coarse])


def test_bad_editing_inputs_are_named(converted, reference, tmp_path):
    spec, params = converted
    sampler = Sampler(spec, STOCHASTIC, mask="markov")
    size = reference["config"]["image_size"]
    images = nhwc(reference["io"]["images"])
    with pytest.raises(ValueError, match="mask must be"):
        editing.inpainting_constraints(sampler.model.tokenizer, params["tokenizer"], images,
                                       np.ones((size, size // 2)), sampler.plan.layout)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        editing.inpainting_constraints(sampler.model.tokenizer, params["tokenizer"], images,
                                       np.full((size, size), 2.0), sampler.plan.layout)
    with pytest.raises(ValueError, match="NHWC"):
        editing.inpainting_constraints(sampler.model.tokenizer, params["tokenizer"], images[..., 0],
                                       np.ones((size, size)), sampler.plan.layout)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read image"):
        editing.load_image(str(broken), size)
    small = tmp_path / "small.png"
    image_grids.save_grid(str(small), np.zeros((1, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="resize or crop"):
        editing.load_image(str(small), size)
    with pytest.raises(ValueError, match="editing constraints must be"):
        sampler.sample(params, reference["io"]["labels"], jax.random.key(0),
                       np.zeros((2, 3), np.int32), np.zeros((2, 3), bool))


def test_bad_settings_are_named(converted):
    spec, _ = converted
    with pytest.raises(ValueError, match="temperature"):
        Sampler(spec, SamplerSettings(temperature=0.0))
    with pytest.raises(ValueError, match="cfg_list"):
        Sampler(spec, SamplerSettings(cfg_schedule="list", cfg_list=(1.0,)))
    with pytest.raises(ValueError, match="unknown cfg_schedule"):
        Sampler(spec, SamplerSettings(cfg_schedule="cosine"))
    with pytest.raises(ValueError, match="mr_scales"):
        Sampler(spec, SamplerSettings(mr=True, mr_scales=(99,)))


def test_sharded_sampling_equals_single_device(converted, reference):
    if jax.device_count() < 8:
        pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=8 (set in conftest)")
    spec, params = converted
    labels = np.arange(8) % spec.transformer.num_classes
    settings = _with(STOCHASTIC, mr=True)
    single = Sampler(spec, settings, mask="markov_prev").sample(params, labels, jax.random.key(9))
    sampler = Sampler(spec, settings, mask="markov_prev", mesh=parallel.make_mesh(2, 4))
    sharded = sampler.sample(params, labels, jax.random.key(9))
    assert len(sharded["idx_BL"].sharding.device_set) == 8
    np.testing.assert_array_equal(np.asarray(sharded["idx_BL"]), np.asarray(single["idx_BL"]))
    np.testing.assert_array_equal(np.asarray(sharded["resampled_K"]), np.asarray(single["resampled_K"]))
    np.testing.assert_allclose(_decode(spec, params, sharded["f_hat_BhwC"]),
                               _decode(spec, params, single["f_hat_BhwC"]), atol=1e-4, rtol=0)


def test_outputs_png_grid_and_npz(tmp_path):
    images = image_grids.to_uint8(np.linspace(-1, 1, 5 * 4 * 4 * 3).reshape(5, 4, 4, 3))
    assert images.dtype == np.uint8 and images.min() == 0 and images.max() == 255
    image_grids.save_grid(str(tmp_path / "grid.png"), images, columns=3)
    from PIL import Image

    with Image.open(tmp_path / "grid.png") as grid_png:
        assert grid_png.size == (3 * 4 + 2 * 2, 2 * 4 + 2)
    image_grids.save_samples(str(tmp_path / "s.npz"), images, np.arange(5), np.zeros((5, 7), np.int32))
    saved = np.load(tmp_path / "s.npz")
    np.testing.assert_array_equal(saved["arr_0"], images)


def test_bucket_plan_for_var_256():
    counts = [p * p for p in models.PATCH_NUMS_256]
    groups = layout.plan_buckets(counts, 32)
    assert [[counts[i] for i in g] for g in groups] == [[1, 4, 9], [16, 25, 36], [64], [100], [169], [256]]
    assert layout.plan_buckets(counts, 10**6) == [list(range(10))]
    assert layout.plan_buckets(counts, 0) == [[i] for i in range(10)]


def test_token_filters_follow_var_semantics():
    from srdd_jax.sampling import tokens

    logits = jnp.log(jnp.array([[[0.05, 0.4, 0.1, 0.3, 0.15]]]))  # (B=1, l=1, V=5)
    kept = np.isfinite(np.asarray(tokens.filter_logits(logits, top_k=2)))[0]
    np.testing.assert_array_equal(kept, [[False, True, False, True, False]])
    # top-p 0.8: drop ascending tokens while cumulative <= 0.2 -> 0.05 and 0.1 (cum 0.15); keep 0.15
    kept = np.isfinite(np.asarray(tokens.filter_logits(logits, top_p=0.8)))[0]
    np.testing.assert_array_equal(kept, [[False, True, False, True, True]])
    probs = tokens.distribution(logits, top_k=1)
    assert float(tokens.confidence(probs, jnp.array([[1]]))[0, 0]) == pytest.approx(1.0)
    uniforms = tokens.token_uniforms(tokens.image_keys(jax.random.key(0), 0, 1), 0, 0, 20000)
    draws = tokens.draw(uniforms, jnp.broadcast_to(tokens.distribution(logits), (1, 20000, 5)),
                        greedy=False)
    frequencies = np.bincount(np.asarray(draws).ravel(), minlength=5) / 20000
    np.testing.assert_allclose(frequencies, [0.05, 0.4, 0.1, 0.3, 0.15], atol=0.015)


def test_batch_that_does_not_divide_the_mesh_is_split_not_replicated(converted):
    if jax.device_count() < 8:
        pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=8 (set in conftest)")
    spec, params = converted
    labels = np.arange(10) % spec.transformer.num_classes
    settings = _with(STOCHASTIC, mr=True, mr_threshold=0.05)
    single = Sampler(spec, settings, mask="markov").sample(params, labels, jax.random.key(2))
    sampler = Sampler(spec, settings, mask="markov", mesh=parallel.make_mesh(2, 4))
    assert sampler.padded_batch(10) == 16
    sharded = sampler.sample(params, labels, jax.random.key(2))
    assert sharded["idx_BL"].shape[0] == 10
    np.testing.assert_array_equal(np.asarray(sharded["idx_BL"]), np.asarray(single["idx_BL"]))
    np.testing.assert_array_equal(np.asarray(sharded["resampled_K"]),
                                  np.asarray(single["resampled_K"]))
    (executable,) = sampler._compiled.values()
    labels_sharding = executable.input_shardings[0][3]
    assert labels_sharding.shard_shape((16,)) == (2,)  # two rows per device, not all 16
