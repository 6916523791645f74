"""The full experiment config schema with defaults; files in configs/ start from `base_config`.

The ConfigDict builders here are the config layer's: their defaults are read from the typed specs
(`models.ModelSpec`, `TokenizerSpec`, `TransformerSpec`, `SamplerSettings`), where each field is
declared once, and `modes/specs.py` parses the sections back into those specs.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from srdd_jax import models
from srdd_jax.data.spec import DataSpec, PrepareSpec
from srdd_jax.evaluation.spec import EvalSpec
from srdd_jax.sampling.settings import GridSpec, SamplerSettings
from srdd_jax.tokenizer.spec import TokenizerSpec
from srdd_jax.training.spec import OptimSpec, TrainSpec
from srdd_jax.transformer.spec import TransformerSpec


def tokenizer_config(**overrides) -> ml_collections.ConfigDict:
    """VAR's released tokenizer (vae_ch160v4096z32) unless overridden."""
    return ml_collections.ConfigDict(dataclasses.asdict(TokenizerSpec(**overrides)))


def transformer_config(depth: int = 16, **overrides) -> ml_collections.ConfigDict:
    """VAR-d{depth}'s shape (width 64*depth, depth heads, drop-path 0.1*depth/24) unless overridden."""
    return ml_collections.ConfigDict(dataclasses.asdict(TransformerSpec.for_depth(depth, **overrides)))


def model_config(patch_nums=models.PATCH_NUMS_256, tokenizer=None, transformer=None,
                 tokenizer_patch_nums=(), class_names=()) -> ml_collections.ConfigDict:
    """config.model: `models.ModelSpec`'s fields, with the tokenizer and transformer sections above
    (their defaults unless given)."""
    return ml_collections.ConfigDict(dict(
        patch_nums=tuple(patch_nums),
        tokenizer_patch_nums=tuple(tokenizer_patch_nums),
        class_names=tuple(class_names),
        tokenizer=tokenizer if tokenizer is not None else tokenizer_config(),
        transformer=transformer if transformer is not None else transformer_config(),
    ))


def model_section(spec: models.ModelSpec) -> ml_collections.ConfigDict:
    """The config.model section of a model spec (e.g. `pretrained.load(name).spec`), for users who
    want a ConfigDict back; `modes.specs.model_spec` reads it into the same spec."""
    return model_config(**spec.to_dict())


def _section(spec, names=None) -> dict:
    """A spec's fields (all, or `names`) with their values, for a config section."""
    values = dataclasses.asdict(spec)
    return {name: values[name] for name in (names or values)}


_RUN_FIELDS = ("steps", "batch_size", "log_every", "checkpoint_every", "keep_checkpoints",
               "profile_steps", "preemption_save_seconds")
_TOKENIZER_LOSS_FIELDS = ("vq_weight", "beta", "perceptual_weight", "lpips_weights",
                          "vgg16_weights", "adversarial_weight", "adversarial_start",
                          "disc_channels", "disc_layers")


def optim_config(base_lr: float = 1e-4) -> ml_collections.ConfigDict:
    """`OptimSpec`'s fields (VAR's recipe) with this base learning rate."""
    return ml_collections.ConfigDict(_section(OptimSpec(base_lr=base_lr)))


def run_config(steps: int, batch_size: int, base_lr: float) -> ml_collections.ConfigDict:
    """A run section: `TrainSpec`'s fields that every run reads (see training/spec.py)."""
    cfg = ml_collections.ConfigDict(_section(TrainSpec(steps=steps, batch_size=batch_size),
                                             _RUN_FIELDS))
    cfg.optim = optim_config(base_lr)
    return cfg


def sampler_settings_config() -> ml_collections.ConfigDict:
    """`SamplerSettings`' fields with their defaults; a field whose default is None (cfg_list,
    mr_scales, scale_ids, cfg_until) is a typed placeholder, so `--config.sample.settings.x=...`
    can set it on the command line."""
    settings = {}
    for field in dataclasses.fields(SamplerSettings):
        if field.default is None:
            kind = tuple if str(field.type).startswith("tuple") else int
            settings[field.name] = ml_collections.config_dict.placeholder(kind)
        else:
            settings[field.name] = field.default
    return ml_collections.ConfigDict(settings)


