"""mode=prepare: an image folder written once as ArrayRecord shards (`data/shards.py`) at the
model's size, for `--config.data.source=shards --config.data.root=WORKDIR/shards/<split>`."""

from __future__ import annotations

import os

import jax
from absl import logging

from srdd_jax import errors
from srdd_jax.data import image_folder, loading, shards
from srdd_jax.modes import model_resolver
from srdd_jax.modes import workdir as workdir_record
from srdd_jax.modes.specs import ExperimentSpec

READ_ONLY = True  # writes only WORKDIR/shards/<split>; may run beside a training run


def run(config, specs: ExperimentSpec, workdir: str, mesh, overrides: dict) -> str:
    """Writes data.root's images as shards in WORKDIR/shards/<data.split> and returns that path.
    A finished shard set there is kept: an identical one is reused, another is refused."""
    del mesh, overrides
    if specs.data.source != "image_folder":
        raise errors.ConfigError(
            f"mode=prepare writes an image folder as shards, not data.source="
            f"{specs.data.source!r}: set --config.data.source=image_folder --config.data.root=DIR "
            "(a TFDS split is prepared as ArrayRecord by `tfds build --file_format=array_record`)")
    if jax.process_count() > 1:
        raise errors.ConfigError("mode=prepare runs as one process: start it once, on one host, "
                                 "and copy the shards where the pod reads them")
    spec = model_resolver.for_training(specs, config.model_from_data)
    size, channels = loading.image_shape(spec)
    directory = os.path.join(workdir, "shards", "".join(c if c.isalnum() else "_"
                                                         for c in specs.data.split))
    stream = image_folder.FolderStream(specs.data.root, size, channels, workers=0)
    if os.path.isfile(os.path.join(directory, shards.META_FILE)):
        meta = shards.read_meta(directory)
        wanted = dict(image_size=size, channels=channels, encoding=specs.prepare.encoding,
                      source=stream.root, class_names=list(stream.class_names))
        if any(meta.get(key) != value for key, value in wanted.items()):
            raise errors.OutputExistsError(
                f"{directory} already holds shards of another preparation ({meta['source']} at "
                f"{meta['image_size']} px, {meta['encoding']}): use another --workdir or "
                "--config.data.split, or delete that folder yourself")
        logging.info("%s already holds these %d images as %d shards: nothing to do", directory,
                     meta["num_examples"], len(meta["shards"]))
        return directory
    workdir_record.record(workdir, config, spec)
    meta = shards.write(stream, directory, specs.prepare)
    logging.info("wrote %d images (%d unreadable skipped) as %d %s shards to %s; train from them "
                 "with --config.data.source=shards --config.data.root=%s", meta["num_examples"],
                 meta["skipped"], len(meta["shards"]), meta["encoding"], directory, directory)
    return directory
