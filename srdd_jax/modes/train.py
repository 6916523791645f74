"""Training modes: the tokenizer (VAR's multi-scale VQ-VAE) and the transformer, with their
checkpointed runs (`training.loop`), the model fitted to the data, and starting points
(`init.tokenizer`, `init.transformer`).

Workdir: `tokenizer/`, `transformer/` (orbax checkpoints of the runs with the data position and an
integrity record), `damaged/` (checkpoints that failed to verify, moved aside), `logs/`,
`samples/` (grids at each checkpoint) and `model/` (the final model directory).
"""

from __future__ import annotations

import functools
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from srdd_jax import errors, models, parallel, pretrained, saved_models
from srdd_jax.data import loading, model_for_data, sources, tokens
from srdd_jax.modes import sample
from srdd_jax.modes import workdir as workdir_record
from srdd_jax.sampling import outputs
from srdd_jax.tokenizer.vqvae import VQVAE
from srdd_jax.training import diagnosis, loop, optimizer, run_checkpoints, steps, tokenizer_losses


def train_tokenizer(config, workdir: str, mesh, source) -> dict:
    run = config.tokenizer_training
    tokenizer = models.build_tokenizer(config.model)
    if tokenizer_losses.enabled(run):  # params {'tokenizer', 'discriminator'}, LPIPS weights frozen
        boxed_init, tx, step, frozen = tokenizer_losses.build(config.model, run)
    else:
        tx, _ = optimizer.make_optimizer(run.optim, run.steps, run.batch_size)
        boxed_init, frozen = (lambda rng: models.create_params(config.model, rng, "tokenizer")), ()
        step = steps.make_tokenizer_step(tokenizer, tx, run.vq_weight, run.beta)
    params = loop.train(
        "tokenizer", run, workdir, mesh, loading.iterator(source, run.batch_size, config.seed),
        boxed_init, tx, step, config.seed, tokenizer_context(config), frozen=frozen,
        frozen_shardings=jax.tree.map(lambda _: parallel.replicated(mesh), frozen))
    if tokenizer_losses.enabled(run):
        params = params["tokenizer"]
    images = source.head(16)
    recon = jax.jit(lambda p, x: tokenizer.apply({"params": p}, x, method=VQVAE.__call__))(
        params, images)
    if workdir_record.is_main():
        path = os.path.join(workdir, "samples", "tokenizer_reconstructions.png")
        outputs.save_grid(path, outputs.to_uint8(np.concatenate([images, parallel.to_host(recon)])),
                          columns=16)
        logging.info("wrote 16 images (top) and their reconstructions (bottom) to %s", path)
    return params


def tokenizer_context(config) -> loop.RunContext:
    """The tokenizer run: its state is decided by the tokenizer config and the scales."""
    model = {"tokenizer": config.model.tokenizer.to_dict(), "patch_nums": config.model.patch_nums}
    return loop.RunContext("tokenizer_training", {"model": model})


def transformer_context(config, workdir: str, section: str = "training") -> loop.RunContext:
    """A transformer run (or a distillation student): decided by the whole model config; its
    batches must hold labels below num_classes (and cached tokens below vocab_size)."""
    hint = (", or start a new workdir from this one's weights with --workdir=NEW_DIR "
            f"--config.init.transformer={os.path.join(workdir, 'model')} (possible when the "
            "parameter shapes agree except for the number of classes)") if section == "training" else ""
    check = functools.partial(diagnosis.batch_problems,
                              num_classes=config.model.transformer.num_classes,
                              vocab_size=config.model.tokenizer.vocab_size)
    return loop.RunContext(section, {"model": _identity(config.model)}, hint, check)


def _identity(model_cfg) -> dict:
    """The model config without the execution settings (remat, attention kernel), which a resumed
    run may change: what decides whether a checkpoint belongs to this model."""
    model = model_cfg.to_dict()
    model["transformer"] = {k: v for k, v in model["transformer"].items()
                            if k not in models.EXECUTION_SETTINGS}
    return model


def check_workdir(config, workdir: str) -> None:
    """At start-up: refuses a workdir whose tokenizer or transformer run was made by another
    model config (errors.IncompatibleCheckpointError naming the fields)."""
    runs = []
    if config.mode == "train_tokenizer" or (config.mode in ("train", "tokenize")
                                            and not config.init.tokenizer):
        runs.append(("tokenizer", tokenizer_context(config)))
    if config.mode == "train":
        runs.append(("transformer", transformer_context(config, workdir)))
    for name, context in runs:
        run_checkpoints.check_workdir_run(os.path.join(workdir, name), context.model_config,
                                          context.restart_hint)


def tokenizer_params(config, workdir: str, mesh, source) -> dict:
    """The frozen tokenizer: from config.init.tokenizer (a model directory), else trained here."""
    if config.init.tokenizer:
        params, cfg = saved_models.load_model(pretrained.resolve(config.init.tokenizer))
        if cfg.tokenizer.to_dict() != config.model.tokenizer.to_dict():
            raise errors.ConfigError(
                f"config.init.tokenizer={config.init.tokenizer} holds a tokenizer with "
                f"{cfg.tokenizer} but config.model.tokenizer is {config.model.tokenizer}")
        # Replicated over the mesh like a tokenizer trained here (the sample grids decode with it).
        return jax.device_put(params["tokenizer"], parallel.replicated(mesh))
    return train_tokenizer(config, workdir, mesh, source)


