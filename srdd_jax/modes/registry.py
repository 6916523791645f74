"""The modes of `python -m srdd_jax.main`, by name: one module each (two names share `train`).

Every mode module has `run(config, specs, workdir, mesh, overrides)` and `READ_ONLY` (True: it
only reads the workdir's runs and model and writes its own outputs, so it may run beside a
training run, under its own lock; see workdir_lock.py). No mode imports another: what they share
lives below modes/ (training/runs.py, sampling/class_grid.py, ...) or in the helpers beside them
(specs.py, model_resolver.py, workdir.py).
"""

from __future__ import annotations

from srdd_jax import errors
from srdd_jax.modes import convert, distill, edit, evaluate, prepare, sample, tokenize, train

MODES = {"train_tokenizer": train, "train": train, "sample": sample, "edit": edit,
         "convert": convert, "distill": distill, "tokenize": tokenize, "evaluate": evaluate,
         "prepare": prepare}


def get(name: str):
    """The module of mode `name`; errors.ConfigError naming the modes otherwise."""
    if name not in MODES:
        raise errors.ConfigError(f"config.mode={name!r}: choose one of {', '.join(MODES)}")
    return MODES[name]


def read_only(name: str) -> bool:
    return get(name).READ_ONLY
