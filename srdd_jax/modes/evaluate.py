"""mode=evaluate: sample quality and held-out likelihood of a model directory
(`evaluation/evaluate.py`), written to workdir/evaluate/report.json."""

from __future__ import annotations

from srdd_jax.evaluation import evaluate as evaluation
from srdd_jax.modes import sample
from srdd_jax.modes import workdir as workdir_record


def run(config, workdir: str, mesh, model_overrides: dict) -> dict:
    params, model_cfg, source = sample.load(config, workdir, mesh, model_overrides)
    config = workdir_record.with_model(config, model_cfg)
    sample.check_data_fits(config, source)
    workdir_record.record(workdir, config)
    return evaluation.evaluate(config, params, workdir, mesh)
