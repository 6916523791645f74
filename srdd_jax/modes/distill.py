"""mode=distill: scale distillation (training/distill.py) of a teacher model directory into a
student that samples a subset of its scales."""

from __future__ import annotations

import os

from srdd_jax import models, saved_models
from srdd_jax.data import loading, model_for_data
from srdd_jax.modes import workdir as workdir_record
from srdd_jax.modes.specs import ExperimentSpec
from srdd_jax.sampling import class_grid
from srdd_jax.training import distill as distillation
from srdd_jax.training import runs

READ_ONLY = False


def run(config, specs: ExperimentSpec, workdir: str, mesh, overrides: dict) -> dict:
    """Scale distillation (training/distill.py): the teacher is config.distill.teacher (default
    <workdir>/model); the student's run lives in <workdir>/distill, the student model in
    <workdir>/student (sample it with --config.mode=sample --config.init.model=<workdir>/student)
    and its samples in <workdir>/samples/student.png. Returns the student's params."""
    del overrides
    run_spec = specs.run("distill")
    teacher_dir = run_spec.teacher or os.path.join(workdir, "model")
    teacher, teacher_spec = saved_models.load_model(teacher_dir)
    ids = distillation.subset_ids(teacher_spec.patch_nums, run_spec.patch_nums)
    spec = distillation.student_spec(teacher_spec, run_spec.patch_nums)
    model_for_data.check_saved_model_fits(spec, loading.facts(specs.data), teacher_dir)
    workdir_record.record(workdir, config, spec)
    student = distillation.student_transformer_params(teacher["transformer"],
                                                      teacher_spec.patch_nums, ids)
    fresh = models.Model(spec).abstract_params("transformer")
    source = loading.load_logged(specs.data, spec)
    tok_params = teacher["tokenizer"]
    params = runs.train_transformer(spec, run_spec, specs.seed, workdir, mesh, source, tok_params,
                                    lambda rng: runs.boxed_like(fresh, student), section="distill",
                                    name="distill")
    params = {"tokenizer": tok_params, "transformer": params}
    saved_models.save_model(os.path.join(workdir, "student"), params, spec, overwrite=True)
    class_grid.write(params, spec, specs.grid, specs.sampling,
                     os.path.join(workdir, "samples", "student.png"), mesh)
    return params
