"""The full experiment config schema with defaults; files in configs/ start from `base_config`."""

from __future__ import annotations

import dataclasses

import ml_collections

from srdd_jax import models
from srdd_jax.sampling.sampler import SamplerSettings


def optim_config(base_lr: float = 1e-4) -> ml_collections.ConfigDict:
    """VAR's recipe: AdamW (0.9, 0.95), wd 0.05, lr = base_lr * batch / 256, clip 2.0.
    weight_decay_end (VAR's twde): wd follows a cosine from weight_decay to it over the run;
    -1 keeps it equal to weight_decay (constant)."""
    return ml_collections.ConfigDict(dict(
        base_lr=base_lr, warmup_steps=100, final_lr_ratio=0.1, beta1=0.9, beta2=0.95, eps=1e-8,
        weight_decay=0.05, weight_decay_end=-1.0, grad_clip=2.0))


def run_config(steps: int, batch_size: int, base_lr: float) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        steps=steps, batch_size=batch_size, optim=optim_config(base_lr), log_every=50,
        checkpoint_every=500, keep_checkpoints=3,
        # profile_steps > 0: one jax.profiler trace of that many steps in workdir/logs/<run>.
        profile_steps=0,
        # On SIGTERM/SIGINT the run saves the step it reached and waits this long for the write
        # (cloud machines allow about 30 s between the notice and the end), then exits 75.
        preemption_save_seconds=25.0))


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
        # source fashion_mnist | image_folder (root) | tfds: `name` (e.g. sun397, imagenet2012) and
        # `split` from tfds_data_dir (may be gs://; default ~/tensorflow_datasets), manual
        # downloads (imagenet2012) in manual_dir; splits whose resized images exceed
        # max_in_memory_mb are streamed, shuffled per epoch in a shuffle_buffer-record window.
        # image_size: 0 = the model's; else it must equal it, or with model_from_data it sets it.
        data=dict(source="fashion_mnist", root="", name="", split="train", tfds_data_dir="",
                  manual_dir="", max_in_memory_mb=2048.0, shuffle_buffer=4096, image_size=0),
        mesh=dict(data=-1, fsdp=1),
        # tokenizer, transformer, model: model directories, or released names (var_d16 ... var_d36,
        # srdd_jax/pretrained.py). transformer: when only its number of classes differs,
        # class_embedding 'null' (its null-class row) | 'random' initialises the class rows.
        init=dict(tokenizer="", transformer="", model="", class_embedding="null"),
        tokenizer_training=run_config(2000, 64, 4e-4),
        training=run_config(2000, 64, 1e-4),
        distill=run_config(1000, 64, 1e-4),
        # labels: the classes to sample (empty: every class), per_class images each.
        sample=dict(per_class=4, batch_size=40, seed=0, labels=(), settings=settings),
        convert=dict(vae="", var=""),
        # mode=edit: task inpaint | outpaint | super_resolution on `images` (files; default: the
        # first `count` dataset images); box (y0, x0, y1, x1) or a mask file (white = keep);
        # labels (default: unconditional); `samples` results per image; SR input is size/factor.
        edit=dict(task="inpaint", images=(), count=4, mask="", box=(0.25, 0.25, 0.75, 0.75),
                  labels=(), samples=3, factor=2),
        # mode=evaluate (srdd_jax/evaluation/evaluate.py): per_class samples of every class with
        # config.sample.settings, scored against the first reference_images (0 = all) of `split`
        # with a dataset classifier (classifier_dir, default <workdir>/evaluate/classifier; trained
        # for classifier_steps on the first classifier_images (0 = all) training images if absent);
        # k-NN precision/recall with pr_k; NLL on the first nll_images (0 = all) reference images,
        # also under the null class if nll_unconditional. inception_weights ('' = skip): the FID
        # Inception .pth/.npz. reference_cache: real statistics (default <workdir>/evaluate/reference).
        evaluate=dict(per_class=100, batch_size=100, seed=0, split="test", reference_images=10000,
                      nll_images=10000, nll_unconditional=True, classifier_dir="",
                      classifier_steps=1500, classifier_images=60000, pr_k=3, inception_weights="",
                      inception_batch_size=50, reference_cache=""),
    ))
    cfg.tokenizer_training.vq_weight = 1.0
    cfg.tokenizer_training.beta = 0.25
    cfg.training.label_smoothing = 0.0
    # A token cache written by mode=tokenize (WORKDIR/tokens/<split>): the step skips the encoder.
    cfg.training.cached_tokens = ""
    # Optional tokenizer losses (0 = off). perceptual: LPIPS (VGG16) between image and
    # reconstruction, with weights from lpips_weights (one .npz, or the lpips package's vgg.pth
    # together with torchvision's vgg16 .pth in vgg16_weights). adversarial: PatchGAN hinge loss
    # from step adversarial_start, discriminator trained by disc_optim.
    cfg.tokenizer_training.update(dict(
        perceptual_weight=0.0, lpips_weights="", vgg16_weights="", adversarial_weight=0.0,
        adversarial_start=0, disc_channels=64, disc_layers=3, disc_optim=optim_config(4e-4)))
    # mode=distill: a student on the subset `patch_nums` of the teacher's scales, initialised from
    # `teacher` (a model directory; default <workdir>/model); written to <workdir>/student.
    cfg.distill.update(dict(teacher="", patch_nums=(), label_smoothing=0.0))
    return cfg


def tiny_evaluation(cfg: ml_collections.ConfigDict) -> None:
    """Shrinks config.evaluate for smoke tests (a few samples, images and classifier steps)."""
    cfg.evaluate.update(dict(per_class=4, batch_size=20, reference_images=200, nll_images=40,
                             classifier_steps=20, classifier_images=1000))


def tiny_model(num_classes: int = 10, in_channels: int = 1) -> ml_collections.ConfigDict:
    """A model small enough for unit tests: 16 px images, latent 4x4, two blocks."""
    return models.model_config(
        (1, 2, 4),
        models.tokenizer_config(ch=32, ch_mult=(1, 1, 2), num_res_blocks=1, z_channels=8,
                                vocab_size=64, in_channels=in_channels),
        models.transformer_config(depth=2, embed_dim=64, num_heads=2, num_classes=num_classes,
                                  drop_path_rate=0.0, remat="none"))


def paper_config(root: str, num_classes: int, variant: str = "") -> ml_collections.ConfigDict:
    """The paper's fine-tuning setting: 256 px, d16, Markov mask, VAR's released tokenizer, an image
    folder at `root`; point config.init.tokenizer / init.transformer at a converted VAR model
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
        model = models.model_config(transformer=models.transformer_config(
            16, num_classes=num_classes, mask="markov"))
        cfg = base_config(model)
        cfg.training.update(dict(steps=100_000, batch_size=256, checkpoint_every=5000))
        cfg.training.optim.update(dict(base_lr=1e-4, warmup_steps=2000, final_lr_ratio=0.1))
        cfg.sample.settings.update(dict(cfg=5.0, top_k=900, top_p=0.96, mr=True))
        cfg.mesh.update(dict(data=-1, fsdp=1))
    cfg.data.update(dict(source="image_folder", root=root))
    return cfg
