"""Guidance only where it acts (rows counted in the traced program, `cfg_until`), and randomness
per image (the same seed gives an image the same draws at any batch size, padding or mesh)."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend import core as jax_core

from srdd_jax import experiment_config, models, parallel
from srdd_jax.modes import specs
from srdd_jax.sampling import generation, guidance, tokens
from srdd_jax.sampling.sampler import Sampler
from srdd_jax.sampling.settings import SamplerSettings

MASKS = ("var", "markov", "markov_prev")
STOCHASTIC = SamplerSettings(cfg=2.0, top_k=60, top_p=0.95)


@pytest.fixture(scope="module")
def small():
    """(spec, random params) of a 3-scale model that compiles in a second or two."""
    spec = specs.model_spec(experiment_config.tiny_model(num_classes=10, in_channels=3))
    params = {which: jax.tree.map(np.asarray, nn.unbox(models.Model(spec).init_params(
        jax.random.key(i), which))) for i, which in enumerate(("tokenizer", "transformer"))}
    return spec, params


def _labels(spec, n: int) -> np.ndarray:
    return (np.arange(n) * 3 % spec.transformer.num_classes).astype(np.int32)


def _agreement(a, b) -> float:
    return float((np.asarray(a) == np.asarray(b)).mean())


# ------------------------------------------------------------------------------ rows per scale
def _loop_rows(sampler: Sampler, params, batch: int) -> list[set[int]]:
    """For each bucket loop of the traced sampler, the leading sizes of its qkv projections'
    outputs (rows, w, 3C): the rows the transformer ran (B, or 2B with the unconditional half)."""
    qkv_width = 3 * sampler.spec.transformer.embed_dim
    length = sampler.sequence_length
    jaxpr = jax.make_jaxpr(sampler._program)(
        params["tokenizer"], params["transformer"], sampler.plan,
        jax.ShapeDtypeStruct((batch,), jnp.int32), jax.random.key(0),
        jax.ShapeDtypeStruct((), jnp.int32), jax.ShapeDtypeStruct((batch, length), jnp.int32),
        jax.ShapeDtypeStruct((batch, length), bool))

    def matmul_rows(jpr, found):
        for eqn in jpr.eqns:
            shape = eqn.outvars[0].aval.shape if eqn.outvars else ()
            if eqn.primitive.name == "dot_general" and len(shape) == 3 and shape[-1] == qkv_width:
                found.add(shape[0])
            for sub in jax_core.jaxprs_in_params(eqn.params):
                matmul_rows(sub, found)
        return found

    loops = [eqn for eqn in jaxpr.jaxpr.eqns if eqn.primitive.name in ("scan", "while")]
    assert len(loops) == len(sampler.plan.layout.buckets)
    return [matmul_rows(sub, set()) for eqn in loops
            for sub in jax_core.jaxprs_in_params(eqn.params)][:len(loops)]


@pytest.mark.parametrize("mask", MASKS)
def test_weight_zero_scales_run_no_unconditional_rows(converted, mask):
    """VAR's linear ramp has weight 0 at the first scale; cfg_until=-2 zeroes the last two.
    A weight-0 scale runs the conditional rows alone unless a later guided scale reads its keys
    (var: every later scale; markov_prev: the next one)."""
    spec, params = converted
    batch, last = 3, len(spec.patch_nums) - 1
    sampler = Sampler(spec, dataclasses.replace(STOCHASTIC, cfg_until=-2, mr=True), mask=mask)
    expect_doubled = {"markov": lambda k: 0 < k < last - 1,
                      "markov_prev": lambda k: k < last - 1,
                      "var": lambda k: k < last - 1}[mask]
    assert sampler.plan.guided == tuple(expect_doubled(k) for k in range(last + 1))
    for bucket, rows in zip(sampler.plan.layout.buckets, _loop_rows(sampler, params, batch)):
        doubled = bucket.guided
        assert all(expect_doubled(k) == doubled for k in bucket.scale_ids)
        assert rows == ({2 * batch} if doubled else {batch}), (bucket, rows)
    assert sampler.plan.rows_per_scale(batch) == tuple(2 * batch if expect_doubled(k) else batch
                                                       for k in range(last + 1))


def test_without_the_skip_every_scale_runs_the_doubled_batch(converted):
    spec, params = converted
    sampler = Sampler(spec, dataclasses.replace(STOCHASTIC, skip_unguided_rows=False), mask="markov")
    assert all(rows == {4} for rows in _loop_rows(sampler, params, 2))


@pytest.mark.parametrize("mask", MASKS)
def test_skipping_unguided_rows_leaves_the_samples_unchanged(small, mask):
    spec, params = small
    labels = _labels(spec, 4)
    settings = dataclasses.replace(STOCHASTIC, mr=True, mr_threshold=0.05, cfg_until=-1)
    skipped = Sampler(spec, settings, mask=mask).sample(params, labels, jax.random.key(1))
    doubled = Sampler(spec, dataclasses.replace(settings, skip_unguided_rows=False),
                      mask=mask).sample(params, labels, jax.random.key(1))
    assert _agreement(skipped["idx_BL"], doubled["idx_BL"]) >= 0.999
    np.testing.assert_array_equal(skipped["resampled_K"], doubled["resampled_K"])


def test_cfg_until_keeps_the_guided_scales_and_changes_the_rest(small):
    """markov: scales before cfg_until see the same state and the same random numbers, so their
    tokens are the fully guided sampler's; the unguided scale draws from other distributions."""
    spec, params = small
    labels = _labels(spec, 8)
    full = Sampler(spec, STOCHASTIC, mask="markov")
    cut = Sampler(spec, dataclasses.replace(STOCHASTIC, cfg_until=-1), mask="markov")
    np.testing.assert_array_equal(cut.plan.weights_K[-1:], 0.0)
    np.testing.assert_array_equal(cut.plan.weights_K[:-1], full.plan.weights_K[:-1])
    a = np.asarray(full.sample(params, labels, jax.random.key(2))["idx_BL"])
    b = np.asarray(cut.sample(params, labels, jax.random.key(2))["idx_BL"])
    kept = cut.plan.layout.begins[-1]
    assert _agreement(a[:, :kept], b[:, :kept]) >= 0.999
    assert _agreement(a[:, kept:], b[:, kept:]) < 0.99


