"""`python -m srdd_jax.main`'s dispatch: validates the config, then runs its mode (srdd_jax/modes/).

Workdir layout: `tokenizer/`, `transformer/` (orbax checkpoints of the runs, with the data
position and an integrity record: see training/run_checkpoints.py), `damaged/` (checkpoints that
failed to verify, moved aside), `logs/` (TensorBoard), `model/` (the final model directory:
params + model_config.json + integrity.json, loadable with `saved_models.load_model`), `samples/`
(PNG grids and .npz files), `config.json` (the training run's config) and `config_<mode>.json`
(the config each other mode ran with).

One run per workdir: every mode holds a lock naming it (`.lock`, or `.lock_<mode>` for the
modes that only read the runs: sample, edit, evaluate), and a second run stops at once naming the
holder (workdir_lock.py).

Multi-process runs: every process runs the mode (saves and samplers are collectives); only
process 0 writes plain files (configs, grids, token caches).
"""

from __future__ import annotations

import ml_collections

from srdd_jax import errors, parallel, workdir_lock
from srdd_jax.modes import convert, distill, evaluate, sample, tokenize, train, validation

# Modes that read the workdir's runs and model and write only their own outputs: they may run
# beside a training run (each takes its own lock, `.lock_<mode>`; see workdir_lock).
READ_ONLY_MODES = ("sample", "edit", "evaluate")


def run(config: ml_collections.ConfigDict, workdir: str, model_overrides: dict | None = None):
    """Runs config.mode in `workdir`. model_overrides: {dotted path under config.model: value}
    that the user set explicitly (`main` passes its --config.model.* flags); sample, edit and
    evaluate apply the sampling-time settings among them to the loaded model and refuse others
    that disagree with it. Returns what the mode returns."""
    try:
        validation.validate_config(config)
    except ValueError as error:
        raise errors.ConfigError(str(error)) from error
    overrides = dict(model_overrides or {})
    with workdir_lock.hold(workdir, config.mode, config.mode not in READ_ONLY_MODES):
        return _run_mode(config, workdir, overrides)


def _run_mode(config: ml_collections.ConfigDict, workdir: str, overrides: dict):
    if config.mode == "convert":
        return convert.run(config, workdir)
    mesh = parallel.make_mesh(config.mesh.data, config.mesh.fsdp)
    if config.mode in ("sample", "edit"):
        return sample.run(config, workdir, mesh, overrides)
    if config.mode == "evaluate":
        return evaluate.run(config, workdir, mesh, overrides)
    if config.mode == "distill":
        return distill.run(config, workdir, mesh)
    if config.mode == "tokenize":
        return tokenize.run(config, workdir, mesh)
    return train.run(config, workdir, mesh)
