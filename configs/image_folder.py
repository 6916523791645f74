"""Any folder of images: `root/<class>/*.png|jpg` (or a flat folder as one class).

    python -m srdd_jax.main --config=configs/image_folder.py --workdir=DIR --config.data.root=IMAGES

Trains a tokenizer, then an SRDD (Markov mask) transformer. The channels (grey or RGB), the
number of classes and the class names are read from the folder at start-up and put into the model
config (`config.model_from_data`); `config.data.image_size` (default 32) sets the scale pyramid.
The default size trains in under 15 minutes on 2 CPU cores. Variants `:64`, `:128`, `:256` are
larger models for larger images (their cost is in the README); `:tiny` is the smoke-test variant.
"""

import ml_collections

from srdd_jax import experiment_config, models, scales

SIZES = ("32", "64", "128", "256")


def _model(image_size: int, downsampling_levels: int, ch: int, vocab_size: int, depth: int,
           embed_dim: int, num_heads: int) -> ml_collections.ConfigDict:
    """A tokenizer that downsamples 2**downsampling_levels times and a transformer over the
    scales.pyramid of its latent; channels and classes are placeholders the data replaces."""
    return models.model_config(
        scales.pyramid(image_size // 2 ** downsampling_levels),
        models.tokenizer_config(ch=ch, ch_mult=(1,) * downsampling_levels + (2,), num_res_blocks=1,
                                z_channels=16, vocab_size=vocab_size, in_channels=3,
                                using_sa=False, using_mid_sa=False),
        models.transformer_config(depth=depth, embed_dim=embed_dim, num_heads=num_heads,
                                  num_classes=1, drop_path_rate=0.0, mask="markov"),
    )


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    variant = variant or "32"
    if variant == "tiny":
        cfg = experiment_config.base_config(experiment_config.tiny_model(num_classes=1, in_channels=3))
        for run in (cfg.tokenizer_training, cfg.training):
            run.steps, run.batch_size, run.log_every, run.checkpoint_every = 4, 8, 2, 2
            run.optim.warmup_steps = 1
        cfg.sample.per_class, cfg.sample.batch_size = 2, 8
        experiment_config.tiny_evaluation(cfg)
        cfg.data.image_size = 16
    elif variant == "32":
        cfg = experiment_config.base_config(_model(32, 2, ch=32, vocab_size=256, depth=4,
                                                   embed_dim=128, num_heads=4))
        cfg.tokenizer_training.update(dict(steps=400, batch_size=32, checkpoint_every=400))
        cfg.tokenizer_training.optim.update(dict(base_lr=8e-3, warmup_steps=30))
        cfg.training.update(dict(steps=600, batch_size=32, checkpoint_every=300))
        cfg.training.optim.update(dict(base_lr=4e-3, warmup_steps=30))
        cfg.data.image_size = 32
    else:
        raise ValueError(f"unknown variant {variant!r}: choose {', '.join(SIZES)} or tiny")
    cfg.model_from_data = True
    cfg.data.update(dict(source="image_folder", root=""))
    cfg.sample.settings.update(dict(cfg=3.0, top_p=0.9))
    return cfg
