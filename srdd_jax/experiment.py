"""What each mode of `python -m srdd_jax.main` does, as testable functions of (config, workdir).

Workdir layout: `tokenizer/`, `transformer/` (orbax checkpoints of the runs, with the data
position and an integrity record: see training/run_checkpoints.py), `damaged/` (checkpoints that
failed to verify, moved aside), `logs/` (TensorBoard), `model/` (the final model directory:
params + model_config.json + integrity.json, loadable with `checkpoints.load_model`), `samples/`
(PNG grids and .npz files).

Multi-process runs: every process calls every function here (saves and samplers are collectives);
only process 0 writes plain files (config.json, grids, token caches).
"""

from __future__ import annotations

import functools
import json
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from etils import epath

from srdd_jax import checkpoints, errors, model_for_data, models, parallel, pretrained
from srdd_jax.data import sources, tokens
from srdd_jax.data.pipeline import make_iterator
from srdd_jax.sampling import class_grid, outputs
from srdd_jax.sampling.sampler import Sampler, SamplerSettings
from srdd_jax.tokenizer.vqvae import VQVAE
from srdd_jax.training import diagnosis, loop, optimizer, run_checkpoints, steps, tokenizer_losses
from srdd_jax.training import distill as distillation

MODES = ("train_tokenizer", "train", "sample", "edit", "convert", "distill", "tokenize", "evaluate")
EDIT_TASKS = ("inpaint", "outpaint", "super_resolution")
CLASS_EMBEDDING_INITS = ("null", "random")
DATA_SOURCES = ("fashion_mnist", "image_folder", "tfds")


# ----------------------------------------------------------------------------------- validation
def validate_config(config: ml_collections.ConfigDict) -> None:
    """Fails at start-up with the name of the first bad field."""
    if config.mode not in MODES:
        raise ValueError(f"config.mode={config.mode!r}: choose one of {', '.join(MODES)}")
    models.validate(config.model)
    if config.data.source not in DATA_SOURCES:
        raise ValueError(f"config.data.source={config.data.source!r}: choose one of "
                         f"{', '.join(DATA_SOURCES)}")
    if config.data.source == "tfds" and not config.data.name:
        raise ValueError("config.data.name is empty: data.source='tfds' needs a TFDS dataset name, "
                         "e.g. --config.data.name=sun397 or imagenet2012")
    if config.data.image_size < 0:
        raise ValueError(f"config.data.image_size={config.data.image_size} must be >= 0 (0: the "
                         "model's image size)")
    if config.data.shuffle_buffer < 1:
        raise ValueError(f"config.data.shuffle_buffer={config.data.shuffle_buffer} must be >= 1")
    devices = jax.device_count()
    for section in ("tokenizer_training", "training", "distill"):
        run = config[section]
        for field in ("steps", "batch_size", "log_every", "checkpoint_every", "keep_checkpoints"):
            if run[field] < 1:
                raise ValueError(f"config.{section}.{field}={run[field]} must be >= 1")
        if run.batch_size % devices:
            raise ValueError(f"config.{section}.batch_size={run.batch_size} must be divisible by "
                             f"the {devices} devices")
        if run.optim.base_lr <= 0:
            raise ValueError(f"config.{section}.optim.base_lr={run.optim.base_lr} must be > 0")
        if run.optim.weight_decay < 0:
            raise ValueError(f"config.{section}.optim.weight_decay={run.optim.weight_decay} must be >= 0")
        if not 0 <= run.profile_steps < run.steps:
            raise ValueError(f"config.{section}.profile_steps={run.profile_steps} must be in "
                             f"[0, steps={run.steps}) (0: no profile)")
    if config.training.cached_tokens and config.mode != "train":
        raise ValueError(f"config.training.cached_tokens is only read by mode=train, not "
                         f"mode={config.mode!r}: leave it empty")
    SamplerSettings.from_config(config.sample.settings).validate(config.model.patch_nums)
    if config.mode == "distill":
        distillation.subset_ids(config.model.patch_nums, config.distill.patch_nums)
    tokenizer_losses.validate(config.tokenizer_training)
    if config.edit.task not in EDIT_TASKS:
        raise ValueError(f"config.edit.task={config.edit.task!r}: choose one of {', '.join(EDIT_TASKS)}")
    if config.init.class_embedding not in CLASS_EMBEDDING_INITS:
        raise ValueError(f"config.init.class_embedding={config.init.class_embedding!r}: choose one of "
                         f"{', '.join(CLASS_EMBEDDING_INITS)}")
    _validate_evaluate(config)


