"""Configs load through ml_collections and describe the released architectures exactly."""

import flax.linen as nn
import jax
import numpy as np
import pytest
from absl import flags
from conftest import REPO_ROOT
from ml_collections import config_flags

from srdd_jax import models
from srdd_jax.modes import registry, specs

# Parameter counts of the released checkpoints (buffers excluded), from var_reference.md §2.1/§3.1.
RELEASED = {"d16": 310_283_520, "d20": 600_917_136, "d24": 1_033_399_360,
            "d30": 2_010_020_356, "d36": 2_353_893_904}


def _validate(config):
    """What `experiment.run` checks before anything runs: the mode, then every section."""
    registry.get(config.mode)
    return specs.parse(config)


def _load(variant):
    path = REPO_ROOT / "configs" / "var_imagenet.py"
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", flag_values=flag_values)
    flag_values(["test", f"--config={path}:{variant}"])
    return flag_values.config


@pytest.mark.parametrize("variant", sorted(RELEASED))
def test_released_transformer_sizes(variant):
    spec = specs.model_spec(_load(variant).model)
    shapes = nn.unbox(models.Model(spec).abstract_params("transformer"))
    assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes)) == RELEASED[variant]


def test_released_tokenizer_size():
    shapes = nn.unbox(models.Model(specs.model_spec(_load("d16").model)).abstract_params("tokenizer"))
    assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes)) == 108_948_355


def test_unknown_variant_is_named():
    with pytest.raises(flags.IllegalFlagValueError, match="unknown variant .d99."):
        _load("d99")


@pytest.mark.parametrize("name", ["demo", "ffhq", "afhq", "miniimagenet", "sun397", "var_imagenet",
                                  "image_folder"])
@pytest.mark.parametrize("variant", ["", "tiny"])
def test_experiment_configs_validate(name, variant):

    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", flag_values=flag_values)
    flag_values(["test", f"--config={REPO_ROOT / 'configs' / name}.py:{variant}"])
    _validate(flag_values.config)


@pytest.mark.parametrize("variant", ["", "tiny", "64", "128", "256"])
def test_image_folder_variants_make_images_of_their_size(variant):

    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", flag_values=flag_values)
    flag_values(["test", f"--config={REPO_ROOT / 'configs' / 'image_folder.py'}:{variant}"])
    cfg = flag_values.config
    _validate(cfg)
    assert cfg.model_from_data and cfg.data.source == "image_folder"
    expected = {"": 32, "tiny": 16}.get(variant) or int(variant)
    assert models.Model(specs.model_spec(cfg.model)).image_size == cfg.data.image_size == expected


def test_sampler_settings_that_default_to_none_are_set_on_the_command_line():
    argv = ["test", f"--config={REPO_ROOT / 'configs' / 'demo.py'}",
            "--config.sample.settings.cfg_until=-2", "--config.sample.settings.mr_scales=(2, 3)",
            "--config.sample.settings.scale_ids=(0, 2, 3)"]
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", flag_values=flag_values, sys_argv=argv)
    flag_values(argv)
    settings = specs.sampler_settings(flag_values.config.sample.settings)
    assert (settings.cfg_until, settings.mr_scales, settings.scale_ids) == (-2, (2, 3), (0, 2, 3))
    assert settings.cfg_list is None
    _validate(flag_values.config)
