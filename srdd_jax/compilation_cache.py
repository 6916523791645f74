"""JAX's persistent compilation cache, on by default for every srdd_jax program.

A second process that compiles the same program (same model, settings, batch and devices) reads
the executable from disk instead of compiling it again, so `--config.mode=sample` of a model that
was sampled before starts within seconds. Where the cache lives, by priority:

1. the `directory` given to `enable` (`--config.compilation_cache=PATH` in `main`);
2. `$SRDD_COMPILATION_CACHE`;
3. a cache directory the user already gave JAX (`JAX_COMPILATION_CACHE_DIR` or
   `jax.config.update("jax_compilation_cache_dir", ...)`), which is left as it is;
4. `$XDG_CACHE_HOME/srdd_jax/xla` (default `~/.cache/srdd_jax/xla`).

`off` (or `none`, `0`, `false`) in 1 or 2 turns it off. Importing `srdd_jax` calls `enable()`.
"""

from __future__ import annotations

import os

import jax
from jax.experimental.compilation_cache import compilation_cache as jax_cache

ENV_VAR = "SRDD_COMPILATION_CACHE"
OFF_VALUES = ("off", "none", "0", "false")
# Programs that compile faster than this are not written (they would only fill the directory).
MIN_COMPILE_SECONDS = 0.2


def default_directory() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "srdd_jax", "xla")


def enable(directory: str = "") -> str | None:
    """Turns the cache on (see the module docstring for where) and returns its directory, or
    None when it is off."""
    chosen = directory or os.environ.get(ENV_VAR, "")
    if chosen.strip().lower() in OFF_VALUES:
        _use(None)
        return None
    if not chosen and jax.config.jax_compilation_cache_dir:
        return jax.config.jax_compilation_cache_dir
    chosen = os.path.expanduser(chosen or default_directory())
    _use(chosen)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    return chosen


def _use(directory: str | None) -> None:
    """Points JAX at `directory` (None: no cache), also after something was already compiled."""
    if directory != jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", directory)
        jax_cache.reset_cache()
