"""`python -m srdd_jax.main`'s dispatch: reads the config into specs (validated), then runs its
mode (`modes/registry.py`).

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

from srdd_jax import parallel, workdir_lock
from srdd_jax.modes import registry, specs


def run(config: ml_collections.ConfigDict, workdir: str, model_overrides: dict | None = None):
    """Runs config.mode in `workdir`. model_overrides: {dotted path under config.model: value}
    that the user set explicitly (`main` passes its --config.model.* flags); sample, edit and
    evaluate apply the sampling-time settings among them to the loaded model and refuse others
    that disagree with it. Returns what the mode returns."""
    mode = registry.get(config.mode)
    parsed = specs.parse(config)
    with workdir_lock.hold(workdir, config.mode, not mode.READ_ONLY):
        mesh = parallel.make_mesh(config.mesh.data, config.mesh.fsdp)
        return mode.run(config, parsed, workdir, mesh, dict(model_overrides or {}))
