"""The transformer's teacher-forced logits against the official PyTorch VAR (fp32)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srdd_jax import models

CASES = [("var", "logits_var"), ("markov", "logits_markov_self"),
         ("markov_prev", "logits_markov_prev")]


def _logits(spec, params, labels, x, **overrides):
    module = models.Model(spec.with_transformer(**overrides)).transformer
    return np.asarray(jax.jit(module.apply)({"params": params["transformer"]}, labels, x))


def test_config_agrees_with_config_json(reference, converted):
    spec, _ = converted
    ref = reference["config"]
    tr = spec.transformer
    assert (tr.depth, tr.embed_dim, tr.num_heads, tr.num_classes) == (
        ref["depth"], ref["embed_dim"], ref["num_heads"], ref["num_classes"])
    assert (tr.attn_l2_norm, tr.shared_aln) == (ref["attn_l2_norm"], ref["shared_aln"])


@pytest.mark.parametrize("mask,key", CASES)
def test_teacher_forced_logits(reference, converted, mask, key):
    spec, params = converted
    io = reference["io"]
    logits = _logits(spec, params, io["labels"], io["var_input"], mask=mask)
    np.testing.assert_allclose(logits, io[key], atol=1e-3, rtol=0)


def test_null_class_logits(reference, converted):
    spec, params = converted
    io = reference["io"]
    null = np.full_like(io["labels"], spec.transformer.num_classes)
    logits = _logits(spec, params, null, io["var_input"], mask="var")
    np.testing.assert_allclose(logits, io["logits_null"], atol=1e-3, rtol=0)


def test_bfloat16_compute_keeps_float32_params_and_logits(reference, converted):
    spec, params = converted
    io = reference["io"]
    logits = _logits(spec, params, io["labels"], io["var_input"], mask="var", dtype="bfloat16")
    assert logits.dtype == np.float32
    # bf16 has ~3 significant digits: the logits stay close, not equal.
    assert np.abs(logits - io["logits_var"]).max() < 0.1 * np.abs(io["logits_var"]).max()


def test_training_mode_drops_labels_and_paths(reference, converted):
    spec, params = converted
    io = reference["io"]
    module = models.Model(spec.with_transformer(cond_drop_rate=0.99, drop_path_rate=0.5)).transformer
    variables = {"params": params["transformer"]}
    eval_logits = jax.jit(module.apply)(variables, io["labels"], io["var_input"])
    train_logits = jax.jit(lambda v, y, x, r: module.apply(v, y, x, train=True,
                                                           rngs={"dropout": r}))(
        variables, io["labels"], io["var_input"], jax.random.key(0))
    assert not np.allclose(eval_logits, train_logits)
    np.testing.assert_allclose(eval_logits, io["logits_markov_self"], atol=1e-3, rtol=0)


def test_fresh_init_follows_var_recipe(converted):
    spec, _ = converted
    params = nn.unbox(models.Model(spec).init_params(jax.random.key(1), "transformer"))
    c = spec.transformer.embed_dim
    if spec.transformer.shared_aln:  # each block's (6, C) offsets to the shared modulation
        gss = params["blocks"]["ada_gss"][0]
        scale = 1 / c ** 0.5
        assert np.std(gss[:2]) < 1e-3 * scale  # gammas start near zero (init_adaln_gamma)
        assert np.std(gss[2:]) == pytest.approx(0.5 * scale, rel=0.1)
    else:
        ada = params["blocks"]["ada_lin"]["kernel"][0]
        std = (1 / (3 * c)) ** 0.5
        assert np.std(ada[:, :2 * c]) < 1e-3 * std  # gammas start near zero (init_adaln_gamma)
        assert np.std(ada[:, 2 * c:]) == pytest.approx(0.5 * std, rel=0.1)
    np.testing.assert_allclose(params["blocks"]["attn"]["scale_mul"], np.log(4.0), rtol=1e-6)
    assert np.all(params["head"]["bias"] == 0)


def test_bad_inputs_and_config_values_are_named(converted):
    spec, params = converted
    module = models.Model(spec).transformer
    variables = {"params": params["transformer"]}
    with pytest.raises(ValueError, match="teacher-forcing input must be"):
        module.apply(variables, jnp.zeros((2,), jnp.int32), jnp.zeros((2, 5, 8)))
    width = spec.transformer.embed_dim
    num_heads = next(h for h in range(2, width) if width % h)
    with pytest.raises(ValueError, match=f"embed_dim=.* not divisible by num_heads={num_heads}"):
        spec.with_transformer(num_heads=num_heads)
    with pytest.raises(ValueError, match="unknown attention mask"):
        spec.with_transformer(mask="causal")
    with pytest.raises(ValueError, match="strictly increasing"):
        spec.replace(patch_nums=(1, 3, 2))
