"""mode=tokenize: encodes a split once with the frozen tokenizer into a token cache
(`data/tokens.py`) that `training.cached_tokens` trains from."""

from __future__ import annotations

import os

from absl import logging

from srdd_jax import models, parallel
from srdd_jax.data import tokens
from srdd_jax.modes import train
from srdd_jax.modes import workdir as workdir_record


def tokenize(config, workdir: str, mesh, source, tok_params) -> str:
    """Encodes config.data.split once into the token cache WORKDIR/tokens/<split> (see
    data/tokens.py) for `--config.training.cached_tokens=`; returns its path."""
    directory = os.path.join(workdir, "tokens", "".join(c if c.isalnum() else "_"
                                                         for c in config.data.split))
    idx_NL, labels_N = tokens.encode_source(source, models.build_tokenizer(config.model), tok_params,
                                            mesh, config.training.batch_size)
    if workdir_record.is_main():
        meta = dict(tokens.tokenizer_fingerprint(config.model, tok_params),
                    class_names=list(source.class_names), data=config.data.to_dict())
        tokens.write_cache(directory, idx_NL, labels_N, meta)
        logging.info("wrote %d token sequences (%d unreadable images skipped) to %s", len(idx_NL),
                     len(source.skipped), directory)
    parallel.sync_processes(f"token cache {directory}")  # written (by process 0) for everyone
    return directory


def run(config, workdir: str, mesh) -> str:
    """The tokenizer from config.init.tokenizer, else trained here first; returns the cache path."""
    config = workdir_record.with_model(config, train.model_for_training(config))
    train.check_workdir(config, workdir)
    workdir_record.record(workdir, config)
    source = train.load_logged(config)
    return tokenize(config, workdir, mesh, source, train.tokenizer_params(config, workdir, mesh, source))
