"""Images for a run: the source named by a data config, at the size a model config takes.

`load(data_cfg, model_cfg, split)` gives an in-memory `sources.Source`, or for large TFDS splits a
`tfds_source.TfdsStream` with the same attributes and `batches`; `facts(data_cfg)` reads the
channels and class names without loading the images; `iterator` is the resumable batch iterator
of this process's share.
"""

from __future__ import annotations

import jax
import ml_collections

from srdd_jax import models
from srdd_jax.data import sources
from srdd_jax.data.pipeline import make_iterator


def image_shape(model_cfg: ml_collections.ConfigDict) -> tuple[int, int]:
    """(image size, channels) of the model's tokenizer."""
    return models.build_tokenizer(model_cfg).image_size, model_cfg.tokenizer.in_channels


def load(data_cfg: ml_collections.ConfigDict, model_cfg: ml_collections.ConfigDict,
         split: str = "") -> sources.Source:
    """data_cfg's images (split: default data_cfg.split) at the model's size and channels."""
    size, channels = image_shape(model_cfg)
    split = split or data_cfg.split
    if data_cfg.source == "fashion_mnist":
        return sources.fashion_mnist(split, size, channels, data_cfg.root or sources.FASHION_MNIST_DIR)
    if data_cfg.source == "tfds":
        from srdd_jax.data import tfds_source

        return tfds_source.load(data_cfg.name, split, size, channels, data_cfg.tfds_data_dir,
                                data_cfg.manual_dir, data_cfg.max_in_memory_mb,
                                data_cfg.shuffle_buffer)
    return sources.image_folder(data_cfg.root, size, channels)


def facts(data_cfg: ml_collections.ConfigDict) -> sources.DataFacts:
    """Channels and class names of data_cfg's images, read without loading them."""
    if data_cfg.source == "fashion_mnist":
        return sources.FASHION_MNIST_FACTS
    if data_cfg.source == "tfds":
        from srdd_jax.data import tfds_source

        return tfds_source.facts(data_cfg.name, data_cfg.tfds_data_dir, data_cfg.manual_dir)
    return sources.image_folder_facts(data_cfg.root)


def iterator(source, batch_size: int, seed: int):
    """The resumable iterator over this process's share of `source` (global `batch_size`)."""
    return make_iterator(source, batch_size, seed, jax.process_index(), jax.process_count())
