"""The full experiment config schema with defaults; files in configs/ start from `base_config`."""

from __future__ import annotations

import dataclasses

import ml_collections

from srdd_jax import models
from srdd_jax.sampling.sampler import SamplerSettings


def optim_config(base_lr: float = 1e-4) -> ml_collections.ConfigDict:
    """VAR's recipe: AdamW (0.9, 0.95), wd 0.05, lr = base_lr * batch / 256, clip 2.0."""
    return ml_collections.ConfigDict(dict(
        base_lr=base_lr, warmup_steps=100, final_lr_ratio=0.1, beta1=0.9, beta2=0.95, eps=1e-8,
        weight_decay=0.05, grad_clip=2.0))


def run_config(steps: int, batch_size: int, base_lr: float) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        steps=steps, batch_size=batch_size, optim=optim_config(base_lr), log_every=50,
        checkpoint_every=500, keep_checkpoints=3))


def base_config(model: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    settings = {f.name: f.default for f in dataclasses.fields(SamplerSettings)}
    cfg = ml_collections.ConfigDict(dict(
        mode="train",
        seed=0,
        model=model,
        data=dict(source="fashion_mnist", root=""),
        mesh=dict(data=-1, fsdp=1),
        init=dict(tokenizer="", transformer="", model=""),
        tokenizer_training=run_config(2000, 64, 4e-4),
        training=run_config(2000, 64, 1e-4),
        sample=dict(per_class=4, batch_size=40, seed=0, settings=settings),
        convert=dict(vae="", var=""),
    ))
    cfg.tokenizer_training.vq_weight = 1.0
    cfg.tokenizer_training.beta = 0.25
    cfg.training.label_smoothing = 0.0
    return cfg


def tiny_model(num_classes: int = 10, in_channels: int = 1) -> ml_collections.ConfigDict:
    """A model small enough for unit tests: 16 px images, latent 4x4, two blocks."""
    return models.model_config(
        (1, 2, 4),
        models.tokenizer_config(ch=32, ch_mult=(1, 1, 2), num_res_blocks=1, z_channels=8,
                                vocab_size=64, in_channels=in_channels),
        models.transformer_config(depth=2, embed_dim=64, num_heads=2, num_classes=num_classes,
                                  drop_path_rate=0.0))
