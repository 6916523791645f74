"""Logits with parameters and batch sharded over a (data, fsdp) mesh of 8 CPU devices."""

import math

import jax
import numpy as np
import pytest

from srdd_jax import models, parallel


@pytest.mark.parametrize("data,fsdp", [(2, 4), (1, 8)])
def test_sharded_logits_equal_single_device(reference, converted, data, fsdp):
    if jax.device_count() < 8:
        pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=8 (set in conftest)")
    spec, params = converted
    io = reference["io"]
    reps = 8 // math.gcd(len(io["labels"]), 8)  # a batch that really splits over 8 devices
    labels = np.tile(io["labels"], reps)
    tokens = np.tile(io["var_input"], (reps, 1, 1))
    module = models.Model(spec.with_transformer(mask="var")).transformer
    variables = {"params": params["transformer"]}
    single = jax.jit(module.apply)(variables, labels, tokens)

    mesh = parallel.make_mesh(data, fsdp)
    shardings = {"params": models.Model(spec).shardings(mesh, "transformer")}
    sharded_vars = jax.device_put(variables, shardings)
    kernel = sharded_vars["params"]["blocks"]["ffn"]["fc1"]["kernel"]
    assert len(kernel.sharding.device_set) == 8
    width = kernel.shape[1]
    assert kernel.addressable_shards[0].data.shape[1] == (width // fsdp if width % fsdp == 0
                                                          else width)
    batch = parallel.batch_sharding(mesh, 1)
    tokens_sharding = parallel.batch_sharding(mesh, 3)
    step = jax.jit(module.apply, in_shardings=(shardings, batch, tokens_sharding),
                   out_shardings=parallel.batch_sharding(mesh, 3))
    sharded = step(sharded_vars, labels, tokens)
    assert sharded.sharding.shard_shape(sharded.shape)[0] == len(labels) // 8
    np.testing.assert_allclose(np.asarray(sharded), np.asarray(single), atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.asarray(sharded)[:len(io["labels"])], io["logits_var"],
                               atol=1e-3, rtol=0)


def test_mesh_rejects_sizes_that_do_not_use_the_devices():
    with pytest.raises(ValueError, match="does not use the"):
        parallel.make_mesh(3, 3)
