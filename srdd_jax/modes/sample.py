"""mode=sample: a class grid from a model directory or a released model's name, with the settings
that may change at sampling time applied on top of the saved model."""

from __future__ import annotations

import os

import numpy as np

from srdd_jax.modes import model_resolver
from srdd_jax.modes import workdir as workdir_record
from srdd_jax.modes.specs import ExperimentSpec
from srdd_jax.sampling import class_grid

READ_ONLY = True


def run(config, specs: ExperimentSpec, workdir: str, mesh, overrides: dict) -> np.ndarray:
    """Writes workdir/samples/samples.png and .npz; returns the grid's uint8 images."""
    params, spec, _ = model_resolver.saved(config.init.model, workdir, mesh, overrides)
    workdir_record.record(workdir, config, spec)
    return class_grid.write(params, spec, specs.grid, specs.sampling,
                            os.path.join(workdir, "samples", "samples.png"), mesh)
