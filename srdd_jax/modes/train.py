"""mode=train_tokenizer and mode=train: the tokenizer (VAR's multi-scale VQ-VAE) and the
transformer, with their checkpointed runs (`training/runs.py`), the model fitted to the data, and
starting points (`init.tokenizer`, `init.transformer`).

Workdir: `tokenizer/`, `transformer/` (orbax checkpoints of the runs with the data position and an
integrity record), `damaged/` (checkpoints that failed to verify, moved aside), `logs/`,
`samples/` (grids at each checkpoint) and `model/` (the final model directory).
"""

from __future__ import annotations

import os

from absl import logging

from srdd_jax import saved_models
from srdd_jax.data import loading, tokens
from srdd_jax.modes import model_resolver
from srdd_jax.modes import workdir as workdir_record
from srdd_jax.modes.specs import ExperimentSpec
from srdd_jax.sampling import class_grid
from srdd_jax.training import runs

READ_ONLY = False


def run(config, specs: ExperimentSpec, workdir: str, mesh, overrides: dict) -> None:
    """mode=train_tokenizer or train (the tokenizer first unless config.init.tokenizer is set, or
    from the token cache config.training.cached_tokens): writes workdir/model."""
    del overrides
    spec = model_resolver.for_training(specs, config.model_from_data)
    init_tokenizer = model_resolver.resolve_dir(config.init.tokenizer)
    runs.check_workdir(workdir, spec, tokenizer=not init_tokenizer or specs.mode == "train_tokenizer",
                       transformer=specs.mode == "train")
    workdir_record.record(workdir, config, spec)
    model_dir = os.path.join(workdir, "model")
    tokenizer_run = specs.run("tokenizer_training")
    if specs.mode == "train_tokenizer":
        source = loading.load_logged(specs.data, spec)
        params = {"tokenizer": runs.tokenizer_params(spec, tokenizer_run, specs.seed, workdir, mesh,
                                                     source)}
        saved_models.save_model(model_dir, params, spec, overwrite=True)
        return
    cached = specs.run("training").cached_tokens
    if cached:
        source = tokens.load_cache(cached)
        images = None if init_tokenizer else loading.load(specs.data, spec)
        tok = runs.tokenizer_params(spec, tokenizer_run, specs.seed, workdir, mesh, images,
                                    init_tokenizer)
        tokens.check_tokenizer(source, spec, tok, cached)
        logging.info("data: %d cached token sequences from %s", source.num_examples, cached)
    else:
        source = loading.load_logged(specs.data, spec)
        tok = runs.tokenizer_params(spec, tokenizer_run, specs.seed, workdir, mesh, source,
                                    init_tokenizer)

    def write_samples(step, params):
        class_grid.write({"tokenizer": tok, "transformer": params}, spec, specs.grid,
                         specs.sampling, os.path.join(workdir, "samples", f"step_{step:07d}.png"),
                         mesh)

    init = runs.transformer_init(spec, model_resolver.resolve_dir(config.init.transformer),
                                 config.init.class_embedding)
    transformer = runs.train_transformer(spec, specs.run("training"), specs.seed, workdir, mesh,
                                         source, tok, init, write_samples)
    saved_models.save_model(model_dir, {"tokenizer": tok, "transformer": transformer}, spec,
                            overwrite=True)