def train_transformer(config, workdir: str, mesh, source, tok_params) -> dict:
    run = config.training
    tokenizer = models.build_tokenizer(config.model)
    transformer = models.build_transformer(config.model)
    tx, _ = optimizer.make_optimizer(run.optim, run.steps, run.batch_size)
    boxed_init = transformer_init(config)
    tok_shardings = jax.tree.map(lambda _: parallel.replicated(mesh), tok_params)

    def write_samples(step, params):
        sample.sample_grid(config, {"tokenizer": tok_params, "transformer": params},
                    os.path.join(workdir, "samples", f"step_{step:07d}.png"), mesh)

    return loop.train(
        "transformer", run, workdir, mesh, loading.iterator(source, run.batch_size, config.seed),
        boxed_init, tx, steps.make_transformer_step(transformer, tokenizer, tx, run.label_smoothing),
        config.seed,
        transformer_context(config, workdir), frozen=(tok_params,),
        frozen_shardings=(tok_shardings,), on_checkpoint=write_samples)


def transformer_init(config):
    """Fresh init, or the transformer of config.init.transformer (e.g. converted VAR weights),
    keeping the logical partitioning of a fresh init.

    The number of classes may differ (VAR's 1000 ImageNet classes for FFHQ's 1, AFHQ's 3, ...):
    the checkpoint's last class_emb row, the null class of CFG's unconditional branch, stays the
    null row, and config.init.class_embedding gives the class rows. 'null' (default) copies the
    null row into every class, so fine-tuning starts as the checkpoint's unconditional model:
    every label begins with an embedding the pretrained blocks know, and guidance starts as a
    no-op, rather than with random embeddings the blocks never saw. 'random' draws the class
    rows like a fresh init. Any other difference is an error.
    """
    if not config.init.transformer:
        return lambda rng: models.create_params(config.model, rng, "transformer")
    params, cfg = saved_models.load_model(pretrained.resolve(config.init.transformer))
    fresh = models.abstract_params(config.model, "transformer")
    shapes = jax.tree.map(lambda x: x.shape, nn.unbox(fresh))
    loaded = jax.tree.map(np.shape, params["transformer"])
    if _without_class_rows(shapes) != _without_class_rows(loaded):
        raise errors.ConfigError(
            f"config.init.transformer={config.init.transformer} does not match "
            "config.model.transformer (different sizes; only the number of classes may differ): "
            "check depth/width")

    def boxed(values):
        return boxed_like(fresh, values)

    if shapes == loaded:
        return lambda rng: boxed(params["transformer"])
    num_classes, how = config.model.transformer.num_classes, config.init.class_embedding
    null_1C = np.asarray(params["transformer"]["class_emb"]["embedding"])[-1:]
    logging.info("init.transformer: %s has %d classes, config.model %d: kept its null-class "
                 "embedding, class embeddings initialised from %s (config.init.class_embedding)",
                 config.init.transformer, loaded["class_emb"]["embedding"][0] - 1, num_classes,
                 "its null class" if how == "null" else "a fresh init")

    def init(rng):
        if how == "null":
            rows_KC = np.repeat(null_1C, num_classes, axis=0)
        else:
            fresh_emb = models.create_params(config.model, rng, "transformer")["class_emb"]["embedding"]
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


def data_facts(config) -> sources.DataFacts:
    """Channels and class names of config.data (or of config.training.cached_tokens in mode=train),
    read without loading the images."""
    if config.mode == "train" and config.training.cached_tokens:
        cache = tokens.load_cache(config.training.cached_tokens)
        return sources.DataFacts(None, cache.class_names,
                                 f"the sequences in the token cache {config.training.cached_tokens}")
    return loading.facts(config.data)


def model_for_training(config) -> ml_collections.ConfigDict:
    """The model config a training run (train, train_tokenizer, tokenize) runs with: config.model
    filled from the data with config.model_from_data, else checked against it (a disagreement
    stops the run naming the field, the data's value and the fix). The data's class names are
    recorded in its class_names either way."""
    facts = data_facts(config)
    if config.model_from_data:
        return model_for_data.fit(config.model, facts, config.data.image_size)
    model_for_data.check(config.model, facts, config.data.image_size)
    return model_for_data.with_class_names(config.model, facts)


def run(config, workdir: str, mesh) -> None:
    """mode=train_tokenizer or train (the tokenizer first unless config.init.tokenizer is set, or
    from the token cache config.training.cached_tokens): writes workdir/model."""
    config = workdir_record.with_model(config, model_for_training(config))
    check_workdir(config, workdir)
    workdir_record.record(workdir, config)
    model_dir = os.path.join(workdir, "model")
    if config.mode == "train" and config.training.cached_tokens:
        cache = tokens.load_cache(config.training.cached_tokens)
        tok = tokenizer_params(config, workdir, mesh,
                               None if config.init.tokenizer else loading.load(config.data, config.model))
        tokens.check_tokenizer(cache, config.model, tok, config.training.cached_tokens)
        logging.info("data: %d cached token sequences from %s", cache.num_examples,
                     config.training.cached_tokens)
        params = {"tokenizer": tok, "transformer": train_transformer(config, workdir, mesh, cache, tok)}
        saved_models.save_model(model_dir, params, config.model, overwrite=True)
        return
    source = load_logged(config)
    if config.mode == "train_tokenizer":
        params = {"tokenizer": train_tokenizer(config, workdir, mesh, source)}
    else:
        tok = tokenizer_params(config, workdir, mesh, source)
        params = {"tokenizer": tok, "transformer": train_transformer(config, workdir, mesh, source, tok)}
    saved_models.save_model(model_dir, params, config.model, overwrite=True)


def load_logged(config, split: str = "") -> sources.Source:
    """loading.load of config.data at config.model's size, with a line on what was found."""
    source = loading.load(config.data, config.model, split)
    logging.info("data: %d images, %s, %d unreadable skipped", source.num_examples,
                 sources.listed(source.class_names), len(source.skipped))
    return source
