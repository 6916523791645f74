"""The tokenizer against the official PyTorch VQVAE outputs (fp32)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import nhwc

from srdd_jax import models
from srdd_jax.tokenizer.vqvae import VQVAE


@pytest.fixture(scope="module")
def tokenizer(converted):
    spec, params = converted
    module = models.Model(spec).tokenizer
    variables = {"params": params["tokenizer"]}

    def run(method, x):
        return np.asarray(jax.jit(lambda v, x: module.apply(v, x, method=method))(variables, x))

    return run


def test_config_is_read_from_the_checkpoint_and_agrees_with_config_json(reference, converted):
    spec, _ = converted
    ref = reference["config"]
    assert tuple(spec.patch_nums) == tuple(ref["patch_nums"])
    for key in ("vocab_size", "z_channels", "ch", "share_quant_resi"):
        assert getattr(spec.tokenizer, key) == ref[key], key
    assert models.Model(spec).image_size == ref["image_size"]
    assert models.Model(spec).tokenizer.image_size == ref["image_size"]


def test_encoder_output(reference, tokenizer):
    io = reference["io"]
    enc_f = tokenizer(VQVAE.encode, nhwc(io["images"]))
    np.testing.assert_allclose(enc_f, nhwc(io["enc_f"]), atol=1e-4, rtol=0)


def test_quantising_reference_latent_gives_identical_tokens(reference, tokenizer):
    io = reference["io"]
    idx = tokenizer(VQVAE.quantize_latent, nhwc(io["enc_f"]))
    np.testing.assert_array_equal(idx, io["gt_idx"])


def test_end_to_end_tokens(reference, tokenizer):
    io = reference["io"]
    idx = tokenizer(VQVAE.encode_to_indices, nhwc(io["images"]))
    agreement = (idx == io["gt_idx"]).mean()
    assert agreement >= 0.999, f"only {agreement:.4%} of tokens agree"


def test_fhat_reconstruction_and_teacher_forcing_input(reference, tokenizer):
    io = reference["io"]
    np.testing.assert_allclose(tokenizer(VQVAE.indices_to_fhat, io["gt_idx"]),
                               nhwc(io["fhat_final"]), atol=1e-4, rtol=0)
    np.testing.assert_allclose(tokenizer(VQVAE.indices_to_image, io["gt_idx"]),
                               nhwc(io["recon"]), atol=1e-4, rtol=0)
    np.testing.assert_allclose(tokenizer(VQVAE.teacher_forcing_input, io["gt_idx"]),
                               io["var_input"], atol=1e-4, rtol=0)


def test_next_scale_steps_rebuild_teacher_forcing_input(reference, converted):
    """Chaining the sampler's per-scale step reproduces the teacher-forcing input and f_hat."""
    spec, params = converted
    module = models.Model(spec).tokenizer
    io = reference["io"]
    patch_nums = tuple(spec.patch_nums)

    def chain(variables, idx_BL):
        def body(mdl):
            b = idx_BL.shape[0]
            f_hat = jnp.zeros((b, patch_nums[-1], patch_nums[-1], spec.tokenizer.z_channels))
            inputs, begin = [], 0
            for si, pn in enumerate(patch_nums):
                h = mdl.embed_scale(idx_BL[:, begin:begin + pn * pn], pn)
                begin += pn * pn
                f_hat, nxt = mdl.next_scale_input(si, f_hat, h)
                inputs.append(nxt.reshape(b, -1, spec.tokenizer.z_channels))
            return f_hat, jnp.concatenate(inputs[:-1], axis=1)

        return module.apply(variables, method=body)

    f_hat, x_BLC = jax.jit(chain)({"params": params["tokenizer"]}, io["gt_idx"])
    np.testing.assert_allclose(np.asarray(x_BLC), io["var_input"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.asarray(f_hat), nhwc(io["fhat_final"]), atol=1e-4, rtol=0)


def test_bad_shapes_are_named(converted):
    spec, params = converted
    module = models.Model(spec).tokenizer
    variables = {"params": params["tokenizer"]}
    with pytest.raises(ValueError, match="NHWC"):
        module.apply(variables, np.zeros((1, 3, 256, 256), np.float32), method=VQVAE.encode)
    with pytest.raises(ValueError, match="token indices must be"):
        module.apply(variables, np.zeros((1, 5), np.int32), method=VQVAE.indices_to_fhat)
