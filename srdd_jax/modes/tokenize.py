"""mode=tokenize: encodes a split once with the frozen tokenizer into a token cache
(`data/tokens.py`) that `training.cached_tokens` trains from."""

from __future__ import annotations

import dataclasses
import os

from absl import logging

from srdd_jax import models, parallel
from srdd_jax.data import loading, tokens
from srdd_jax.modes import model_resolver
from srdd_jax.modes import workdir as workdir_record
from srdd_jax.modes.specs import ExperimentSpec
from srdd_jax.training import runs

READ_ONLY = False


def run(config, specs: ExperimentSpec, workdir: str, mesh, overrides: dict) -> str:
    """The tokenizer from config.init.tokenizer, else trained here first; encodes data.split into
    WORKDIR/tokens/<split> (see data/tokens.py) for `--config.training.cached_tokens=` and returns
    its path."""
    del overrides
    spec = model_resolver.for_training(specs, config.model_from_data)
    init_tokenizer = model_resolver.resolve_dir(config.init.tokenizer)
    runs.check_workdir(workdir, spec, tokenizer=not init_tokenizer, transformer=False)
    workdir_record.record(workdir, config, spec)
    source = loading.load_logged(specs.data, spec)
    tok_params = runs.tokenizer_params(spec, specs.run("tokenizer_training"), specs.seed, workdir,
                                       mesh, source, init_tokenizer)
    directory = os.path.join(workdir, "tokens", "".join(c if c.isalnum() else "_"
                                                         for c in specs.data.split))
    idx_NL, labels_N = tokens.encode_source(source, models.Model(spec).tokenizer, tok_params, mesh,
                                            specs.run("training").batch_size)
    if workdir_record.is_main():
        meta = dict(tokens.tokenizer_fingerprint(spec, tok_params),
                    class_names=list(source.class_names), data=dataclasses.asdict(specs.data),
                    transform="center")  # the evaluation transform (ordered reads), whatever train_crop
        tokens.write_cache(directory, idx_NL, labels_N, meta)
        logging.info("wrote %d token sequences (%d unreadable images skipped) to %s", len(idx_NL),
                     len(source.skipped), directory)
    parallel.sync_processes(f"token cache {directory}")  # written (by process 0) for everyone
    return directory