def _validate_evaluate(config: ml_collections.ConfigDict) -> None:
    ev = config.evaluate
    for field, least in (("per_class", 1), ("batch_size", 1), ("classifier_steps", 1), ("pr_k", 1),
                         ("inception_batch_size", 1), ("reference_images", 0), ("nll_images", 0),
                         ("classifier_images", 0)):
        if ev[field] < least:
            raise ValueError(f"config.evaluate.{field}={ev[field]} must be >= {least}"
                             + (" (0 = all)" if least == 0 else ""))
    samples = ev.per_class * config.model.transformer.num_classes
    if samples <= ev.pr_k or 0 < ev.reference_images <= ev.pr_k:
        raise ValueError(f"config.evaluate.pr_k={ev.pr_k} needs more samples ({samples} = per_class x "
                         f"classes) and reference_images ({ev.reference_images}) than pr_k")
    if config.data.source == "fashion_mnist" and ev.split not in ("train", "test"):
        raise ValueError(f"config.evaluate.split={ev.split!r}: Fashion-MNIST has 'train' and 'test'")
    if not ev.split:
        raise ValueError("config.evaluate.split is empty: name the held-out split, e.g. test")
    if config.mode == "evaluate" and ev.inception_weights and not os.path.isfile(ev.inception_weights):
        raise ValueError(f"config.evaluate.inception_weights={ev.inception_weights!r} is not a file: "
                         "give the FID Inception .pth/.npz (see srdd_jax/evaluation/inception_weights.py)"
                         " or '' to skip the Inception metrics")


def image_shape(model_cfg) -> tuple[int, int]:
    tok = models.build_tokenizer(model_cfg)
    return tok.image_size, model_cfg.tokenizer.in_channels


def load_data(config, split: str = "") -> sources.Source:
    """config.data's images (split: default config.data.split): an in-memory Source, or for
    large TFDS splits a tfds_source.TfdsStream with the same attributes and `batches`."""
    size, channels = image_shape(config.model)
    split = split or config.data.split
    if config.data.source == "fashion_mnist":
        return sources.fashion_mnist(split, size, channels, config.data.root or sources.FASHION_MNIST_DIR)
    if config.data.source == "tfds":
        from srdd_jax.data import tfds_source

        data = config.data
        return tfds_source.load(data.name, split, size, channels, data.tfds_data_dir, data.manual_dir,
                                data.max_in_memory_mb, data.shuffle_buffer)
    return sources.image_folder(config.data.root, size, channels)


def _iterator(config, source, batch_size: int):
    return make_iterator(source, batch_size, config.seed, jax.process_index(), jax.process_count())


def _is_main() -> bool:
    return jax.process_index() == 0


# ------------------------------------------------------------------------------------ training
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
        "tokenizer", run, workdir, mesh, _iterator(config, source, run.batch_size), boxed_init, tx,
        step, config.seed, tokenizer_context(config), frozen=frozen,
        frozen_shardings=jax.tree.map(lambda _: parallel.replicated(mesh), frozen))
    if tokenizer_losses.enabled(run):
        params = params["tokenizer"]
    images = source.head(16)
    recon = jax.jit(lambda p, x: tokenizer.apply({"params": p}, x, method=VQVAE.__call__))(
        params, images)
    if _is_main():
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
        params, cfg = checkpoints.load_model(pretrained.resolve(config.init.tokenizer))
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
    boxed_init = _transformer_init(config)
    tok_shardings = jax.tree.map(lambda _: parallel.replicated(mesh), tok_params)

    def write_samples(step, params):
        sample_grid(config, {"tokenizer": tok_params, "transformer": params},
                    os.path.join(workdir, "samples", f"step_{step:07d}.png"), mesh)

    return loop.train(
        "transformer", run, workdir, mesh, _iterator(config, source, run.batch_size), boxed_init, tx,
        steps.make_transformer_step(transformer, tokenizer, tx, run.label_smoothing), config.seed,
        transformer_context(config, workdir), frozen=(tok_params,),
        frozen_shardings=(tok_shardings,), on_checkpoint=write_samples)


