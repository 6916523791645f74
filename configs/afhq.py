"""AFHQ (cat, dog, wild) in the paper's setting: 256 px, d16, Markov mask.

See `srdd_jax.experiment_config.paper_config`. Run with
`--config=configs/afhq.py --config.data.root=DIR` (DIR/<class>/*.png|jpg) and add
`--config.init.tokenizer=MODEL --config.init.transformer=MODEL` to start from converted VAR weights.
`configs/afhq.py:tiny` is the smoke-test variant.
"""

from srdd_jax import experiment_config


def get_config(variant: str = ""):
    return experiment_config.paper_config("data/afhq/train", num_classes=3, variant=variant)
