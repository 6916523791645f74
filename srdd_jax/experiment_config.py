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
        # transformer: a model directory to start from; when only its number of classes differs,
        # class_embedding 'null' (its null-class row) | 'random' initialises the class rows.
        init=dict(tokenizer="", transformer="", model="", class_embedding="null"),
        tokenizer_training=run_config(2000, 64, 4e-4),
        training=run_config(2000, 64, 1e-4),
        sample=dict(per_class=4, batch_size=40, seed=0, settings=settings),
        convert=dict(vae="", var=""),
        # mode=edit: task inpaint | outpaint | super_resolution on `images` (files; default: the
        # first `count` dataset images); box (y0, x0, y1, x1) or a mask file (white = keep);
        # labels (default: unconditional); `samples` results per image; SR input is size/factor.
        edit=dict(task="inpaint", images=(), count=4, mask="", box=(0.25, 0.25, 0.75, 0.75),
                  labels=(), samples=3, factor=2),
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


def paper_config(root: str, num_classes: int, variant: str = "") -> ml_collections.ConfigDict:
    """The paper's fine-tuning setting: 256 px, d16, Markov mask, VAR's released tokenizer, an image
    folder at `root`; point config.init.tokenizer / init.transformer at a converted VAR model
    (`python -m srdd_jax.convert ... --out=DIR`) to start from VAR's weights. `variant='tiny'`
    keeps the layout but shrinks every size for smoke tests."""
    if variant == "tiny":
        cfg = base_config(tiny_model(num_classes, in_channels=3))
        for run in (cfg.tokenizer_training, cfg.training):
            run.steps, run.batch_size, run.log_every, run.checkpoint_every = 2, 8, 1, 2
    elif variant:
        raise ValueError(f"unknown variant {variant!r}: use '' or 'tiny'")
    else:
        model = models.model_config(transformer=models.transformer_config(
            16, num_classes=num_classes, mask="markov"))
        cfg = base_config(model)
        cfg.training.update(dict(steps=100_000, batch_size=256, checkpoint_every=5000))
        cfg.training.optim.update(dict(base_lr=1e-4, warmup_steps=2000, final_lr_ratio=0.1))
        cfg.sample.settings.update(dict(cfg=5.0, top_k=900, top_p=0.96, mr=True))
        cfg.mesh.update(dict(data=-1, fsdp=1))
    cfg.data.update(dict(source="image_folder", root=root))
    return cfg
