"""The training recipes the modes share: the tokenizer's run, the transformer's run, their
starting points and the run contexts that decide which checkpoints belong to a model.

Everything here takes specs (`models.ModelSpec`, `TrainSpec`) and directories the modes resolved;
what a run shows on the way (sample grids, reconstructions) comes in as callbacks, since training
sits beside sampling in the layers.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from srdd_jax import errors, image_grids, models, parallel, saved_models
from srdd_jax.data import loading
from srdd_jax.training import diagnosis, loop, optimizer, run_checkpoints, steps, tokenizer_losses
from srdd_jax.training.spec import TrainSpec


def tokenizer_context(spec: models.ModelSpec) -> loop.RunContext:
    """The tokenizer run: its state is decided by the tokenizer spec and the scales."""
    model = {"tokenizer": spec.to_dict()["tokenizer"], "patch_nums": spec.patch_nums}
    return loop.RunContext("tokenizer_training", {"model": model})


def transformer_context(spec: models.ModelSpec, workdir: str,
                        section: str = "training") -> loop.RunContext:
    """A transformer run (or a distillation student): decided by the whole model spec but its
    execution settings (`ModelSpec.training_identity`); its batches must hold labels below
    num_classes (and cached tokens below vocab_size)."""
    hint = (", or start a new workdir from this one's weights with --workdir=NEW_DIR "
            f"--config.init.transformer={os.path.join(workdir, 'model')} (possible when the "
            "parameter shapes agree except for the number of classes)") if section == "training" else ""
    check = functools.partial(diagnosis.batch_problems,
                              num_classes=spec.transformer.num_classes,
                              vocab_size=spec.tokenizer.vocab_size)
    return loop.RunContext(section, {"model": spec.training_identity()}, hint, check)


def check_workdir(workdir: str, spec: models.ModelSpec, tokenizer: bool, transformer: bool) -> None:
    """At start-up: refuses a workdir whose tokenizer run (when `tokenizer`) or transformer run
    (when `transformer`) was made by another model (errors.IncompatibleCheckpointError naming the
    fields)."""
    contexts = {}
    if tokenizer:
        contexts["tokenizer"] = tokenizer_context(spec)
    if transformer:
        contexts["transformer"] = transformer_context(spec, workdir)
    for name, context in contexts.items():
        run_checkpoints.check_workdir_run(os.path.join(workdir, name), context.model_config,
                                          context.restart_hint)


def train_tokenizer(spec: models.ModelSpec, run: TrainSpec, seed: int, workdir: str, mesh,
                    source) -> dict:
    """The tokenizer's run (workdir/tokenizer); returns its parameters."""
    model = models.Model(spec)
    if tokenizer_losses.enabled(run):  # params {'tokenizer', 'discriminator'}, LPIPS weights frozen
        boxed_init, tx, step, frozen = tokenizer_losses.build(spec, run)
    else:
        tx, _ = optimizer.make_optimizer(run.optim, run.steps, run.batch_size)
        boxed_init, frozen = (lambda rng: model.create_params(rng, "tokenizer")), ()
        step = steps.make_tokenizer_step(model.tokenizer, tx, run.vq_weight, run.beta)
    params = loop.train(
        "tokenizer", run, workdir, mesh, loading.iterator(source, run.batch_size, seed),
        boxed_init, tx, step, seed, tokenizer_context(spec), frozen=frozen,
        frozen_shardings=jax.tree.map(lambda _: parallel.replicated(mesh), frozen))
    return params["tokenizer"] if tokenizer_losses.enabled(run) else params


def tokenizer_params(spec: models.ModelSpec, run: TrainSpec, seed: int, workdir: str, mesh, source,
                     init_dir: str = "") -> dict:
    """The frozen tokenizer of a transformer run: from the model directory `init_dir`, else trained
    here first, writing 16 images and their reconstructions to workdir/samples."""
    if init_dir:
        return load_tokenizer(spec, init_dir, mesh)
    params = train_tokenizer(spec, run, seed, workdir, mesh, source)
    images = source.head(16)
    recon = jax.jit(lambda p, x: models.Model(spec).tokenizer.apply({"params": p}, x))(params, images)
    if jax.process_index() == 0:
        path = os.path.join(workdir, "samples", "tokenizer_reconstructions.png")
        image_grids.save_grid(path, image_grids.to_uint8(
            np.concatenate([images, parallel.to_host(recon)])), columns=16)
        logging.info("wrote 16 images (top) and their reconstructions (bottom) to %s", path)
    return params


