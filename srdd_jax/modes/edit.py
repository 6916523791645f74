"""mode=edit: zero-shot inpainting, outpainting and super-resolution (`sampling/editing.py`) with
a model directory or a released model's name."""

from __future__ import annotations

import os

import jax
import numpy as np
from absl import logging

from srdd_jax import image_grids, parallel
from srdd_jax.data import loading, model_for_data
from srdd_jax.modes import model_resolver
from srdd_jax.modes import workdir as workdir_record
from srdd_jax.modes.specs import ExperimentSpec
from srdd_jax.sampling import editing
from srdd_jax.sampling.sampler import Sampler

READ_ONLY = True


def run(config, specs: ExperimentSpec, workdir: str, mesh, overrides: dict) -> np.ndarray:
    """Edits config.edit.images (files; default: the first dataset images) and writes a grid with
    one row per image to workdir/samples/edit_<task>.png: the input (masked for in/outpainting,
    low resolution for super-resolution), then config.edit.samples results (process 0 writes).
    Returns the uint8 grid rows."""
    params, spec, source = model_resolver.saved(config.init.model, workdir, mesh, overrides)
    ed = config.edit
    if not ed.images:
        model_for_data.check_saved_model_fits(spec, loading.facts(specs.data), source)
    workdir_record.record(workdir, config, spec)
    sampler = Sampler(spec, specs.sampling, mesh=mesh)
    tokenizer, size, lay = sampler.model.tokenizer, sampler.model.image_size, sampler.plan.layout
    if ed.images:
        images = np.stack([editing.load_image(p, size) for p in ed.images])
        if spec.tokenizer.in_channels == 1:
            images = images.mean(axis=-1, keepdims=True)
    else:
        split = "test" if specs.data.source == "fashion_mnist" else ""
        images = loading.load(specs.data, spec, split).head(ed.count)
    labels = np.asarray(ed.labels if ed.labels else [spec.transformer.num_classes] * len(images))
    if ed.task == "super_resolution":
        inputs = editing.edit_inputs(tokenizer, params["tokenizer"], images, lay, factor=ed.factor)
    else:
        keep = (editing.load_mask(ed.mask, size) if ed.mask else
                editing.box_mask(size, tuple(ed.box), keep_inside=ed.task == "outpaint",
                                 grid=tokenizer.latent_size if ed.box_on_token_grid else None))
        inputs = editing.edit_inputs(tokenizer, params["tokenizer"], images, lay, keep)
    rows = [image_grids.to_uint8(inputs["given"])]
    for k in range(ed.samples):
        out = sampler.sample(params, labels, jax.random.key(specs.grid.seed + k),
                             inputs["known_idx_BL"], inputs["known_BL"])
        decoded = sampler.decoder.decode(params["tokenizer"], out["f_hat_BhwC"])
        rows.append(image_grids.to_uint8(parallel.to_host(decoded)))
    grid_images = np.stack(rows, axis=1).reshape((-1,) + rows[0].shape[1:])
    path = os.path.join(workdir, "samples", f"edit_{ed.task}.png")
    if workdir_record.is_main():
        image_grids.save_grid(path, grid_images, columns=len(rows))
    logging.info("wrote %s edits of %d images to %s", ed.task, len(images), path)
    return grid_images
