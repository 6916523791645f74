"""Starting a transformer from a saved model with another number of classes (VAR's 1000 ImageNet
classes for the paper's 1-, 3-, 100- and 397-class datasets)."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from srdd_jax import experiment_config, models, saved_models
from srdd_jax.modes import registry, specs
from srdd_jax.training import runs


@pytest.fixture(scope="module")
def ten_class_model(tmp_path_factory):
    """A tiny 10-class transformer saved as a model directory; returns (directory, params)."""
    spec = specs.model_spec(experiment_config.tiny_model(num_classes=10))
    params = {"transformer": nn.unbox(models.Model(spec).init_params(jax.random.key(1), "transformer"))}
    directory = tmp_path_factory.mktemp("ten_classes") / "model"
    saved_models.save_model(directory, jax.device_get(params), spec)
    return str(directory), jax.device_get(params["transformer"])


def _init(directory: str, num_classes: int, class_embedding: str = "null"):
    config = experiment_config.base_config(experiment_config.tiny_model(num_classes=num_classes))
    config.init.transformer, config.init.class_embedding = directory, class_embedding
    spec = _validate(config).model
    rng = jax.random.key(7)
    init = runs.transformer_init(spec, config.init.transformer, config.init.class_embedding)
    return spec, jax.device_get(nn.unbox(init(rng))), rng


def _validate(config):
    """What `experiment.run` checks before anything runs: the mode, then every section."""
    registry.get(config.mode)
    return specs.parse(config)


def _without_classes(tree: dict) -> dict:
    return {name: value for name, value in tree.items() if name != "class_emb"}


@pytest.mark.parametrize("class_embedding", ["null", "random"])
def test_three_classes_from_ten(ten_class_model, class_embedding):
    directory, saved = ten_class_model
    spec, params, rng = _init(directory, 3, class_embedding)
    emb, saved_emb = params["class_emb"]["embedding"], saved["class_emb"]["embedding"]
    assert emb.shape == (4, saved_emb.shape[1])
    np.testing.assert_array_equal(emb[3], saved_emb[10])  # the null class stays the null class
    if class_embedding == "null":
        np.testing.assert_array_equal(emb[:3], np.repeat(saved_emb[10:], 3, axis=0))
    else:
        fresh = nn.unbox(models.Model(spec).init_params(rng, "transformer"))
        np.testing.assert_allclose(emb[:3], fresh["class_emb"]["embedding"][:3], rtol=1e-6)
    jax.tree.map(np.testing.assert_array_equal, _without_classes(params), _without_classes(saved))


def test_same_classes_loads_unchanged(ten_class_model):
    directory, saved = ten_class_model
    _, params, _ = _init(directory, 10)
    jax.tree.map(np.testing.assert_array_equal, params, saved)


def test_other_mismatch_still_fails(ten_class_model):
    config = experiment_config.base_config(experiment_config.tiny_model(num_classes=3))
    config.init.transformer = ten_class_model[0]
    config.model.transformer.depth = 1
    with pytest.raises(ValueError, match="only the number of classes may differ"):
        runs.transformer_init(specs.model_spec(config.model), config.init.transformer,
                              config.init.class_embedding)


def test_class_embedding_option_is_validated():
    config = experiment_config.base_config(experiment_config.tiny_model())
    config.init.class_embedding = "zeros"
    with pytest.raises(ValueError, match="config.init.class_embedding='zeros'"):
        _validate(config)
