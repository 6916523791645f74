"""mode=distill: scale distillation (training/distill.py) of a teacher model directory into a
student that samples a subset of its scales."""

from __future__ import annotations

import os

import jax

from srdd_jax import models, parallel, saved_models
from srdd_jax.data import loading
from srdd_jax.modes import sample, train
from srdd_jax.modes import workdir as workdir_record
from srdd_jax.training import distill as distillation
from srdd_jax.training import loop, optimizer, steps


def run(config, workdir: str, mesh) -> dict:
    """Scale distillation (training/distill.py): the teacher is config.distill.teacher (default
    <workdir>/model); the student's run lives in <workdir>/distill, the student model in
    <workdir>/student (sample it with --config.mode=sample --config.init.model=<workdir>/student)
    and its samples in <workdir>/samples/student.png. Returns the student's params."""
    run = config.distill
    teacher_dir = run.teacher or os.path.join(workdir, "model")
    teacher, teacher_cfg = saved_models.load_model(teacher_dir)
    ids = distillation.subset_ids(teacher_cfg.patch_nums, run.patch_nums)
    config = workdir_record.with_model(config, distillation.student_config(teacher_cfg,
                                                                           run.patch_nums))
    sample.check_data_fits(config, teacher_dir)
    workdir_record.record(workdir, config)
    student = distillation.student_transformer_params(teacher["transformer"], teacher_cfg.patch_nums,
                                                      ids)
    fresh = models.abstract_params(config.model, "transformer")
    source = train.load_logged(config)
    tx, _ = optimizer.make_optimizer(run.optim, run.steps, run.batch_size)
    tok_params = teacher["tokenizer"]
    params = loop.train(
        "distill", run, workdir, mesh, loading.iterator(source, run.batch_size, config.seed),
        lambda rng: train.boxed_like(fresh, student),
        tx, steps.make_transformer_step(models.build_transformer(config.model),
                                        models.build_tokenizer(config.model), tx, run.label_smoothing),
        config.seed, train.transformer_context(config, workdir, "distill"), frozen=(tok_params,),
        frozen_shardings=(jax.tree.map(lambda _: parallel.replicated(mesh), tok_params),))
    params = {"tokenizer": tok_params, "transformer": params}
    saved_models.save_model(os.path.join(workdir, "student"), params, config.model, overwrite=True)
    sample.sample_grid(config, params, os.path.join(workdir, "samples", "student.png"), mesh)
    return params