def _transformer_init(config):
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
    params, cfg = checkpoints.load_model(pretrained.resolve(config.init.transformer))
    fresh = models.abstract_params(config.model, "transformer")
    shapes = jax.tree.map(lambda x: x.shape, nn.unbox(fresh))
    loaded = jax.tree.map(np.shape, params["transformer"])
    if _without_class_rows(shapes) != _without_class_rows(loaded):
        raise errors.ConfigError(
            f"config.init.transformer={config.init.transformer} does not match "
            "config.model.transformer (different sizes; only the number of classes may differ): "
            "check depth/width")

    def boxed(values):
        return _boxed_like(fresh, values)

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


def _boxed_like(fresh, values):
    """`values` (a plain parameter tree) boxed with the logical partitioning of `fresh`."""
    return jax.tree.map(lambda box, value: box.replace_boxed(value), fresh, values,
                        is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))


def _without_class_rows(shapes: dict) -> dict:
    """A transformer's parameter shapes, without class_emb's number of rows."""
    return {**shapes, "class_emb": shapes.get("class_emb", {}).get("embedding", ())[1:]}


def distill(config, workdir: str, mesh) -> dict:
    """Scale distillation (training/distill.py): the teacher is config.distill.teacher (default
    <workdir>/model); the student's run lives in <workdir>/distill, the student model in
    <workdir>/student (sample it with --config.mode=sample --config.init.model=<workdir>/student)
    and its samples in <workdir>/samples/student.png. Returns the student's params."""
    run = config.distill
    teacher_dir = run.teacher or os.path.join(workdir, "model")
    teacher, teacher_cfg = checkpoints.load_model(teacher_dir)
    ids = distillation.subset_ids(teacher_cfg.patch_nums, run.patch_nums)
    config.model = distillation.student_config(teacher_cfg, run.patch_nums)
    _check_loaded_model(config, teacher_dir)
    student = distillation.student_transformer_params(teacher["transformer"], teacher_cfg.patch_nums,
                                                      ids)
    fresh = models.abstract_params(config.model, "transformer")
    source = load_data(config)
    tx, _ = optimizer.make_optimizer(run.optim, run.steps, run.batch_size)
    tok_params = teacher["tokenizer"]
    params = loop.train(
        "distill", run, workdir, mesh, _iterator(config, source, run.batch_size),
        lambda rng: _boxed_like(fresh, student),
        tx, steps.make_transformer_step(models.build_transformer(config.model),
                                        models.build_tokenizer(config.model), tx, run.label_smoothing),
        config.seed, transformer_context(config, workdir, "distill"), frozen=(tok_params,),
        frozen_shardings=(jax.tree.map(lambda _: parallel.replicated(mesh), tok_params),))
    params = {"tokenizer": tok_params, "transformer": params}
    checkpoints.save_model(os.path.join(workdir, "student"), params, config.model, overwrite=True)
    sample_grid(config, params, os.path.join(workdir, "samples", "student.png"), mesh)
    return params


def tokenize(config, workdir: str, mesh, source, tok_params) -> str:
    """Encodes config.data.split once into the token cache WORKDIR/tokens/<split> (see
    data/tokens.py) for `--config.training.cached_tokens=`; returns its path."""
    directory = os.path.join(workdir, "tokens", "".join(c if c.isalnum() else "_"
                                                         for c in config.data.split))
    idx_NL, labels_N = tokens.encode_source(source, models.build_tokenizer(config.model), tok_params,
                                            mesh, config.training.batch_size)
    if _is_main():
        meta = dict(tokens.tokenizer_fingerprint(config.model, tok_params),
                    class_names=list(source.class_names), data=config.data.to_dict())
        tokens.write_cache(directory, idx_NL, labels_N, meta)
        logging.info("wrote %d token sequences (%d unreadable images skipped) to %s", len(idx_NL),
                     len(source.skipped), directory)
    parallel.sync_processes(f"token cache {directory}")  # written (by process 0) for everyone
    return directory


