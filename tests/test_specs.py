"""Typed specs: each field declared once with its kind, read once from the config, and model
directories written before the specs still read (fixtures written by main at 4111b66)."""

import dataclasses
import json
import pathlib

import flax.linen as nn
import jax
import numpy as np
import pytest

from srdd_jax import experiment_config, models
from srdd_jax.modes import specs
from srdd_jax.sampling import plan
from srdd_jax.tokenizer.spec import TokenizerSpec
from srdd_jax.transformer.spec import TransformerSpec

FIXTURES = pathlib.Path(__file__).with_name("fixtures")


def _old_config() -> dict:
    return json.loads((FIXTURES / "model_config_main_4111b66.json").read_text())


def test_a_model_directory_config_from_before_the_specs_reads_and_writes_back_unchanged():
    raw = _old_config()
    spec = models.ModelSpec.from_dict(raw)
    assert json.loads(json.dumps(spec.to_dict())) == raw
    assert spec.class_names == tuple("abcdefghij") and spec.transformer.remat == "none"


def test_its_parameter_layout_is_the_one_main_wrote():
    """Names, shapes and dtypes of every array the spec's model makes equal what main saved for
    it: its directories' arrays load into these modules."""
    spec = models.ModelSpec.from_dict(_old_config())
    layout = json.loads((FIXTURES / "model_layout_main_4111b66.json").read_text())
    made = {}
    for which in models.WHICH:
        leaves = jax.tree_util.tree_flatten_with_path(
            nn.unbox(models.Model(spec).abstract_params(which)))[0]
        for path, leaf in leaves:
            name = "/".join([which] + [str(getattr(k, "key", k)) for k in path])
            made[name] = {"shape": list(leaf.shape), "dtype": str(leaf.dtype)}
    assert made == layout


def test_fields_that_older_directories_lack_take_their_defaults():
    raw = _old_config()
    for field in ("remat", "attention"):
        del raw["transformer"][field]
    del raw["class_names"], raw["tokenizer_patch_nums"]
    spec = models.ModelSpec.from_dict(raw)
    assert (spec.transformer.remat, spec.transformer.attention) == ("full", "auto")
    assert spec.class_names == () and spec.tokenizer_patch_nums == ()


def test_an_unknown_field_is_named():
    raw = _old_config()
    raw["transformer"]["heads"] = 4
    with pytest.raises(ValueError, match=r"model.transformer has unknown fields \['heads'\]"):
        models.ModelSpec.from_dict(raw)


def test_each_field_has_one_kind_and_the_kinds_decide_what_may_change():
    assert models.ModelSpec.field_paths(models.EXECUTION) == ("transformer.remat",
                                                              "transformer.attention")
    assert models.ModelSpec.field_paths(models.SAMPLING) == ("transformer.mask",
                                                             "transformer.dtype")
    identity = models.ModelSpec().training_identity()
    assert set(identity["transformer"]) == {f.name for f in dataclasses.fields(TransformerSpec)} - {
        "remat", "attention"}
    assert identity["tokenizer"] == dataclasses.asdict(TokenizerSpec())


def test_the_config_builders_take_their_defaults_from_the_specs():
    assert experiment_config.tokenizer_config().to_dict() == dataclasses.asdict(TokenizerSpec())
    assert experiment_config.transformer_config(20).to_dict() == dataclasses.asdict(
        TransformerSpec.for_depth(20))
    assert specs.model_spec(experiment_config.model_config()) == models.ModelSpec()
    released_like = models.ModelSpec().with_transformer(mask="var", depth=20, embed_dim=1280)
    assert specs.model_spec(experiment_config.model_section(released_like)) == released_like


def test_the_cfg_scale_changes_form_once_on_its_way_to_the_guided_logits():
    """config float -> SamplerSettings.cfg (the same float) -> the plan's (K,) weights."""
    config = experiment_config.base_config(experiment_config.tiny_model())
    config.sample.settings.cfg = 3.0
    parsed = specs.parse(config)
    assert parsed.sampling.cfg == 3.0
    weights = plan.make_plan(parsed.model, parsed.sampling).weights_K
    np.testing.assert_allclose(weights, [0.0, 1.5, 3.0])


def test_parse_reads_every_section_into_its_spec():
    config = experiment_config.base_config(experiment_config.tiny_model())
    parsed = specs.parse(config)
    assert parsed.run("training").optim.base_lr == config.training.optim.base_lr
    assert parsed.run("tokenizer_training").disc_optim.base_lr == 4e-4
    assert parsed.data.source == "fashion_mnist" and parsed.evaluate.per_class == 100
    assert parsed.grid.per_class == config.sample.per_class
    config.training.optim.beta3 = 0.5
    with pytest.raises(ValueError, match=r"config.training.optim has unknown fields \['beta3'\]"):
        specs.parse(config)
