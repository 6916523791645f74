"""The released VAR ImageNet models (for converted weights): `--config=configs/var_imagenet.py:d16`.

Variants: d16, d20, d24, d30 (256 px) and d36 (512 px, shared AdaLN), plus `tiny` for tests.
Default mode: sample from a converted model (`--config.init.model=DIR`). The released weights use
the block-causal `var` mask; set `--config.model.transformer.mask=markov`
to fine-tune them as SRDD.
"""

import ml_collections

from srdd_jax import experiment_config, models


def get_config(variant: str = "d16") -> ml_collections.ConfigDict:
    variant = variant or "d16"
    if variant == "tiny":
        model = experiment_config.model_config(
            tokenizer=experiment_config.tokenizer_config(ch=32, vocab_size=128, z_channels=8),
            transformer=experiment_config.transformer_config(depth=2, embed_dim=128, num_heads=2,
                                                  num_classes=10, mask="var"),
        )
    elif variant in ("d16", "d20", "d24", "d30"):
        depth = int(variant[1:])
        model = experiment_config.model_config(
            transformer=experiment_config.transformer_config(depth, mask="var"))
    elif variant == "d36":
        model = experiment_config.model_config(
            models.PATCH_NUMS_512,
            transformer=experiment_config.transformer_config(36, mask="var", shared_aln=True),
        )
    else:
        raise ValueError(f"unknown variant {variant!r}: choose tiny, d16, d20, d24, d30 or d36")
    cfg = experiment_config.base_config(model)
    cfg.mode = "sample"  # with --config.init.model=DIR from `python -m srdd_jax.convert`
    cfg.sample.settings.update(dict(cfg=1.5, top_k=900, top_p=0.96))
    if variant != "tiny":  # a few ImageNet classes instead of all 1000 (VAR's demo classes)
        cfg.sample.update(dict(labels=(207, 360, 387, 974, 88, 979, 417, 279), per_class=2, batch_size=16))
    if variant == "tiny":
        experiment_config.tiny_evaluation(cfg)
    return cfg
