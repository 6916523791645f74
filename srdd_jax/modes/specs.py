"""The experiment config read once into typed specs, validated in one place.

Below `modes/`, nothing reads a ConfigDict: each section becomes a frozen dataclass here, and the
library takes those (`models.ModelSpec`, `DataSpec`, `TrainSpec`, `SamplerSettings` and
`GridSpec`, `EvalSpec`). `parse(config)` reads and validates every section; a bad field stops the
run at start-up with its name and the fix, before anything is read or written.
"""

from __future__ import annotations

import dataclasses

import jax
import ml_collections

from srdd_jax import errors, models, spec_fields
from srdd_jax.data.spec import DataSpec, PrepareSpec
from srdd_jax.evaluation.spec import EvalSpec
from srdd_jax.sampling.settings import GridSpec, SamplerSettings
from srdd_jax.training import distill, tokenizer_losses
from srdd_jax.training.spec import TrainSpec

RUNS = ("tokenizer_training", "training", "distill")
EDIT_TASKS = ("inpaint", "outpaint", "super_resolution")
CLASS_EMBEDDING_INITS = ("null", "random")


@dataclasses.dataclass(frozen=True)
class ExperimentSpec:
    """Every section the library reads, typed; the modes read their own small sections (init,
    edit, convert, mesh) from the config directly."""

    mode: str
    seed: int
    model: models.ModelSpec
    data: DataSpec
    runs: dict  # section name (RUNS) -> TrainSpec
    sampling: SamplerSettings
    grid: GridSpec
    evaluate: EvalSpec
    prepare: PrepareSpec

    def run(self, section: str) -> TrainSpec:
        return self.runs[section]


def model_spec(section: ml_collections.ConfigDict) -> models.ModelSpec:
    """config.model as a `models.ModelSpec` (ValueError naming a bad field)."""
    return models.ModelSpec.from_dict(section.to_dict())


def sampler_settings(section: ml_collections.ConfigDict) -> SamplerSettings:
    """config.sample.settings as `SamplerSettings` (unset placeholders keep their defaults)."""
    values = {name: value for name, value in section.to_dict().items() if value is not None}
    return spec_fields.from_dict(SamplerSettings, values, "config.sample.settings")


def grid_spec(section: ml_collections.ConfigDict) -> GridSpec:
    """config.sample (without its settings) as a `GridSpec`."""
    values = {k: v for k, v in section.to_dict().items() if k != "settings"}
    return spec_fields.from_dict(GridSpec, values, "config.sample")


def train_spec(config: ml_collections.ConfigDict, section: str) -> TrainSpec:
    return spec_fields.from_dict(TrainSpec, config[section].to_dict(), f"config.{section}")


def data_spec(section: ml_collections.ConfigDict) -> DataSpec:
    return spec_fields.from_dict(DataSpec, section.to_dict(), "config.data")


def prepare_spec(section: ml_collections.ConfigDict) -> PrepareSpec:
    return spec_fields.from_dict(PrepareSpec, section.to_dict(), "config.prepare")


def eval_spec(section: ml_collections.ConfigDict) -> EvalSpec:
    return spec_fields.from_dict(EvalSpec, section.to_dict(), "config.evaluate")


def parse(config: ml_collections.ConfigDict) -> ExperimentSpec:
    """Reads and validates the whole config; errors.ConfigError names the first bad field."""
    try:
        return _parse(config)
    except (TypeError, ValueError) as error:
        if isinstance(error, errors.KnownError):
            raise
        raise errors.ConfigError(str(error)) from error


def _parse(config: ml_collections.ConfigDict) -> ExperimentSpec:
    model = model_spec(config.model)
    data = data_spec(config.data)
    data.validate()
    runs = {section: train_spec(config, section) for section in RUNS}
    for section, run in runs.items():
        run.validate(section, jax.device_count())
    if runs["training"].cached_tokens and config.mode != "train":
        raise ValueError(f"config.training.cached_tokens is only read by mode=train, not "
                         f"mode={config.mode!r}: leave it empty")
    sampling = sampler_settings(config.sample.settings)
    sampling.validate(model.patch_nums)
    if config.mode == "distill":
        distill.subset_ids(model.patch_nums, runs["distill"].patch_nums)
    tokenizer_losses.validate(runs["tokenizer_training"])
    if config.edit.task not in EDIT_TASKS:
        raise ValueError(f"config.edit.task={config.edit.task!r}: choose one of "
                         f"{', '.join(EDIT_TASKS)}")
    if config.init.class_embedding not in CLASS_EMBEDDING_INITS:
        raise ValueError(f"config.init.class_embedding={config.init.class_embedding!r}: choose one "
                         f"of {', '.join(CLASS_EMBEDDING_INITS)}")
    evaluate = eval_spec(config.evaluate)
    evaluate.validate(model.transformer.num_classes, data.source, config.mode == "evaluate")
    prepare = prepare_spec(config.prepare)
    prepare.validate()
    return ExperimentSpec(config.mode, config.seed, model, data, runs, sampling,
                          grid_spec(config.sample), evaluate, prepare)