def load_tokenizer(spec: models.ModelSpec, directory: str, mesh) -> dict:
    """The tokenizer parameters of a model directory, which must hold spec's tokenizer; replicated
    over the mesh like a tokenizer trained here (the sample grids decode with it)."""
    params, saved = saved_models.load_model(directory)
    if saved.tokenizer != spec.tokenizer:
        raise errors.ConfigError(
            f"config.init.tokenizer={directory} holds a tokenizer with {saved.tokenizer} but "
            f"config.model.tokenizer is {spec.tokenizer}")
    return jax.device_put(params["tokenizer"], parallel.replicated(mesh))


def train_transformer(spec: models.ModelSpec, run: TrainSpec, seed: int, workdir: str, mesh,
                      source, tok_params, boxed_init, on_checkpoint: Callable | None = None,
                      section: str = "training", name: str = "transformer") -> dict:
    """A transformer run (workdir/<name>) on a frozen tokenizer from `boxed_init` (see
    `transformer_init`); on_checkpoint(step, params) after each saved checkpoint. Returns the
    transformer's parameters."""
    model = models.Model(spec)
    tx, _ = optimizer.make_optimizer(run.optim, run.steps, run.batch_size)
    return loop.train(
        name, run, workdir, mesh, loading.iterator(source, run.batch_size, seed), boxed_init, tx,
        steps.make_transformer_step(model.transformer, model.tokenizer, tx, run.label_smoothing),
        seed, transformer_context(spec, workdir, section), frozen=(tok_params,),
        frozen_shardings=(jax.tree.map(lambda _: parallel.replicated(mesh), tok_params),),
        on_checkpoint=on_checkpoint)


def transformer_init(spec: models.ModelSpec, directory: str = "", class_embedding: str = "null"):
    """rng -> boxed parameters: a fresh init, or the transformer of the model `directory` (e.g.
    converted VAR weights), keeping the logical partitioning of a fresh init.

    The number of classes may differ (VAR's 1000 ImageNet classes for FFHQ's 1, AFHQ's 3, ...):
    the checkpoint's last class_emb row, the null class of CFG's unconditional branch, stays the
    null row, and `class_embedding` gives the class rows. 'null' (default) copies the null row
    into every class, so fine-tuning starts as the checkpoint's unconditional model: every label
    begins with an embedding the pretrained blocks know, and guidance starts as a no-op, rather
    than with random embeddings the blocks never saw. 'random' draws the class rows like a fresh
    init. Any other difference is an error.
    """
    model = models.Model(spec)
    if not directory:
        return lambda rng: model.create_params(rng, "transformer")
    params, _ = saved_models.load_model(directory)
    fresh = model.abstract_params("transformer")
    shapes = jax.tree.map(lambda x: x.shape, nn.unbox(fresh))
    loaded = jax.tree.map(np.shape, params["transformer"])
    if _without_class_rows(shapes) != _without_class_rows(loaded):
        raise errors.ConfigError(
            f"config.init.transformer={directory} does not match config.model.transformer "
            "(different sizes; only the number of classes may differ): check depth/width")

    def boxed(values):
        return boxed_like(fresh, values)

    if shapes == loaded:
        return lambda rng: boxed(params["transformer"])
    num_classes = spec.transformer.num_classes
    null_1C = np.asarray(params["transformer"]["class_emb"]["embedding"])[-1:]
    logging.info("init.transformer: %s has %d classes, config.model %d: kept its null-class "
                 "embedding, class embeddings initialised from %s (config.init.class_embedding)",
                 directory, loaded["class_emb"]["embedding"][0] - 1, num_classes,
                 "its null class" if class_embedding == "null" else "a fresh init")

    def init(rng):
        if class_embedding == "null":
            rows_KC = np.repeat(null_1C, num_classes, axis=0)
        else:
            fresh_emb = model.create_params(rng, "transformer")["class_emb"]["embedding"]
            rows_KC = nn.unbox(fresh_emb)[:num_classes]
        return boxed({**params["transformer"],
                      "class_emb": {"embedding": jnp.concatenate([rows_KC, null_1C])}})

    return init


def boxed_like(fresh, values):
    """`values` (a plain parameter tree) boxed with the logical partitioning of `fresh`."""
    return jax.tree.map(lambda box, value: box.replace_boxed(value), fresh, values,
                        is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))


def _without_class_rows(shapes: dict) -> dict:
    """A transformer's parameter shapes, without class_emb's number of rows."""
    return {**shapes, "class_emb": shapes.get("class_emb", {}).get("embedding", ())[1:]}
