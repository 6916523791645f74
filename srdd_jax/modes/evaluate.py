"""mode=evaluate: sample quality and held-out likelihood of a model directory
(`evaluation/evaluate.py`), written to workdir/evaluate/report.json."""

from __future__ import annotations

from srdd_jax.data import loading, model_for_data
from srdd_jax.evaluation.evaluate import Evaluator
from srdd_jax.modes import model_resolver
from srdd_jax.modes import workdir as workdir_record
from srdd_jax.modes.specs import ExperimentSpec

READ_ONLY = True


def run(config, specs: ExperimentSpec, workdir: str, mesh, overrides: dict) -> dict:
    params, spec, source = model_resolver.saved(config.init.model, workdir, mesh, overrides)
    model_for_data.check_saved_model_fits(spec, loading.facts(specs.data), source)
    workdir_record.record(workdir, config, spec)
    evaluator = Evaluator(spec, specs.evaluate, specs.data, specs.seed, workdir, mesh)
    return evaluator.evaluate(params, specs.sampling)