def base_config(model: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    settings = sampler_settings_config()
    cfg = ml_collections.ConfigDict(dict(
        mode="train",
        seed=0,
        # JAX's persistent compilation cache: '' = $SRDD_COMPILATION_CACHE, else
        # ~/.cache/srdd_jax/xla; a directory; or 'off' (see srdd_jax/compilation_cache.py).
        compilation_cache="",
        model=model,
        # True: model.tokenizer.in_channels, model.transformer.num_classes and model.class_names
        # are read from the data at start-up, and model.patch_nums from data.image_size
        # (srdd_jax/data/model_for_data.py; configs/image_folder.py). False: the model must agree with
        # the data, or the run stops at start-up naming the field.
        model_from_data=False,
        # Where the images come from (fashion_mnist, an image folder, prepared shards or TFDS):
        # data/spec.py.
        data=_section(DataSpec()),
        # mode=prepare: an image folder written as ArrayRecord shards (data/spec.py PrepareSpec).
        prepare=_section(PrepareSpec()),
        mesh=dict(data=-1, fsdp=1),
        # tokenizer, transformer, model: model directories, or released names (var_d16 ... var_d36,
        # srdd_jax/pretrained.py). transformer: when only its number of classes differs,
        # class_embedding 'null' (its null-class row) | 'random' initialises the class rows.
        init=dict(tokenizer="", transformer="", model="", class_embedding="null"),
        tokenizer_training=run_config(2000, 64, 4e-4),
        training=run_config(2000, 64, 1e-4),
        distill=run_config(1000, 64, 1e-4),
        # labels: the classes to sample (empty: every class), per_class images each; settings:
        # how to sample (sampling/settings.py).
        sample=dict(_section(GridSpec()), settings=settings),
        convert=dict(vae="", var=""),
        # mode=edit: task inpaint | outpaint | super_resolution on `images` (files; default: the
        # first `count` dataset images); box (y0, x0, y1, x1) or a mask file (white = keep);
        # labels (default: unconditional); `samples` results per image; SR input is size/factor;
        # box_on_token_grid: round the box's edges on the token grid, as VAR's editing demo does.
        edit=dict(task="inpaint", images=(), count=4, mask="", box=(0.25, 0.25, 0.75, 0.75),
                  labels=(), samples=3, factor=2, box_on_token_grid=False),
        # mode=evaluate: samples of every class with config.sample.settings against the real
        # split, NLL, optional Inception metrics (evaluation/spec.py says each field).
        evaluate=_section(EvalSpec()),
    ))
    # Each run's own fields (their meaning: training/spec.py). The tokenizer's optional losses;
    # the transformer's label smoothing and token cache; the student's teacher and scales.
    defaults = TrainSpec()
    cfg.tokenizer_training.update(_section(defaults, _TOKENIZER_LOSS_FIELDS))
    cfg.tokenizer_training.disc_optim = ml_collections.ConfigDict(_section(defaults.disc_optim))
    cfg.training.update(_section(defaults, ("label_smoothing", "cached_tokens")))
    cfg.distill.update(_section(defaults, ("teacher", "patch_nums", "label_smoothing")))
    return cfg


def tiny_evaluation(cfg: ml_collections.ConfigDict) -> None:
    """Shrinks config.evaluate for smoke tests (a few samples, images and classifier steps)."""
    cfg.evaluate.update(dict(per_class=4, batch_size=20, reference_images=200, nll_images=40,
                             classifier_steps=20, classifier_images=1000))


def tiny_model(num_classes: int = 10, in_channels: int = 1) -> ml_collections.ConfigDict:
    """A model small enough for unit tests: 16 px images, latent 4x4, two blocks."""
    return model_config(
        (1, 2, 4),
        tokenizer_config(ch=32, ch_mult=(1, 1, 2), num_res_blocks=1, z_channels=8,
                         vocab_size=64, in_channels=in_channels),
        transformer_config(depth=2, embed_dim=64, num_heads=2, num_classes=num_classes,
                           drop_path_rate=0.0, remat="none"))


def paper_config(root: str, num_classes: int, variant: str = "") -> ml_collections.ConfigDict:
    """The paper's fine-tuning setting: 256 px, d16, Markov mask, VAR's released tokenizer, an image
    folder at `root` (or its prepared shards, data.source='shards') with VAR's random training
    crop; point config.init.tokenizer / init.transformer at a converted VAR model
    (`python -m srdd_jax.convert ... --out=DIR`) to start from VAR's weights. `variant='tiny'`
    keeps the layout but shrinks every size for smoke tests."""
    if variant == "tiny":
        cfg = base_config(tiny_model(num_classes, in_channels=3))
        for run in (cfg.tokenizer_training, cfg.training):
            run.steps, run.batch_size, run.log_every, run.checkpoint_every = 2, 8, 1, 2
        tiny_evaluation(cfg)
    elif variant:
        raise ValueError(f"unknown variant {variant!r}: use '' or 'tiny'")
    else:
        model = model_config(transformer=transformer_config(16, num_classes=num_classes,
                                                            mask="markov"))
        cfg = base_config(model)
        cfg.training.update(dict(steps=100_000, batch_size=256, checkpoint_every=5000))
        cfg.training.optim.update(dict(base_lr=1e-4, warmup_steps=2000, final_lr_ratio=0.1))
        cfg.sample.settings.update(dict(cfg=5.0, top_k=900, top_p=0.96, mr=True))
        cfg.mesh.update(dict(data=-1, fsdp=1))
        cfg.data.train_crop = "random"  # VAR's training transform (the data streams)
    cfg.data.update(dict(source="image_folder", root=root))
    return cfg
