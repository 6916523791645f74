"""What a mode records in its workdir, and who writes.

A training run records its config in `config.json`; every other mode records the config it ran
with (its model included) in `config_<mode>.json`, after validation, so no mode replaces what
another one wrote. In a multi-process run every process runs the mode (saves and samplers are
collectives) and only process 0 writes plain files.
"""

from __future__ import annotations

import json

import jax
import ml_collections
from absl import logging
from etils import epath

from srdd_jax import models

TRAINING_RECORD = "config.json"


def is_main() -> bool:
    return jax.process_index() == 0


def record_name(mode: str) -> str:
    return TRAINING_RECORD if mode == "train" else f"config_{mode}.json"


def record(workdir: str, config: ml_collections.ConfigDict, spec: models.ModelSpec) -> None:
    """Writes the config a mode runs with, its model section replaced by `spec` (trained, loaded
    or derived), to workdir/record_name(config.mode) (process 0). The user's config is left as it
    is."""
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)  # local or gs://
    if is_main():
        recorded = json.loads(config.to_json_best_effort())
        recorded["model"] = json.loads(json.dumps(spec.to_dict()))
        path = epath.Path(workdir) / record_name(config.mode)
        path.write_text(json.dumps(recorded, indent=1))
        logging.info("mode %s in %s (config: %s)", config.mode, workdir, path.name)
