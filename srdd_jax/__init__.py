"""srdd_jax: VAR and SRDD (scale-wise discrete diffusion) in JAX/Flax."""

from srdd_jax import compilation_cache

compilation_cache.enable()