# ------------------------------------------------------------------------------------- sampling
def sample_grid(config, params: dict, path: str, mesh=None) -> np.ndarray:
    """Samples config.sample.per_class images of every class in config.sample.labels (empty: all
    classes) into one PNG grid, one column per class labelled with its name, and an .npz beside
    it; returns the uint8 images. Every process samples; process 0 writes the files."""
    num_classes = config.model.transformer.num_classes
    if config.sample.labels and not all(0 <= c < num_classes for c in config.sample.labels):
        raise errors.ConfigError(f"config.sample.labels={tuple(config.sample.labels)}: this model "
                                 f"has classes 0..{num_classes - 1}")
    grid = class_grid.sample(params, config.model, config.sample.labels, config.sample.per_class,
                             SamplerSettings.from_config(config.sample.settings), config.sample.seed,
                             config.sample.batch_size, mesh)
    if _is_main():
        grid.save(path)
        logging.info("wrote %d samples of %s to %s", len(grid.labels),
                     sources.listed(grid.column_names), path)
    return grid.images


def edit(config, params: dict, path: str, mesh=None) -> np.ndarray:
    """Zero-shot editing of config.edit.images (files; default: the first dataset images).

    Writes a grid with one row per image: input (masked for in/outpainting, low resolution for
    super-resolution), then config.edit.samples results (process 0 writes). Returns the uint8
    grid rows.
    """
    from srdd_jax.sampling import editing

    ed = config.edit
    settings = SamplerSettings.from_config(config.sample.settings)
    sampler = Sampler(config.model, settings, mesh=mesh)
    tokenizer, size = sampler.tokenizer, sampler.tokenizer.image_size
    if ed.images:
        images = np.stack([editing.load_image(p, size) for p in ed.images])
        if config.model.tokenizer.in_channels == 1:
            images = images.mean(axis=-1, keepdims=True)
    else:
        images = load_data(config, "test" if config.data.source == "fashion_mnist" else ""
                           ).head(ed.count)
    labels = np.asarray(ed.labels if ed.labels else [config.model.transformer.num_classes] * len(images))
    if ed.task == "super_resolution":
        low = np.asarray(jax.image.resize(images, (len(images), size // ed.factor, size // ed.factor,
                                                   images.shape[-1]), "linear"))
        known_idx, known = editing.super_resolution_constraints(tokenizer, params["tokenizer"], low,
                                                                sampler.layout)
        shown = np.asarray(jax.image.resize(low, images.shape, "nearest"))
    else:
        keep = (editing.load_mask(ed.mask, size) if ed.mask else
                editing.box_mask(size, tuple(ed.box), keep_inside=ed.task == "outpaint"))
        known_idx, known = editing.inpainting_constraints(tokenizer, params["tokenizer"], images,
                                                          keep, sampler.layout)
        shown = images * keep[None, :, :, None] - (1 - keep[None, :, :, None])
    rows = [outputs.to_uint8(shown)]
    for k in range(ed.samples):
        out = sampler.sample(params, labels, jax.random.key(config.sample.seed + k), known_idx, known)
        decoded = sampler.decode(params["tokenizer"], out["f_hat_BhwC"])
        rows.append(outputs.to_uint8(parallel.to_host(decoded)))
    grid_images = np.stack(rows, axis=1).reshape((-1,) + rows[0].shape[1:])
    if _is_main():
        outputs.save_grid(path, grid_images, columns=len(rows))
    logging.info("wrote %s edits of %d images to %s", ed.task, len(images), path)
    return grid_images


# ---------------------------------------------------------------------------------------- modes
def data_facts(config) -> sources.DataFacts:
    """Channels and class names of config.data (or of config.training.cached_tokens in mode=train),
    read without loading the images."""
    if config.mode == "train" and config.training.cached_tokens:
        cache = tokens.load_cache(config.training.cached_tokens)
        return sources.DataFacts(None, cache.class_names,
                                 f"the sequences in the token cache {config.training.cached_tokens}")
    if config.data.source == "fashion_mnist":
        return sources.FASHION_MNIST_FACTS
    if config.data.source == "tfds":
        from srdd_jax.data import tfds_source

        return tfds_source.facts(config.data.name, config.data.tfds_data_dir, config.data.manual_dir)
    return sources.image_folder_facts(config.data.root)


