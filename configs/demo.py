"""The embedded default: a small tokenizer and SRDD (Markov mask) model on Fashion-MNIST.

Trains on 2 CPU cores within minutes and writes a grid of samples, one column per class.
`python -m srdd_jax.main --config=configs/demo.py --workdir=workdirs/demo`;
`--config=configs/demo.py:tiny` is the smoke-test variant.
"""

from srdd_jax import experiment_config


def get_config(variant: str = ""):
    if variant == "tiny":
        cfg = experiment_config.base_config(experiment_config.tiny_model())
        for run in (cfg.tokenizer_training, cfg.training):
            run.steps, run.batch_size, run.log_every, run.checkpoint_every = 4, 8, 2, 2
            run.optim.warmup_steps = 1
        cfg.sample.per_class = 1
        cfg.sample.batch_size = 10
        experiment_config.tiny_evaluation(cfg)
        return cfg
    if variant:
        raise ValueError(f"unknown variant {variant!r}: use '' or 'tiny'")
    # 16 px grayscale images, an 8x8 latent in 4 scales (85 tokens): sized for 2 CPU cores.
    model = experiment_config.model_config(
        (1, 2, 4, 8),
        experiment_config.tokenizer_config(ch=32, ch_mult=(1, 1), num_res_blocks=1, z_channels=8,
                                vocab_size=128, in_channels=1, using_sa=False, using_mid_sa=False),
        experiment_config.transformer_config(depth=3, embed_dim=128, num_heads=2, num_classes=10,
                                  drop_path_rate=0.0, mask="markov", remat="none"),
    )
    cfg = experiment_config.base_config(model)
    # Peak learning rates are base_lr * batch / 256: 1e-3 (tokenizer) and 5e-4 (transformer).
    cfg.tokenizer_training.update(dict(steps=350, batch_size=64, checkpoint_every=350))
    cfg.tokenizer_training.optim.update(dict(base_lr=4e-3, warmup_steps=30))
    cfg.training.update(dict(steps=500, batch_size=64, checkpoint_every=250))
    cfg.training.optim.update(dict(base_lr=2e-3, warmup_steps=30))
    cfg.sample.settings.cfg = 3.0
    cfg.sample.settings.top_p = 0.9
    return cfg
