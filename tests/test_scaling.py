"""Scanned blocks, rematerialisation, attention kernels, fast init, the compilation cache, and
model directories written in the per-block layout of earlier versions."""

import json
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO_ROOT, cli_env

from srdd_jax import checkpoints, compilation_cache, experiment_config, losses, models, saved_models, scales
from srdd_jax.modes import specs
from srdd_jax.sampling.sampler import Sampler
from srdd_jax.sampling.settings import SamplerSettings
from srdd_jax.training import optimizer, steps
from srdd_jax.training.spec import OptimSpec
from srdd_jax.transformer import attention, legacy_layout
from srdd_jax.transformer import spec as transformer_spec


def _model(depth: int, **transformer) -> models.ModelSpec:
    cfg = experiment_config.tiny_model()
    cfg.transformer.update(dict(depth=depth, **transformer))
    return specs.model_spec(cfg)


def _abstract(spec, which):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                        nn.unbox(models.Model(spec).abstract_params(which)))


def _train_step_text(spec) -> str:
    model = models.Model(spec)
    tx, _ = optimizer.make_optimizer(OptimSpec(), 10, 2)
    step = steps.make_transformer_step(model.transformer, model.tokenizer, tx)
    state = jax.eval_shape(steps.unboxed_init(lambda r: model.create_params(r, "transformer"), tx),
                           jax.random.key(0))
    size = model.image_size
    batch = {"image": jax.ShapeDtypeStruct((2, size, size, 1), jnp.float32),
             "label": jax.ShapeDtypeStruct((2,), jnp.int32)}
    return jax.jit(step).lower(state, _abstract(spec, "tokenizer"), batch,
                               jax.random.key(1)).as_text()


def _sampler_text(spec, mask: str) -> str:
    sampler = Sampler(spec, SamplerSettings(cfg=1.5, top_k=8), mask=mask)
    length = sampler.sequence_length
    return sampler.jitted(2).lower(
        _abstract(spec, "tokenizer"), _abstract(spec, "transformer"), sampler.plan,
        jax.ShapeDtypeStruct((2,), jnp.int32), jax.random.key(0), jax.ShapeDtypeStruct((), jnp.int32),
        jax.ShapeDtypeStruct((2, length), jnp.int32), jax.ShapeDtypeStruct((2, length), bool)
    ).as_text()


def test_programs_hold_one_block_whatever_the_depth():
    """The train step and the samplers are the same program at depth 2 and 9, up to the layer
    count: the blocks are scanned, not unrolled (compile time does not grow with depth)."""
    shallow, deep = _model(2), _model(9)
    assert len(_train_step_text(shallow)) == len(_train_step_text(deep))
    for mask in ("var", "markov"):
        assert len(_sampler_text(shallow, mask)) == len(_sampler_text(deep, mask))


def test_parameters_are_stacked_over_layers_with_a_logical_axis():
    spec = _model(3)
    boxed = models.Model(spec).abstract_params("transformer")
    kernel = boxed["blocks"]["ffn"]["fc1"]["kernel"]
    assert kernel.names == ("layers", "embed", "mlp")
    assert kernel.value.shape == (3, spec.transformer.embed_dim, 4 * spec.transformer.embed_dim)
    assert not any(name.startswith("blocks_") for name in boxed)


@pytest.mark.parametrize("drop_path_rate", [0.0, 0.3])
def test_remat_policies_give_the_same_loss_and_gradients(drop_path_rate):
    spec = _model(3, drop_path_rate=drop_path_rate)
    params = nn.unbox(models.Model(spec).init_params(jax.random.key(0), "transformer"))
    length = scales.sequence_length(spec.patch_nums)
    x = jax.random.normal(jax.random.key(1), (4, length - 1, spec.tokenizer.z_channels))
    idx = jax.random.randint(jax.random.key(2), (4, length), 0, spec.tokenizer.vocab_size)
    labels = jnp.arange(4) % 10
    results = {}
    for remat in ("none", "dots", "full"):
        model = models.Model(spec.with_transformer(remat=remat)).transformer
        grad_fn = jax.jit(jax.value_and_grad(steps.transformer_loss, argnums=1, has_aux=True),
                          static_argnums=(0, 6))
        (loss, _), grads = grad_fn(model, params, x, idx, labels, jax.random.key(3), 0.0)
        results[remat] = (float(loss), grads)
    for remat in ("dots", "full"):
        assert results[remat][0] == pytest.approx(results["none"][0], abs=1e-6)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5),
                     results[remat][1], results["none"][1])


