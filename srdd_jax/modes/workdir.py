"""What a mode records in its workdir, and who writes.

A training run records its config in `config.json`; every other mode records the config it ran
with (its model config included) in `config_<mode>.json`, after validation, so no mode replaces
what another one wrote. In a multi-process run every process runs the mode (saves and samplers
are collectives) and only process 0 writes plain files.
"""

from __future__ import annotations

import json

import jax
import ml_collections
from absl import logging
from etils import epath

TRAINING_RECORD = "config.json"


def is_main() -> bool:
    return jax.process_index() == 0


def record_name(mode: str) -> str:
    return TRAINING_RECORD if mode == "train" else f"config_{mode}.json"


def with_model(config: ml_collections.ConfigDict, model_cfg: ml_collections.ConfigDict
               ) -> ml_collections.ConfigDict:
    """A copy of `config` whose model is `model_cfg` (the user's config is left as it is)."""
    copy = config.copy_and_resolve_references()
    copy.model = model_cfg.copy_and_resolve_references()
    return copy


def record(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Writes the config a mode runs with to workdir/record_name(config.mode) (process 0)."""
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)  # local or gs://
    if is_main():
        path = epath.Path(workdir) / record_name(config.mode)
        path.write_text(json.dumps(json.loads(config.to_json_best_effort()), indent=1))
        logging.info("mode %s in %s (config: %s)", config.mode, workdir, path.name)