def test_stop_guidance_and_guided_rows_tables():
    weights = guidance.guidance_weights("linear", 1.5, 5)
    np.testing.assert_allclose(guidance.stop_guidance(weights, range(5), 5, 3),
                               [0, 0.375, 0.75, 0, 0])
    np.testing.assert_allclose(guidance.stop_guidance(weights, range(5), 5, -1),
                               [0, 0.375, 0.75, 1.125, 0])
    subset = guidance.guidance_weights("linear", 1.5, 3)  # levels 1, 3, 4 of five
    np.testing.assert_allclose(guidance.stop_guidance(subset, (1, 3, 4), 5, 4), [0, 0.75, 0])
    cut = np.array([0, 1, 1, 0, 0], np.float32)
    assert guidance.guided_rows(cut, 0) == (False, True, True, False, False)
    assert guidance.guided_rows(cut, 1) == (True, True, True, False, False)
    assert guidance.guided_rows(cut, None) == (True, True, True, False, False)
    assert guidance.guided_rows(cut, None, skip_unguided=False) == (True,) * 5
    assert guidance.guided_rows(np.zeros(3), None, skip_unguided=False) == (False,) * 3


def test_bad_cfg_until_is_named(converted):
    spec, _ = converted
    levels = len(spec.patch_nums)
    for bad in (levels, -levels - 1):
        with pytest.raises(ValueError, match="sample.cfg_until"):
            Sampler(spec, dataclasses.replace(STOCHASTIC, cfg_until=bad))


# ---------------------------------------------------------------------------- per-image randomness
def test_each_image_draws_the_same_numbers_in_any_batch_and_on_any_mesh():
    rng, width, count = jax.random.key(11), 37, 8
    whole = np.asarray(tokens.token_uniforms(tokens.image_keys(rng, 0, count), 4, 2, width))
    for batch in (1, 3, 8):
        parts = [tokens.token_uniforms(tokens.image_keys(rng, start, min(batch, count - start)),
                                       4, 2, width) for start in range(0, count, batch)]
        np.testing.assert_array_equal(np.concatenate(parts), whole)
    narrow = tokens.token_uniforms(tokens.image_keys(rng, 0, count), 4, 2, 5)  # less padding
    np.testing.assert_array_equal(narrow, whole[:, :5])
    assert len(np.unique(whole)) == whole.size  # distinct over images and positions
    other_scale = tokens.token_uniforms(tokens.image_keys(rng, 0, count), 5, 2, width)
    other_draw = tokens.token_uniforms(tokens.image_keys(rng, 0, count), 4, 3, width)
    assert not np.isin(whole, other_scale).any() and not np.isin(whole, other_draw).any()
    if jax.device_count() >= 8:
        mesh = parallel.make_mesh(8, 1)
        sharded = jax.jit(lambda r, i: tokens.token_uniforms(tokens.image_keys(r, i, count), 4, 2,
                                                             width),
                          out_shardings=parallel.batch_sharding(mesh, 2, count))(rng, 0)
        assert len(sharded.sharding.device_set) == 8
        np.testing.assert_array_equal(np.asarray(sharded), whole)


@pytest.mark.parametrize("mask", MASKS)
def test_same_seed_same_tokens_at_any_batch_size(small, mask):
    """Batches of 8, 3 (3 + 3 + 2) and 1, and 8 devices (a padded batch of 3 and the whole 8),
    with MR redrawing tokens (so both the first draws and MR's redraws are compared)."""
    spec, params = small
    labels = _labels(spec, 8)
    settings = dataclasses.replace(STOCHASTIC, mr=True, mr_threshold=0.05)
    sampler = Sampler(spec, settings, mask=mask)
    rng = jax.random.key(5)
    whole = sampler.sample(params, labels, rng)
    assert int(np.asarray(whole["resampled_K"]).sum()) > 0
    whole = np.asarray(whole["idx_BL"])
    for batch in (1, 3):
        parts = [np.asarray(sampler.sample(params, labels[s:s + batch], rng,
                                           first_index=s)["idx_BL"])
                 for s in range(0, len(labels), batch)]
        assert _agreement(np.concatenate(parts), whole) >= 0.999, batch
    if jax.device_count() >= 8:
        sharded = Sampler(spec, settings, mask=mask, mesh=parallel.make_mesh(8, 1))
        three = sharded.sample(params, labels[3:6], rng, first_index=3)  # padded to 8 rows
        assert _agreement(three["idx_BL"], whole[3:6]) >= 0.999
        assert _agreement(sharded.sample(params, labels, rng)["idx_BL"], whole) >= 0.999


def test_generate_gives_the_same_images_at_any_batch_size(small):
    spec, params = small
    labels = _labels(spec, 5)
    sampler = Sampler(spec, STOCHASTIC, mask="markov")
    one = generation.generate(sampler, params, labels, jax.random.key(3), batch_size=5)
    two = generation.generate(sampler, params, labels, jax.random.key(3), batch_size=2)
    assert _agreement(one["idx_NL"], two["idx_NL"]) >= 0.999
    np.testing.assert_allclose(one["images_NHWC"], two["images_NHWC"], atol=1e-4)