def test_drop_path_rates_grow_with_depth_from_zero():
    """Block i drops its branches with rate drop_path_rate * i / (depth - 1) (VAR's linspace): a
    one-block model never drops (train = eval without label dropout), a later block does."""
    spec = _model(1, drop_path_rate=0.5, cond_drop_rate=0.0, init_adaln_gamma=1.0)
    params = nn.unbox(models.Model(spec).init_params(jax.random.key(0), "transformer"))
    length = scales.sequence_length(spec.patch_nums)
    x = jax.random.normal(jax.random.key(1), (4, length - 1, spec.tokenizer.z_channels))
    model = models.Model(spec).transformer
    labels = jnp.arange(4)
    evaluated = model.apply({"params": params}, labels, x)
    trained = model.apply({"params": params}, labels, x, train=True,
                          rngs={"dropout": jax.random.key(5)})
    np.testing.assert_allclose(trained, evaluated, atol=1e-6)
    deeper = _model(2, drop_path_rate=0.9, cond_drop_rate=0.0, init_adaln_gamma=1.0)
    params = nn.unbox(models.Model(deeper).init_params(jax.random.key(0), "transformer"))
    model = models.Model(deeper).transformer
    evaluated = model.apply({"params": params}, labels, x)
    trained = [model.apply({"params": params}, labels, x, train=True,
                           rngs={"dropout": jax.random.key(seed)}) for seed in range(4)]
    assert any(not np.allclose(t, evaluated, atol=1e-6) for t in trained)


def test_attention_implementation_is_chosen_and_checked():
    assert attention.resolve("auto", jnp.float32, 64) == "xla"
    if jax.default_backend() != "gpu":
        assert attention.resolve("auto", jnp.bfloat16, 64) == "xla"
        with pytest.raises(ValueError, match="model.transformer.attention='cudnn' needs"):
            attention.resolve("cudnn", jnp.bfloat16, 64)
    with pytest.raises(ValueError, match="model.transformer.attention='flash'"):
        _model(2, attention="flash")
    with pytest.raises(ValueError, match="model.transformer.remat='some'"):
        _model(2, remat="some")


def test_xla_attention_masks_keys_past_the_given_lengths():
    q, k, v = (jax.random.normal(jax.random.key(i), (2, 3, 5, 8)) for i in range(3))  # B H L D
    lengths = jnp.array([5, 2])
    out = attention.attend(q, k, v, 0.5, "xla", lengths)
    np.testing.assert_allclose(out[0], attention.attend(q[:1], k[:1], v[:1], 0.5)[0], atol=1e-6)
    np.testing.assert_allclose(out[1], attention.attend(q[1:], k[1:, :, :2], v[1:, :, :2], 0.5)[0],
                               atol=1e-6)
    logits = jnp.einsum("bhqd,bhkd->bhqk", q, k) * 0.5
    expected = jnp.einsum("bhqk,bhkd->bqhd", jax.nn.softmax(logits, axis=-1), v)
    np.testing.assert_allclose(attention.attend(q, k, v, 0.5), expected, atol=1e-6)


def test_creating_parameters_does_not_run_the_model_at_full_size():
    """No value in the init program of either model is as large as a full-size activation."""
    spec = _model(2)
    model = models.Model(spec)
    length = scales.sequence_length(spec.patch_nums)
    image = model.image_size
    for which, full in (("transformer", length * spec.transformer.embed_dim),
                        ("tokenizer", image * image * spec.tokenizer.ch)):
        jaxpr = jax.make_jaxpr(lambda r, w=which: model.create_params(r, w))(jax.random.key(0))
        leaves = jax.tree.leaves(nn.unbox(model.abstract_params(which)))
        params = {int(np.prod(x.shape)) for x in leaves}
        kernel_io = {tuple(x.shape[-2:]) for x in leaves if len(x.shape) == 4}

        def folded_kernel(shape, kernel_io=kernel_io):  # an upsampling conv's kernel folded to 2x2
            return len(shape) == 4 and max(shape[:2]) <= 3 and tuple(shape[-2:]) in kernel_io

        sizes = [int(np.prod(v.aval.shape)) for eqn in jaxpr.jaxpr.eqns for v in eqn.outvars
                 if hasattr(v.aval, "shape") and not folded_kernel(v.aval.shape)]
        activations = [s for s in sizes if s not in params]
        assert max(activations) < full, (which, max(activations), full)


