"""Sampling: the scale-wise sampler, guidance, token choice, editing constraints, outputs, and
class grids (`from srdd_jax import sampling` then `sampling.class_grid.sample(...)`)."""

from srdd_jax.sampling import class_grid  # noqa: F401
