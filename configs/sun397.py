"""SUN397 (397 scene classes) in the paper's setting: 256 px, d16, Markov mask.

See `srdd_jax.experiment_config.paper_config`. Run with
`--config=configs/sun397.py --config.data.root=DIR` (DIR/<class>/*.png|jpg) and add
`--config.init.tokenizer=MODEL --config.init.transformer=MODEL` to start from converted VAR weights.
Or read TFDS's copy: `--config.data.source=tfds --config.data.name=sun397` (streamed, as it exceeds
`data.max_in_memory_mb` at 256 px).
`configs/sun397.py:tiny` is the smoke-test variant.
"""

from srdd_jax import experiment_config


def get_config(variant: str = ""):
    return experiment_config.paper_config("data/sun397", num_classes=397, variant=variant)