def test_compilation_cache_directory_env_and_off(tmp_path, monkeypatch):
    before = jax.config.jax_compilation_cache_dir
    try:
        assert compilation_cache.enable(str(tmp_path / "a")) == str(tmp_path / "a")
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "a")
        monkeypatch.setenv(compilation_cache.ENV_VAR, str(tmp_path / "b"))
        assert compilation_cache.enable() == str(tmp_path / "b")
        monkeypatch.setenv(compilation_cache.ENV_VAR, "off")
        assert compilation_cache.enable() is None
        assert jax.config.jax_compilation_cache_dir is None
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home"))
        monkeypatch.delenv(compilation_cache.ENV_VAR)
        assert compilation_cache.enable() == str(tmp_path / "home" / "srdd_jax" / "xla")
    finally:
        compilation_cache.enable(before or "off")


def _unstack_blocks(transformer_params: dict, depth: int) -> dict:
    """The per-block layout (blocks_0 .. blocks_{N-1}) that srdd_jax wrote before it scanned."""
    rest = {k: v for k, v in transformer_params.items() if k != "blocks"}
    for i in range(depth):
        rest[f"blocks_{i}"] = jax.tree.map(lambda x, i=i: np.asarray(x)[i],
                                           transformer_params["blocks"])
    return rest


def test_model_directory_in_the_per_block_layout_still_samples(tiny_demo_workdir, tmp_path):
    params, spec = saved_models.load_model(tiny_demo_workdir / "model")
    params = jax.device_get(params)
    old = {"tokenizer": params["tokenizer"],
           "transformer": _unstack_blocks(params["transformer"], spec.transformer.depth)}
    assert legacy_layout.is_unstacked(old["transformer"])
    old_dir = tmp_path / "old_model"
    saved_models.save_model(str(old_dir), old, spec)
    raw = json.loads((old_dir / checkpoints.CONFIG_FILE).read_text())
    for field in ("remat", "attention"):  # fields that did not exist then
        del raw["transformer"][field]
    (old_dir / checkpoints.CONFIG_FILE).write_text(json.dumps(raw))
    (old_dir / checkpoints.INTEGRITY_FILE).unlink()  # nor did integrity records

    loaded, loaded_spec = saved_models.load_model(str(old_dir))
    jax.tree.map(np.testing.assert_array_equal, loaded, params)
    assert loaded_spec.transformer.remat == transformer_spec.DEFAULT_REMAT
    workdir = tmp_path / "sample_old"
    done = subprocess.run([sys.executable, "-m", "srdd_jax.main", "--config=configs/demo.py:tiny",
                           f"--workdir={workdir}", "--config.mode=sample",
                           f"--config.init.model={old_dir}"], cwd=REPO_ROOT, env=cli_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (workdir / "samples" / "samples.png").is_file()
    assert "stacked into the current layout" in done.stderr


def test_stacking_rejects_gaps_in_the_block_numbers():
    with pytest.raises(ValueError, match="numbered 0..N-1"):
        legacy_layout.stack_blocks({"blocks_0": {"w": np.zeros(2)}, "blocks_2": {"w": np.zeros(2)}})


def test_cross_entropy_matches_one_hot_label_smoothing():
    import optax

    logits = jax.random.normal(jax.random.key(0), (3, 5, 11)) * 3
    targets = jax.random.randint(jax.random.key(1), (3, 5), 0, 11)
    for smoothing in (0.0, 0.1):
        reference = optax.softmax_cross_entropy(
            logits, optax.smooth_labels(jax.nn.one_hot(targets, 11), smoothing))
        np.testing.assert_allclose(losses.cross_entropy(logits, targets, smoothing), reference,
                                   atol=1e-5)


def test_parameters_are_created_and_loaded_directly_in_their_shardings(tmp_path):
    from srdd_jax import parallel

    spec = _model(2)
    mesh = parallel.make_mesh(2, 4)
    fsdp = mesh.shape["fsdp"]
    params = {w: nn.unbox(models.Model(spec).init_params(jax.random.key(0), w, mesh=mesh))
              for w in ("tokenizer", "transformer")}
    kernel = params["transformer"]["blocks"]["ffn"]["fc1"]["kernel"]
    assert kernel.addressable_shards[0].data.shape[1] == kernel.shape[1] // fsdp
    saved_models.save_model(str(tmp_path / "m"), jax.device_get(params), spec)
    loaded, _ = saved_models.load_model(str(tmp_path / "m"), mesh=mesh)
    kernel = loaded["transformer"]["blocks"]["ffn"]["fc1"]["kernel"]
    assert len(kernel.sharding.device_set) == 8
    assert kernel.addressable_shards[0].data.shape[1] == kernel.shape[1] // fsdp
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(loaded), jax.device_get(params))
