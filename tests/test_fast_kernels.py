"""The faster computations of the sampler and decoder give the plain computations' results:
attention over key segments, upsampling convs on the low-resolution grid, YNNPACK convolutions on
the CPU, and sampling without the tokenizer's encoder."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srdd_jax import cpu_kernels, experiment_config, models
from srdd_jax.modes import specs
from srdd_jax.sampling import generation
from srdd_jax.sampling.sampler import Sampler, for_sampling
from srdd_jax.sampling.settings import SamplerSettings
from srdd_jax.tokenizer import autoencoder
from srdd_jax.tokenizer.vqvae import VQVAE
from srdd_jax.transformer import attention


def test_segmented_attention_equals_one_softmax_over_the_concatenated_keys():
    keys = jax.random.split(jax.random.key(0), 8)
    q = jax.random.normal(keys[0], (2, 3, 5, 4))  # B H q D
    widths = (1, 6, 5)
    segments = []
    for i, width in enumerate(widths):
        k, v = (jax.random.normal(keys[1 + 2 * i + j], (2, 3, width, 4)) for j in range(2))
        valid = jnp.arange(width)[None] < jnp.array([[width], [max(width - 2, 1)]])
        segments.append((k, v, valid))
    got = attention.attend_segments(q, segments, 0.7)
    k = jnp.concatenate([s[0] for s in segments], axis=2)
    v = jnp.concatenate([s[1] for s in segments], axis=2)
    valid = jnp.concatenate([s[2] for s in segments], axis=1)
    logits = jnp.where(valid[:, None, None], jnp.einsum("bhqd,bhkd->bhqk", q, k) * 0.7, -jnp.inf)
    want = jnp.einsum("bhqk,bhkd->bqhd", jax.nn.softmax(logits, axis=-1), v)
    assert got.shape == (2, 5, 3, 4)
    np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 3, 5, 8, 6), (2, 4, 4, 3, 3)])
def test_upsampling_conv_on_the_low_resolution_grid_equals_upsample_then_conv(shape):
    b, h, w, c_in, c_out = shape
    x = jax.random.normal(jax.random.key(1), (b, h, w, c_in))
    kernel = jax.random.normal(jax.random.key(2), (3, 3, c_in, c_out))
    bias = jax.random.normal(jax.random.key(3), (c_out,))
    up = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    want = jax.lax.conv_general_dilated(up, kernel, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC")) + bias
    got = autoencoder.upsample_conv(x, kernel, bias)
    assert got.shape == (b, 2 * h, 2 * w, c_out)
    np.testing.assert_allclose(got, want, atol=1e-5)


def _tiny_tokenizer():
    model = models.Model(specs.model_spec(experiment_config.tiny_model(in_channels=3)))
    return model.spec, model.tokenizer, nn.unbox(model.init_params(jax.random.key(0), "tokenizer"))


def test_decoder_on_the_cpu_library_gives_the_default_kernels_images(monkeypatch):
    if jax.default_backend() != "cpu":
        pytest.skip("CPU compile options")
    spec, tokenizer, params = _tiny_tokenizer()
    side = spec.patch_nums[-1]
    f_hat = jax.random.normal(jax.random.key(4), (3, side, side, spec.tokenizer.z_channels))

    def decode(options):
        return np.asarray(jax.jit(lambda p, f: tokenizer.apply({"params": p}, f, method=VQVAE.decode),
                                  compiler_options=options)(params, f_hat))

    options = cpu_kernels.conv_options()
    np.testing.assert_allclose(decode(options), decode({}), atol=1e-5)
    monkeypatch.setenv(cpu_kernels.ENV_VAR, "xla")
    assert cpu_kernels.conv_options() == {}


def test_sampling_without_the_encoder_gives_the_same_images():
    spec = specs.model_spec(experiment_config.tiny_model(in_channels=3))
    params = {w: nn.unbox(models.Model(spec).init_params(jax.random.key(i), w))
              for i, w in enumerate(("tokenizer", "transformer"))}
    light = for_sampling(params)
    assert "encoder" not in light["tokenizer"] and "decoder" in light["tokenizer"]
    sampler = Sampler(spec, SamplerSettings(cfg=1.5, top_k=20))
    labels = np.arange(4) % spec.transformer.num_classes
    full = generation.generate(sampler, params, labels, jax.random.key(1), batch_size=4)
    sampler = Sampler(spec, SamplerSettings(cfg=1.5, top_k=20))
    sampler.compile(light, 4)  # compiled before any weight exists, from the trimmed tree
    less = generation.generate(sampler, light, labels, jax.random.key(1), batch_size=4)
    np.testing.assert_array_equal(less["idx_NL"], full["idx_NL"])
    np.testing.assert_allclose(less["images_NHWC"], full["images_NHWC"], atol=1e-6)
