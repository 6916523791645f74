"""Which model a mode runs: fitted to the data (training modes), or a saved model directory or
released name with the settings that may change at sampling time (sample, edit, evaluate)."""

from __future__ import annotations

import dataclasses
import json
import os
import time

from absl import logging

from srdd_jax import errors, models, pretrained, saved_models
from srdd_jax.data import loading, model_for_data, sources, tokens
from srdd_jax.modes.specs import ExperimentSpec


def resolve_dir(name_or_dir: str) -> str:
    """A model directory, or the converted directory of a released name (`pretrained`)."""
    return pretrained.resolve(name_or_dir) if name_or_dir else ""


def data_facts(specs: ExperimentSpec) -> sources.DataFacts:
    """Channels and class names of the data (or of training.cached_tokens in mode=train), read
    without loading the images."""
    cached = specs.run("training").cached_tokens
    if specs.mode == "train" and cached:
        cache = tokens.load_cache(cached)
        return sources.DataFacts(None, cache.class_names,
                                 f"the sequences in the token cache {cached}")
    return loading.facts(specs.data)


def for_training(specs: ExperimentSpec, model_from_data: bool) -> models.ModelSpec:
    """The model a training run (train, train_tokenizer, tokenize) runs with: the config's,
    filled from the data with model_from_data, else checked against it (a disagreement stops the
    run naming the field, the data's value and the fix). The data's class names are recorded in
    its class_names either way."""
    facts = data_facts(specs)
    if model_from_data:
        return model_for_data.fit(specs.model, facts, specs.data.image_size)
    model_for_data.check(specs.model, facts, specs.data.image_size)
    return model_for_data.with_class_names(specs.model, facts)


def with_sampling_overrides(saved: models.ModelSpec, overrides: dict,
                            source: str) -> models.ModelSpec:
    """The saved spec with the sampling-time settings among `overrides` applied.

    overrides: {dotted path under config.model: value} that the user set (`main` passes its
    `--config.model.*` flags). A field of kind sampling or execution (`transformer/spec.py`)
    replaces the saved one; any other override must equal the saved value, else
    errors.ConfigError names the field.
    """
    allowed = models.ModelSpec.field_paths(models.SAMPLING) + models.ModelSpec.field_paths(
        models.EXECUTION)
    raw = saved.to_dict()
    changes = {}
    for path, value in sorted(overrides.items()):
        *parents, leaf = path.split(".")
        node = raw
        for name in parents:
            node = node.get(name, {}) if isinstance(node, dict) else {}
        if path in allowed:
            changes[leaf] = value
        elif json.dumps(node.get(leaf), default=list) != json.dumps(value, default=list):
            raise errors.ConfigError(
                f"--config.model.{path}={value!r} disagrees with the model in {source} "
                f"({path}={node.get(leaf)!r}): only {', '.join(allowed)} may change at "
                "sampling time. Drop the override, or train a model with it")
    try:
        return saved.with_transformer(**changes) if changes else saved
    except ValueError as error:
        raise errors.ConfigError(str(error)) from error


def saved(init_model: str, workdir: str, mesh, overrides: dict):
    """(params, the model spec to run, its directory) of init_model (a model directory or a
    released name; default workdir/model), read into the mesh's shardings."""
    started = time.perf_counter()
    source = resolve_dir(init_model or os.path.join(workdir, "model"))
    params, spec = saved_models.load_model(source, mesh=mesh)
    spec = with_sampling_overrides(spec, overrides, source)
    logging.info("model: loaded %s in %.1f s (mask %s, %s)", source, time.perf_counter() - started,
                 spec.transformer.mask, spec.transformer.dtype)
    return params, spec, source


def with_model(specs: ExperimentSpec, spec: models.ModelSpec) -> ExperimentSpec:
    """The experiment's specs running `spec` as its model."""
    return dataclasses.replace(specs, model=spec)
