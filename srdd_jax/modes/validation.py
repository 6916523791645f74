"""Start-up validation of an experiment config: the first bad field stops the run, named, with
the fix. Nothing is read or written before it passes."""

from __future__ import annotations

import os

import jax
import ml_collections

from srdd_jax import models
from srdd_jax.sampling.sampler import SamplerSettings
from srdd_jax.training import distill as distillation
from srdd_jax.training import tokenizer_losses

MODES = ("train_tokenizer", "train", "sample", "edit", "convert", "distill", "tokenize", "evaluate")
EDIT_TASKS = ("inpaint", "outpaint", "super_resolution")
CLASS_EMBEDDING_INITS = ("null", "random")
DATA_SOURCES = ("fashion_mnist", "image_folder", "tfds")


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
        if not run.preemption_save_seconds > 0:
            raise ValueError(f"config.{section}.preemption_save_seconds="
                             f"{run.preemption_save_seconds} must be > 0")
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
