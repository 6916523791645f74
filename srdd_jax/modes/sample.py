"""Sampling modes: mode=sample (a class grid) and mode=edit (zero-shot inpainting, outpainting
and super-resolution) from a model directory or a released model's name, with the settings that
may change at sampling time applied on top of the saved model's config."""

from __future__ import annotations

import json
import os
import time

import jax
import ml_collections
import numpy as np
from absl import logging

from srdd_jax import errors, models, parallel, pretrained, saved_models
from srdd_jax.data import loading, model_for_data, sources
from srdd_jax.modes import workdir as workdir_record
from srdd_jax.sampling import class_grid, outputs
from srdd_jax.sampling.sampler import Sampler, SamplerSettings

# Model fields that may change at sampling time (they change how, not what, was learned).
SAMPLING_SETTINGS = ("transformer.mask", "transformer.dtype",
                     *(f"transformer.{field}" for field in models.EXECUTION_SETTINGS))


def model_for_sampling(saved: ml_collections.ConfigDict, model_overrides: dict,
                       source: str) -> ml_collections.ConfigDict:
    """The saved model config with the sampling-time settings among `model_overrides` applied.

    model_overrides: {dotted path under config.model: value} that the user set (`main` passes its
    `--config.model.*` flags). A setting in SAMPLING_SETTINGS replaces the saved one; any other
    override must equal the saved value, else errors.ConfigError names the field.
    """
    cfg = saved.copy_and_resolve_references()
    for path, value in sorted(model_overrides.items()):
        *parents, leaf = path.split(".")
        node = cfg
        for name in parents:
            node = node[name]
        if path in SAMPLING_SETTINGS:
            node[leaf] = value
        elif json.dumps(node.get(leaf), default=list) != json.dumps(value, default=list):
            raise errors.ConfigError(
                f"--config.model.{path}={value!r} disagrees with the model in {source} "
                f"({path}={node.get(leaf)!r}): only {', '.join(SAMPLING_SETTINGS)} may change at "
                "sampling time. Drop the override, or train a model with it")
    models.validate(cfg)
    return cfg


def load(config, workdir: str, mesh, model_overrides: dict):
    """(params, the model config to run, its directory) of config.init.model (a model directory
    or a released name; default workdir/model), read into the mesh's shardings."""
    started = time.perf_counter()
    source = pretrained.resolve(config.init.model or os.path.join(workdir, "model"))
    params, saved = saved_models.load_model(source, mesh=mesh)
    model_cfg = model_for_sampling(saved, model_overrides, source)
    logging.info("model: loaded %s in %.1f s (mask %s, %s)", source, time.perf_counter() - started,
                 model_cfg.transformer.mask, model_cfg.transformer.dtype)
    return params, model_cfg, source


def run(config, workdir: str, mesh, model_overrides: dict) -> np.ndarray:
    """mode=sample (workdir/samples/samples.png and .npz) or mode=edit
    (workdir/samples/edit_<task>.png); returns the grid's uint8 images."""
    params, model_cfg, source = load(config, workdir, mesh, model_overrides)
    config = workdir_record.with_model(config, model_cfg)
    if config.mode == "edit" and not config.edit.images:
        check_data_fits(config, source)
    workdir_record.record(workdir, config)
    if config.mode == "sample":
        return sample_grid(config, params, os.path.join(workdir, "samples", "samples.png"), mesh)
    return edit(config, params, os.path.join(workdir, "samples", f"edit_{config.edit.task}.png"),
                mesh)


def check_data_fits(config, model_dir: str) -> None:
    """The data this mode reads must fit the loaded model (evaluate, distill, edit without files)."""
    model_for_data.check(config.model, loading.facts(config.data), fix=(
        f"The model in {model_dir} was trained on other data: point config.data at data like its "
        "own, or use a model trained on this data"))


def sample_grid(config, params: dict, path: str, mesh=None) -> np.ndarray:
    """Samples config.sample.per_class images of every class in config.sample.labels (empty: all
    classes) into one PNG grid, one column per class labelled with its name, and an .npz beside
    it; returns the uint8 images. Every process samples; process 0 writes the files."""
    num_classes = config.model.transformer.num_classes
    if config.sample.labels and not all(0 <= c < num_classes for c in config.sample.labels):
        raise errors.ConfigError(f"config.sample.labels={tuple(config.sample.labels)}: this model "
                                 f"has classes 0..{num_classes - 1}")
    grid = class_grid.sample(params, config.model, config.sample.labels, config.sample.per_class,
                             SamplerSettings.from_config(config.sample.settings), config.sample.seed,
                             config.sample.batch_size, mesh)
    if workdir_record.is_main():
        grid.save(path)
        logging.info("wrote %d samples of %s to %s", len(grid.labels),
                     sources.listed(grid.column_names), path)
    return grid.images


def edit(config, params: dict, path: str, mesh=None) -> np.ndarray:
    """Zero-shot editing of config.edit.images (files; default: the first dataset images).

    Writes a grid with one row per image: input (masked for in/outpainting, low resolution for
    super-resolution), then config.edit.samples results (process 0 writes). Returns the uint8
    grid rows.
    """
    from srdd_jax.sampling import editing

    ed = config.edit
    settings = SamplerSettings.from_config(config.sample.settings)
    sampler = Sampler(config.model, settings, mesh=mesh)
    tokenizer, size = sampler.tokenizer, sampler.tokenizer.image_size
    if ed.images:
        images = np.stack([editing.load_image(p, size) for p in ed.images])
        if config.model.tokenizer.in_channels == 1:
            images = images.mean(axis=-1, keepdims=True)
    else:
        images = loading.load(config.data, config.model,
                              "test" if config.data.source == "fashion_mnist" else "").head(ed.count)
    labels = np.asarray(ed.labels if ed.labels else [config.model.transformer.num_classes] * len(images))
    if ed.task == "super_resolution":
        low = np.asarray(jax.image.resize(images, (len(images), size // ed.factor, size // ed.factor,
                                                   images.shape[-1]), "linear"))
        known_idx, known = editing.super_resolution_constraints(tokenizer, params["tokenizer"], low,
                                                                sampler.layout)
        shown = np.asarray(jax.image.resize(low, images.shape, "nearest"))
    else:
        keep = (editing.load_mask(ed.mask, size) if ed.mask else
                editing.box_mask(size, tuple(ed.box), keep_inside=ed.task == "outpaint"))
        known_idx, known = editing.inpainting_constraints(tokenizer, params["tokenizer"], images,
                                                          keep, sampler.layout)
        shown = images * keep[None, :, :, None] - (1 - keep[None, :, :, None])
    rows = [outputs.to_uint8(shown)]
    for k in range(ed.samples):
        out = sampler.sample(params, labels, jax.random.key(config.sample.seed + k), known_idx, known)
        decoded = sampler.decode(params["tokenizer"], out["f_hat_BhwC"])
        rows.append(outputs.to_uint8(parallel.to_host(decoded)))
    grid_images = np.stack(rows, axis=1).reshape((-1,) + rows[0].shape[1:])
    if workdir_record.is_main():
        outputs.save_grid(path, grid_images, columns=len(rows))
    logging.info("wrote %s edits of %d images to %s", ed.task, len(images), path)
    return grid_images
