"""The embedded default: a small tokenizer and SRDD (Markov mask) model on Fashion-MNIST.

Trains on 2 CPU cores within minutes and writes a grid of samples, one column per class.
`python -m srdd_jax.main --config=configs/demo.py --workdir=workdirs/demo`;
`--config=configs/demo.py:tiny` is the smoke-test variant.
"""

from srdd_jax import experiment_config, models


def get_config(variant: str = ""):
    if variant == "tiny":
        cfg = experiment_config.base_config(experiment_config.tiny_model())
        for run in (cfg.tokenizer_training, cfg.training):
            run.steps, run.batch_size, run.log_every, run.checkpoint_every = 4, 8, 2, 2
            run.optim.warmup_steps = 1
        cfg.sample.per_class = 1
        cfg.sample.batch_size = 10
        return cfg
    if variant:
        raise ValueError(f"unknown variant {variant!r}: use '' or 'tiny'")
    model = models.model_config(
        (1, 2, 3, 4, 6, 8),
        models.tokenizer_config(ch=32, ch_mult=(1, 1, 2), num_res_blocks=1, z_channels=16,
                                vocab_size=256, in_channels=1),
        models.transformer_config(depth=4, embed_dim=192, num_heads=3, num_classes=10,
                                  drop_path_rate=0.0, mask="markov"),
    )
    cfg = experiment_config.base_config(model)
    cfg.tokenizer_training.steps = 1500
    cfg.training.steps = 3000
    cfg.training.optim.base_lr = 4e-4
    cfg.sample.settings.cfg = 3.0
    cfg.sample.settings.top_k = 100
    return cfg
