"""Any folder of images: `root/<class>/*.png|jpg` (or a flat folder as one class).

    python -m srdd_jax.main --config=configs/image_folder.py --workdir=DIR --config.data.root=IMAGES

Trains a tokenizer, then an SRDD (Markov mask) transformer. The channels (grey or RGB), the
number of classes and the class names are read from the folder at start-up and put into the model
config (`config.model_from_data`); `config.data.image_size` (default 32) sets the scale pyramid.
The default size trains in under 15 minutes on 2 CPU cores. Variants `:64`, `:128`, `:256` are
larger models for larger images (their cost is in the README), trained with VAR's random crop;
`:tiny` is the smoke-test variant. `--config.data.source=shards --config.data.root=SHARDS` trains
from the folder's prepared shards (`--config.mode=prepare`).
"""

import ml_collections

from srdd_jax import experiment_config, scales
from srdd_jax.transformer.spec import DEFAULT_REMAT

SIZES = ("32", "64", "128", "256")


def _model(image_size: int, halvings: int, ch: int, vocab_size: int, depth: int, embed_dim: int,
           num_heads: int, remat: str = DEFAULT_REMAT) -> ml_collections.ConfigDict:
    """A tokenizer that halves the image `halvings` times and a transformer over the scales.pyramid
    of its latent side; channels and classes are placeholders that the data replaces."""
    return experiment_config.model_config(
        scales.pyramid(image_size // 2 ** halvings),
        experiment_config.tokenizer_config(ch=ch, ch_mult=(1,) * halvings + (2,), num_res_blocks=1,
                                z_channels=16, vocab_size=vocab_size, in_channels=3,
                                using_sa=False, using_mid_sa=False),
        experiment_config.transformer_config(depth=depth, embed_dim=embed_dim, num_heads=num_heads,
                                  num_classes=1, drop_path_rate=0.0, mask="markov", remat=remat),
    )


def _runs(cfg, tokenizer_steps: int, steps: int, batch_size: int, base_lr: float) -> None:
    cfg.tokenizer_training.update(dict(steps=tokenizer_steps, batch_size=batch_size,
                                       checkpoint_every=max(tokenizer_steps // 2, 1)))
    cfg.tokenizer_training.optim.update(dict(base_lr=2 * base_lr, warmup_steps=30))
    cfg.training.update(dict(steps=steps, batch_size=batch_size, checkpoint_every=max(steps // 2, 1)))
    cfg.training.optim.update(dict(base_lr=base_lr, warmup_steps=30))


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    variant = variant or "32"
    if variant == "tiny":
        cfg = experiment_config.base_config(experiment_config.tiny_model(num_classes=1, in_channels=3))
        for run in (cfg.tokenizer_training, cfg.training):
            run.steps, run.batch_size, run.log_every, run.checkpoint_every = 4, 8, 2, 2
            run.optim.warmup_steps = 1
        cfg.sample.per_class, cfg.sample.batch_size = 2, 8
        experiment_config.tiny_evaluation(cfg)
    elif variant == "32":  # 8x8 latent in the demo's scales 1-2-4-8 (85 tokens): sized for 2 CPU cores
        cfg = experiment_config.base_config(_model(32, 2, ch=32, vocab_size=512, depth=4, embed_dim=128,
                                                   num_heads=4, remat="none"))
        cfg.model.patch_nums = (1, 2, 4, 8)
        _runs(cfg, tokenizer_steps=400, steps=900, batch_size=32, base_lr=6e-3)
    elif variant == "64":  # 8x8 latent, 155 tokens
        cfg = experiment_config.base_config(_model(64, 3, ch=64, vocab_size=512, depth=8, embed_dim=384,
                                                   num_heads=6, remat="none"))
        _runs(cfg, tokenizer_steps=3000, steps=10_000, batch_size=64, base_lr=1e-3)
    elif variant == "128":  # 16x16 latent, 680 tokens (VAR's pyramid)
        cfg = experiment_config.base_config(_model(128, 3, ch=64, vocab_size=1024, depth=12,
                                                   embed_dim=768, num_heads=12))
        _runs(cfg, tokenizer_steps=10_000, steps=30_000, batch_size=128, base_lr=4e-4)
    elif variant == "256":  # VAR's tokenizer and d16: start from VAR with init.tokenizer/transformer
        cfg = experiment_config.base_config(experiment_config.model_config(
            transformer=experiment_config.transformer_config(16, num_classes=1, mask="markov")))
        _runs(cfg, tokenizer_steps=50_000, steps=100_000, batch_size=256, base_lr=1e-4)
        cfg.training.optim.warmup_steps = 2000
    else:
        raise ValueError(f"unknown variant {variant!r}: choose {', '.join(SIZES)} or tiny")
    cfg.model_from_data = True
    image_size = 16 if variant == "tiny" else int(variant)
    cfg.data.update(dict(source="image_folder", root="", image_size=image_size))
    if variant in ("64", "128", "256"):  # VAR's random training crop (the folder streams); the
        cfg.data.train_crop = "random"   # 32 px and tiny variants keep the centre, in memory
    cfg.sample.settings.update(dict(cfg=3.0, top_p=0.9))
    return cfg