def model_for_training(config) -> ml_collections.ConfigDict:
    """A copy of config whose model agrees with the data: filled from it with config.model_from_data,
    else checked (a disagreement stops the run naming the field, the data's value and the fix).
    The data's class names are recorded in model.class_names either way."""
    facts = data_facts(config)
    if config.model_from_data:
        model = model_for_data.fit(config.model, facts, config.data.image_size)
    else:
        model_for_data.check(config.model, facts, config.data.image_size)
        model = model_for_data.with_class_names(config.model, facts)
    fitted = config.copy_and_resolve_references()
    fitted.model = model
    return fitted


def _check_loaded_model(config, model_dir: str) -> None:
    """The data this mode reads must fit the loaded model (evaluate, distill, edit without files)."""
    model_for_data.check(config.model, data_facts(config), fix=(
        f"The model in {model_dir} was trained on other data: point config.data at data like its "
        "own, or use a model trained on this data"))


def run(config: ml_collections.ConfigDict, workdir: str) -> None:
    try:
        validate_config(config)
    except ValueError as error:
        raise errors.ConfigError(str(error)) from error
    if config.mode in ("train_tokenizer", "train", "tokenize"):
        config = model_for_training(config)  # its class names are part of the model
    check_workdir(config, workdir)
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)  # local or gs://
    if _is_main():
        (epath.Path(workdir) / "config.json").write_text(
            json.dumps(json.loads(config.to_json_best_effort()), indent=1))
    mesh = parallel.make_mesh(config.mesh.data, config.mesh.fsdp)
    model_dir = os.path.join(workdir, "model")
    logging.info("mode %s in %s", config.mode, workdir)
    if config.mode == "convert":
        from srdd_jax.convert import torch_io, var_checkpoints

        vae = torch_io.load_state_dict(config.convert.vae, "vae") if config.convert.vae else None
        var = torch_io.load_state_dict(config.convert.var, "var") if config.convert.var else None
        cfg, params = var_checkpoints.convert_state_dicts(vae, var, mask=config.model.transformer.mask)
        checkpoints.save_model(model_dir, params, cfg)
        return
    if config.mode in ("sample", "edit", "evaluate"):
        loading = time.perf_counter()
        source_dir = pretrained.resolve(config.init.model or model_dir)
        params, cfg = checkpoints.load_model(source_dir, mesh=mesh)
        logging.info("model: loaded %s in %.1f s", source_dir, time.perf_counter() - loading)
        config.model = cfg
        if config.mode == "evaluate" or (config.mode == "edit" and not config.edit.images):
            _check_loaded_model(config, source_dir)
        if config.mode == "sample":
            sample_grid(config, params, os.path.join(workdir, "samples", "samples.png"), mesh)
        elif config.mode == "evaluate":
            from srdd_jax.evaluation import evaluate as evaluation

            evaluation.evaluate(config, params, workdir, mesh)
        else:
            edit(config, params, os.path.join(workdir, "samples", f"edit_{config.edit.task}.png"), mesh)
        return
    if config.mode == "distill":
        distill(config, workdir, mesh)
        return
    if config.mode == "train" and config.training.cached_tokens:
        cache = tokens.load_cache(config.training.cached_tokens)
        tok = tokenizer_params(config, workdir, mesh, None if config.init.tokenizer else load_data(config))
        tokens.check_tokenizer(cache, config.model, tok, config.training.cached_tokens)
        logging.info("data: %d cached token sequences from %s", cache.num_examples,
                     config.training.cached_tokens)
        params = {"tokenizer": tok, "transformer": train_transformer(config, workdir, mesh, cache, tok)}
        checkpoints.save_model(model_dir, params, config.model, overwrite=True)
        return
    source = load_data(config)
    logging.info("data: %d images, %s, %d unreadable skipped", source.num_examples,
                 sources.listed(source.class_names), len(source.skipped))
    if config.mode == "tokenize":
        tokenize(config, workdir, mesh, source, tokenizer_params(config, workdir, mesh, source))
        return
    if config.mode == "train_tokenizer":
        params = {"tokenizer": train_tokenizer(config, workdir, mesh, source)}
    else:
        tok = tokenizer_params(config, workdir, mesh, source)
        params = {"tokenizer": tok, "transformer": train_transformer(config, workdir, mesh, source, tok)}
    checkpoints.save_model(model_dir, params, config.model, overwrite=True)
