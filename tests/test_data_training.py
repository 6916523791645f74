"""TFDS sources (in memory and streamed), token caches, the weight-decay schedule and profiling."""

import dataclasses
import io

import flax.linen as nn
import jax
import numpy as np
import pytest
from PIL import Image
from test_training import Recorder, _config, _synthetic_source

from srdd_jax import models, parallel, saved_models
from srdd_jax.data import loading, sources, tokens
from srdd_jax.modes import specs, tokenize
from srdd_jax.training import loop, optimizer, runs, steps

tfds = pytest.importorskip("tensorflow_datasets")

NUM_IMAGES = 21  # 20 readable images of varied sizes and one corrupt file


class TinyImages(tfds.core.GeneratorBasedBuilder):
    """A two-class image dataset built locally, so no test needs the network."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)),
            "label": tfds.features.ClassLabel(names=["even", "odd"])}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        rng = np.random.default_rng(0)
        for i in range(NUM_IMAGES - 1):
            pixels = rng.integers(0, 256, (20 + i % 3, 24, 3)).astype(np.uint8)
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, format="PNG")
            yield i, {"image": io.BytesIO(buffer.getvalue()), "label": i % 2}
        yield NUM_IMAGES - 1, {"image": io.BytesIO(b"\x89PNG not really"), "label": 0}


@pytest.fixture(scope="module")
def tiny_tfds(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    TinyImages(data_dir=data_dir).download_and_prepare()
    return data_dir


def _tfds_config(data_dir, **data):
    cfg = _config()
    cfg.data.update(dict(dict(source="tfds", name="tiny_images", tfds_data_dir=data_dir), **data))
    cfg.model.transformer.num_classes = 2
    return cfg


def _load(cfg):
    return loading.load(specs.data_spec(cfg.data), specs.model_spec(cfg.model))


def test_tfds_in_memory_source(tiny_tfds):
    data = _load(_tfds_config(tiny_tfds))
    assert isinstance(data, sources.Source) and data.class_names == ("even", "odd")
    assert data.images.shape == (NUM_IMAGES - 1, 16, 16, 1) and len(data.skipped) == 1
    assert data.images.dtype == np.uint8 and set(data.labels) == {0, 1}


def test_tfds_stream_is_deterministic_resumable_and_skips_unreadable(tiny_tfds):
    stream = _load(_tfds_config(tiny_tfds, max_in_memory_mb=0.0))
    assert not isinstance(stream, sources.Source) and stream.num_examples == NUM_IMAGES
    first = stream.batches(4, seed=3)
    assert first.steps_per_epoch == 5
    batches = [next(first) for _ in range(8)]  # crosses into the second epoch
    assert batches[0]["image"].shape == (4, 16, 16, 1) and batches[0]["image"].dtype == np.float32
    assert len(stream.skipped) == 1  # the corrupt image, met once in the first epoch
    assert all(np.abs(b["image"]).max() <= 1.0 and np.ptp(b["image"], axis=(1, 2, 3)).min() > 0
               for b in batches)  # no blank stand-ins
    epochs = [np.concatenate([b["label"] for b in batches[:5]]), batches[5]["label"]]
    assert not np.array_equal(epochs[0][:4], epochs[1])  # each epoch has its own order
    again = stream.batches(4, seed=3)
    for _ in range(3):
        next(again)
    resumed = stream.batches(4, seed=3)
    resumed.set_state(again.get_state())
    for want in batches[3:]:
        got = next(resumed)
        np.testing.assert_array_equal(got["image"], want["image"])
        np.testing.assert_array_equal(got["label"], want["label"])
    halves = [stream.batches(4, seed=3, process_index=i, process_count=2) for i in range(2)]
    assert [h.steps_per_epoch for h in halves] == [5, 5]
    assert all(next(h)["image"].shape == (2, 16, 16, 1) for h in halves)


def test_tfds_errors_name_the_field_and_the_fix(tiny_tfds, tmp_path):
    cfg = _tfds_config(tiny_tfds, name="")
    with pytest.raises(ValueError, match=r"config\.data\.name is empty"):
        specs.parse(cfg)
    with pytest.raises(ValueError, match="not a dataset known to tensorflow-datasets"):
        _load(_tfds_config(tiny_tfds, name="no_such_dataset_xyz"))
    with pytest.raises(ValueError, match=r"config\.data\.split='validation'.*splits train"):
        _load(_tfds_config(tiny_tfds, split="validation"))
    with pytest.raises(ValueError, match=r"needs a manual download: set config\.data\.manual_dir"):
        _load(_tfds_config(str(tmp_path), name="imagenet2012"))
    with pytest.raises(ValueError, match=r"config\.data\.manual_dir='/nonexistent' does not exist"):
        _load(_tfds_config(str(tmp_path), name="imagenet2012",
                                          manual_dir="/nonexistent"))


@pytest.mark.parametrize("field,value,message", [
    ("training.profile_steps", 6, "config.training.profile_steps=6"),
    ("training.optim.weight_decay", -0.1, "config.training.optim.weight_decay=-0.1"),
    ("data.shuffle_buffer", 0, "config.data.shuffle_buffer=0"),
])
def test_new_bad_config_values_are_named(field, value, message):
    cfg = _config()
    section, *rest = field.split(".")
    node = cfg[section]
    for name in rest[:-1]:
        node = node[name]
    node[rest[-1]] = value
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        specs.parse(cfg)
    cfg = _config(mode="sample")
    cfg.training.cached_tokens = "tokens/train"
    with pytest.raises(ValueError, match=r"config\.training\.cached_tokens is only read by mode=train"):
        specs.parse(cfg)


def _tokenizer(spec, seed=7):
    return nn.unbox(models.Model(spec).init_params(jax.random.key(seed), "tokenizer"))


def test_cached_tokens_give_the_image_loss_and_refuse_other_tokenizers(tmp_path, monkeypatch):
    """Two-step runs from images and from the cache agree; the cached run is profiled."""
    cfg = _config(mode="tokenize")
    spec = specs.model_spec(cfg.model)
    mesh = parallel.make_mesh(1, 1, jax.devices()[:1])
    source = _synthetic_source(n=20)
    tok_params = _tokenizer(spec)
    # mode=tokenize on these images, with this tokenizer (as config.init.tokenizer).
    saved_models.save_model(str(tmp_path / "init"), {"tokenizer": tok_params}, spec)
    cfg.init.tokenizer = str(tmp_path / "init")
    monkeypatch.setattr(loading, "load_logged", lambda data, model, split="": source)
    directory = tokenize.run(cfg, specs.parse(cfg), str(tmp_path), mesh, {})
    assert directory == str(tmp_path / "tokens" / "train")
    cache = tokens.load_cache(directory)
    assert cache.tokens.shape == (20, 21) and cache.tokens.dtype == np.int16
    np.testing.assert_array_equal(cache.labels, source.labels)
    tokens.check_tokenizer(cache, spec, tok_params, directory)

    cfg.training.update(dict(steps=2, checkpoint_every=2, log_every=1))
    run = specs.train_spec(cfg, "training")
    tx, _ = optimizer.make_optimizer(run.optim, run.steps, run.batch_size)
    step = steps.make_transformer_step(models.Model(spec).transformer, models.Model(spec).tokenizer, tx)
    losses = {}
    for name, iterator in (("images", source.batches(8, seed=1)), ("tokens", cache.batches(8, 1))):
        run = dataclasses.replace(run, profile_steps=int(name == "tokens"))
        recorder = Recorder()
        loop.train("transformer", run, str(tmp_path / name), mesh, iterator,
                   lambda rng: models.Model(spec).init_params(rng, "transformer"), tx, step, cfg.seed,
                   runs.transformer_context(spec, str(tmp_path)), frozen=(tok_params,),
                   frozen_shardings=(parallel.replicated(mesh),), writer=recorder)
        losses[name] = [recorder.scalars[s]["loss"] for s in (1, 2)]
    assert losses["tokens"] == pytest.approx(losses["images"], abs=1e-6)
    profile = tmp_path / "tokens" / "logs" / "transformer" / "plugins" / "profile"
    assert list(profile.rglob("*.xplane.pb")) and not (tmp_path / "images" / "logs" / "transformer"
                                                       / "plugins").exists()

    with pytest.raises(ValueError, match="other tokenizer parameters.*--config.mode=tokenize"):
        tokens.check_tokenizer(cache, spec, _tokenizer(spec, seed=8), directory)
    other = spec.replace(patch_nums=(1, 2, 3, 4))
    with pytest.raises(ValueError, match="other patch_nums"):
        tokens.check_tokenizer(cache, other, tok_params, directory)
    with pytest.raises(FileNotFoundError, match="--config.mode=tokenize"):
        tokens.load_cache(str(tmp_path / "missing"))


def test_weight_decay_follows_vars_cosine():
    schedule = optimizer.wd_schedule(0.05, 0.08, total_steps=11)
    assert float(schedule(0)) == pytest.approx(0.05) and float(schedule(10)) == pytest.approx(0.08)
    assert float(schedule(5)) == pytest.approx(0.065)
    cfg = _config()
    cfg.training.optim.update(dict(weight_decay=0.05, weight_decay_end=0.08, warmup_steps=2))
    optim = specs.train_spec(cfg, "training").optim
    tx, lr = optimizer.make_optimizer(optim, 11, 256)
    params = {"kernel": np.ones((2, 2), np.float32)}
    state = tx.init(params)
    zero = jax.tree.map(np.zeros_like, params)
    decays = []
    for step in range(11):  # zero gradients: the update is exactly -lr(t) * wd(t) * param
        updates, state = tx.update(zero, state, params)
        decays.append(-float(updates["kernel"][0, 0]) / float(lr(step)))
    assert decays[0] == pytest.approx(0.05, rel=1e-5) and decays[-1] == pytest.approx(0.08, rel=1e-5)
    optim = dataclasses.replace(optim, weight_decay_end=-1.0)  # the default: constant, as before
    tx, lr = optimizer.make_optimizer(optim, 11, 256)
    assert "WeightDecaySchedule" not in repr(tx.init(params))
    updates, _ = tx.update(zero, tx.init(params), params)
    assert -float(updates["kernel"][0, 0]) / float(lr(0)) == pytest.approx(0.05, rel=1e-5)
