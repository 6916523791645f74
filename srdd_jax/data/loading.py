"""Images for a run: the source named by a `DataSpec`, at the size a model spec takes.

`load(data, spec, split)` gives an in-memory `sources.Source`, or a stream (an image folder, a
TFDS split or prepared shards) with the same attributes and `batches`; `facts(data)` reads the
channels and class names without loading the images; `iterator` is the resumable batch iterator
of this process's share (all of them the grain pipeline of `data/pipeline.py`, except a TFDS
split stored as TFRecord).
"""

from __future__ import annotations

import jax
from absl import logging

from srdd_jax import models
from srdd_jax.data import pipeline, sources
from srdd_jax.data.spec import DataSpec


def image_shape(spec: models.ModelSpec) -> tuple[int, int]:
    """(image size, channels) of the model's tokenizer."""
    return models.Model(spec).image_size, spec.tokenizer.in_channels


def load(data: DataSpec, spec: models.ModelSpec, split: str = ""):
    """The data's images (split: default data.split) at the model's size and channels: an
    in-memory `sources.Source`, or a stream (`FolderStream`, `TfdsStream`, `shards.Shards`) with
    the same attributes and `batches`."""
    size, channels = image_shape(spec)
    split = split or data.split
    if data.source == "fashion_mnist":
        return sources.fashion_mnist(split, size, channels, data.root or sources.FASHION_MNIST_DIR)
    workers = pipeline.default_workers() if data.workers < 0 else data.workers
    if data.source == "shards":
        from srdd_jax.data import shards

        return shards.Shards(data.root, size, channels, data.train_crop, data.flip, workers)
    if data.source == "tfds":
        from srdd_jax.data import tfds_source

        stream = tfds_source.open_split(data.name, split, size, channels, data.tfds_data_dir,
                                        data.manual_dir, data.shuffle_buffer, data.train_crop,
                                        data.flip, workers)
        where = f"{data.name}/{split}"
    else:
        from srdd_jax.data import image_folder

        stream = image_folder.FolderStream(data.root, size, channels, data.train_crop, data.flip,
                                            workers)
        where = data.root
    size_mb = stream.num_examples * size * size * channels / 2**20
    augmented = data.train_crop == "random" or data.flip
    if data.streaming == "always" or augmented or (data.streaming == "auto"
                                                   and size_mb > data.max_in_memory_mb):
        logging.info("%s: streaming %d images (%.0f MiB at %d px; data.streaming=%s, train_crop=%s,"
                     " %d decoding workers)", where, stream.num_examples, size_mb, size,
                     data.streaming, data.train_crop, workers)
        return stream
    return sources.in_memory(stream, where)


def load_logged(data: DataSpec, spec: models.ModelSpec, split: str = "") -> sources.Source:
    """`load`, with a line on what was found."""
    source = load(data, spec, split)
    logging.info("data: %d images, %s, %d unreadable skipped", source.num_examples,
                 sources.listed(source.class_names), len(source.skipped))
    return source


def facts(data: DataSpec) -> sources.DataFacts:
    """Channels and class names of the data's images, read without loading them."""
    if data.source == "fashion_mnist":
        return sources.FASHION_MNIST_FACTS
    if data.source == "tfds":
        from srdd_jax.data import tfds_source

        return tfds_source.facts(data.name, data.tfds_data_dir, data.manual_dir)
    if data.source == "shards":
        from srdd_jax.data import shards

        return shards.facts(data.root)
    from srdd_jax.data import image_folder

    return image_folder.facts(data.root)


def iterator(source, batch_size: int, seed: int):
    """The resumable iterator over this process's share of `source` (global `batch_size`)."""
    return source.batches(batch_size, seed, jax.process_index(), jax.process_count())
