"""Class-conditional samples laid out one column per class, labelled with the class names the
model was trained with: what `--config.mode=sample`, the training run's grids and the sampling
notebook show.

    grid = class_grid.sample(params, spec, classes=(0, 3), per_class=4, seed=0)
    grid.save("samples.png")   # the PNG and samples.npz beside it; in a notebook `grid` displays
"""

from __future__ import annotations

import dataclasses
import io
import os

import jax
import numpy as np
from absl import logging
from PIL import Image

from srdd_jax import errors, image_grids
from srdd_jax.data.sources import listed
from srdd_jax.models import ModelSpec
from srdd_jax.sampling import generation
from srdd_jax.sampling.sampler import Sampler
from srdd_jax.sampling.settings import GridSpec, SamplerSettings


@dataclasses.dataclass
class ClassGrid:
    images: np.ndarray  # uint8 (N, H, W, C); row r holds the r-th sample of every column's class
    labels: np.ndarray  # (N,) int32
    idx: np.ndarray  # (N, L) token indices, scales concatenated coarse to fine
    column_names: tuple[str, ...]  # one per column: the class name, or its index if unnamed

    def picture(self) -> Image.Image:
        return image_grids.grid_picture(self.images, len(self.column_names), self.column_names)

    def _repr_png_(self) -> bytes:
        """Jupyter shows a ClassGrid as its picture, enlarged to about 96 px per image."""
        picture = self.picture()
        zoom = max(1, 96 // self.images.shape[1])
        buffer = io.BytesIO()
        picture.resize((picture.width * zoom, picture.height * zoom), Image.NEAREST).save(buffer, "PNG")
        return buffer.getvalue()

    def save(self, path: str) -> None:
        """Writes the labelled PNG grid to `path` and images, labels and indices to the `.npz` beside
        it (local or gs://)."""
        image_grids.save_picture(path, self.picture())
        image_grids.save_samples(os.path.splitext(path)[0] + ".npz", self.images, self.labels, self.idx)


def column_names(spec: ModelSpec, classes) -> tuple[str, ...]:
    """The names in spec.class_names of `classes`, or their indices when the model has none."""
    names = spec.class_names
    return tuple(names[c] if names else str(c) for c in classes)


def sample(params: dict, spec: ModelSpec, classes=(), per_class: int = 1,
           settings: SamplerSettings | None = None, seed: int = 0, batch_size: int = 64,
           mesh=None, mask: str | None = None, sampler: Sampler | None = None) -> ClassGrid:
    """`per_class` samples of each class in `classes` (default: every class), sampled in batches
    of `batch_size` (no more than the samples need) by `generation.generate`, with a progress line.
    settings: default SamplerSettings(); mask: overrides the model's attention mask; sampler: one
    already made (and compiled) for this model, instead of settings, mask and mesh."""
    num_classes = spec.transformer.num_classes
    chosen = np.asarray(tuple(classes) or range(num_classes), np.int32)
    if chosen.min() < 0 or chosen.max() >= num_classes:
        raise ValueError(f"classes {tuple(chosen.tolist())}: this model has classes 0..{num_classes - 1}")
    labels = np.tile(chosen, per_class)
    batch_size = min(batch_size, len(labels))  # (the sampler pads a batch to split over a mesh)
    sampler = sampler or Sampler(spec, settings or SamplerSettings(), mask=mask, mesh=mesh)
    out = generation.generate(sampler, params, labels, jax.random.key(seed), batch_size)
    return ClassGrid(image_grids.to_uint8(out["images_NHWC"]), labels, out["idx_NL"],
                     column_names(spec, chosen.tolist()))


def write(params: dict, spec: ModelSpec, grid: GridSpec, settings: SamplerSettings, path: str,
          mesh=None) -> np.ndarray:
    """Samples grid.per_class images of every class in grid.labels (empty: all classes) into one
    PNG grid, one column per class labelled with its name, and an .npz beside it; returns the
    uint8 images. Every process samples; process 0 writes the files."""
    num_classes = spec.transformer.num_classes
    if grid.labels and not all(0 <= c < num_classes for c in grid.labels):
        raise errors.ConfigError(f"config.sample.labels={tuple(grid.labels)}: this model has "
                                 f"classes 0..{num_classes - 1}")
    drawn = sample(params, spec, grid.labels, grid.per_class, settings, grid.seed, grid.batch_size,
                   mesh)
    if jax.process_index() == 0:
        drawn.save(path)
        logging.info("wrote %d samples of %s to %s", len(drawn.labels),
                     listed(drawn.column_names), path)
    return drawn.images
