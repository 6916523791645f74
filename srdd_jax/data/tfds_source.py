"""Named TensorFlow Datasets (`data.source="tfds"`): sun397, imagenet2012, ... at the model's size.

Every image gets VAR's transforms, the same code as image folders (`image_files`): shorter side
to round(1.125 * size) with Lanczos, then for training the `train_crop` (random or centre, and the
mirror of `flip`), for evaluation and token caches the centre crop; NHWC uint8, then float32 in
[-1, 1] per batch.

A split whose resized images fit in `max_in_memory_mb` (and that is centre-cropped for training)
is materialised as an in-memory `Source`. Larger splits (imagenet2012: 1.28M images) are streamed
by `TfdsStream` and never held in RAM:

- A split prepared as ArrayRecord (`tfds build --file_format=array_record`, or the builder's
  `file_format`) is random-access, so it is read by the grain pipeline of every other source
  (`data/pipeline.py`: per-epoch permutation, per-process rows, `workers` decoding processes,
  state {'step'}).
- A TFRecord split is read by tf.data (`StreamIterator`): each process reads its own equal part
  (`tfds.split_for_jax_process`, remainder dropped); epoch e reads the files in an order drawn
  from (seed, e, process), then shuffles the still-encoded records in a `shuffle_buffer` window
  with that seed, both deterministic in tf.data, so (epoch, step within epoch) fixes every later
  batch; a resume rebuilds the epoch's pipeline and `skip`s the consumed records before
  decoding. Rejected: tf.data's checkpointable iterator stores the shuffle buffer (GBs of
  images) and cannot be kept in the JSON data state that orbax saves beside the train state.

Unreadable images are counted and logged. In memory they are dropped; in a stream each one's slot
in its batch is filled by a readable image of the same batch, so batch boundaries (and thus the
resumable position) never depend on which images failed.
"""

from __future__ import annotations

import functools
import io
import os

import numpy as np
from absl import logging

from srdd_jax import errors, image_files
from srdd_jax.data import image_folder, pipeline, sources


@functools.cache
def _tfds():
    import tensorflow as tf
    import tensorflow_datasets as tfds

    try:
        tf.config.set_visible_devices([], "GPU")  # tf.data stays on the CPU, off the accelerators
    except RuntimeError:  # TensorFlow already initialised (e.g. by a summary writer)
        logging.warning("TensorFlow was initialised before the TFDS source; it may use the GPUs")
    return tf, tfds


def builder(name: str, data_dir: str = "", manual_dir: str = ""):
    """The prepared TFDS builder of `name` (prepared here first if it is not yet, on one process).

    Raises ValueError with the fix for an unknown name, a missing manual download or a dataset that
    a multi-process run would have to prepare.
    """
    import jax

    _, tfds = _tfds()
    if not name:
        raise errors.ConfigError("config.data.name is empty: name the TFDS dataset, e.g. "
                         "--config.data.name=sun397 (data.source='tfds')")
    try:
        dataset = tfds.builder(name, data_dir=data_dir or None)
    except tfds.core.registered.DatasetNotFoundError as err:
        raise errors.ConfigError(f"config.data.name={name!r} is not a dataset known to tensorflow-datasets "
                         f"{tfds.__version__}: check the spelling (tfds.list_builders()) or "
                         f"upgrade with `pip install -U tensorflow-datasets` ({err})") from None
    if dataset.is_prepared():
        return dataset
    where = data_dir or "the default ~/tensorflow_datasets"
    if dataset.MANUAL_DOWNLOAD_INSTRUCTIONS:
        if not manual_dir:
            raise errors.ConfigError(
                f"TFDS dataset {name} is not prepared in {where} and needs a manual download: set "
                f"config.data.manual_dir to the folder holding its files. {name} says: "
                f"{dataset.MANUAL_DOWNLOAD_INSTRUCTIONS.strip()}")
        if not os.path.isdir(manual_dir) and "://" not in manual_dir:
            raise errors.ConfigError(f"config.data.manual_dir={manual_dir!r} does not exist: point it at "
                             f"the folder holding {name}'s manually downloaded files")
    if jax.process_count() > 1:
        raise errors.ConfigError(f"TFDS dataset {name} is not prepared in {where}: prepare it once before a "
                         f"multi-process run, e.g. `tfds build {name} --data_dir=DIR"
                         + (f" --manual_dir={manual_dir}`" if manual_dir else "`"))
    logging.info("preparing TFDS dataset %s in %s (once)", name, where)
    dataset.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir or None))
    return dataset


def _class_names(features) -> tuple[str, ...]:
    """The label feature's names (or indices); one class 'all' for a dataset without labels."""
    if "label" not in features:
        return ("all",)
    names = getattr(features["label"], "names", None)
    return tuple(names or (str(i) for i in range(features["label"].num_classes)))


def facts(name: str, data_dir: str = "", manual_dir: str = "") -> sources.DataFacts:
    """Channels (from the image feature's shape; None if it does not say) and class names."""
    features = builder(name, data_dir, manual_dir).info.features
    if "image" not in features:
        raise errors.ConfigError(
            f"TFDS dataset {name} has no 'image' feature (features: {', '.join(features)})")
    return sources.DataFacts(features["image"].shape[-1], _class_names(features),
                             f"the images of TFDS dataset {name}")


def _decode(encoded: bytes, image_size: int, channels: int, crop_at=None, flip: bool = False
            ) -> tuple[np.ndarray, bool]:
    """Encoded image -> ((size, size, channels) uint8, readable?) by VAR's transforms (the centre
    crop unless `crop_at`); zeros when unreadable."""
    try:
        return image_files.decode(io.BytesIO(encoded), "RGB" if channels == 3 else "L", image_size,
                                  crop_at, flip), True
    except image_files.UnreadableImageError as err:
        logging.warning("skipping an unreadable image: %s", err)
        return np.zeros((image_size, image_size, channels), np.uint8), False


class TfdsStream(pipeline.ImageRecords):
    """A streamed TFDS split (see the module docstring for order and resume).

    Attributes mirror `Source` where they can: num_examples, class_names, skipped (descriptions of
    unreadable images met so far). `train_crop`, `flip`: the training transform; `workers`:
    decoding processes of the grain pipeline (ArrayRecord splits).
    """

    def __init__(self, dataset, split: str, image_size: int, channels: int, shuffle_buffer: int,
                 train_crop: str = "center", flip: bool = False, workers: int = 0):
        features = dataset.info.features
        if "image" not in features:
            raise errors.ConfigError(f"TFDS dataset {dataset.name} has no 'image' feature "
                             f"(features: {', '.join(features)})")
        self.dataset, self.split = dataset, split
        self.image_size, self.channels, self.shuffle_buffer = image_size, channels, shuffle_buffer
        self.train_crop, self.flip, self.workers = train_crop, flip, workers
        self.has_labels = "label" in features
        self.class_names = _class_names(features)
        self.num_examples = dataset.info.splits[split].num_examples
        self.skipped: list[str] = []
        self.random_access = str(getattr(dataset.info, "file_format", "")).endswith("ARRAY_RECORD")
        self.where = f"{dataset.name}/{split}"
        self._source = None  # the split's ArrayRecord data source, opened on the first read

    # ------------------------------------------------------------ pipeline.Records (ArrayRecord)
    def read(self, index: int, rng: np.random.Generator) -> dict:
        if self._source is None:
            _, tfds = _tfds()
            self._source = self.dataset.as_data_source(
                self.split, decoders={"image": tfds.decode.SkipDecoding()})
        example = self._source[index]
        crop_at, flip = image_folder.training_crop(self.train_crop, self.flip, rng)
        image, ok = _decode(example["image"], self.image_size, self.channels, crop_at, flip)
        return self.example(image if ok else None, example["label"] if self.has_labels else 0)

    def __getstate__(self) -> dict:  # to grain's workers: each opens its own data source
        return dict(self.__dict__, _source=None)

    # ----------------------------------------------------------------------------- tf.data
    def records(self, split: str, shuffle_seed: int | None, skip: int = 0, crop_seed=None):
        """tf.data of decoded (image uint8 (size, size, C), label int32, readable bool) examples:
        file order and a record-level shuffle from `shuffle_seed` (None: the stored order), with
        the first `skip` records dropped before decoding. With `crop_seed`, the training
        transform, drawn from (crop_seed, record number); else the centre crop."""
        tf, tfds = _tfds()
        options = tf.data.Options()
        options.deterministic = True
        ds = self.dataset.as_dataset(
            split=split, shuffle_files=shuffle_seed is not None,
            decoders={"image": tfds.decode.SkipDecoding()},
            read_config=tfds.ReadConfig(shuffle_seed=shuffle_seed, options=options))
        ds = ds.map(lambda ex: (ex["image"], tf.cast(ex["label"], tf.int32) if self.has_labels
                                else tf.constant(0, tf.int32)))
        if shuffle_seed is not None:
            ds = ds.shuffle(self.shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=False)
        size, channels = self.image_size, self.channels

        def read(number, encoded):
            if crop_seed is None:
                return _decode(encoded, size, channels)
            rng = np.random.default_rng([crop_seed, pipeline.RANDOM_STREAM, int(number)])
            return _decode(encoded, size, channels,
                           *image_folder.training_crop(self.train_crop, self.flip, rng))

        def decode(number, example):
            encoded, label = example
            image, ok = tf.numpy_function(read, [number, encoded], (tf.uint8, tf.bool),
                                          stateful=False)
            image.set_shape((size, size, channels))
            ok.set_shape(())
            return image, label, ok

        return ds.enumerate().skip(skip).map(decode, num_parallel_calls=tf.data.AUTOTUNE,
                                             deterministic=True)

    def ordered(self, batch: int):
        """The whole split in stored order: yields (images uint8 (b, size, size, C), labels (b,)),
        b <= batch, unreadable images dropped and counted."""
        for images, labels, ok in self.records(self.split, None).batch(batch).as_numpy_iterator():
            self._count(int(np.sum(~ok)), "stored order")
            yield images[ok], labels[ok]

    def head(self, n: int) -> np.ndarray:
        """The first n readable images in stored order, float32 (n, size, size, C) in [-1, 1]."""
        images, _ = next(self.ordered(n))
        return pipeline.to_unit_range(images)

    def batches(self, global_batch: int, seed: int, process_index: int = 0, process_count: int = 1):
        """This process's resumable training batches: the grain pipeline for an ArrayRecord split,
        else `StreamIterator`."""
        if self.random_access:
            return super().batches(global_batch, seed, process_index, process_count)
        return StreamIterator(self, global_batch, seed, process_index, process_count)

    def _count(self, bad: int, where: str) -> None:
        if bad:
            self.skipped.extend([f"{self.dataset.name}/{self.split} ({where})"] * bad)
            logging.warning("%d unreadable images in %s/%s so far", len(self.skipped),
                            self.dataset.name, self.split)


class StreamIterator:
    """Resumable batches of a `TfdsStream` for one process, the `BatchIterator` interface:
    {'image': float32 (b, H, W, C) in [-1, 1], 'label': int32 (b,)} with b = global_batch /
    process_count; state {'epoch', 'position'} (position: steps done in the epoch)."""

    def __init__(self, stream: TfdsStream, global_batch: int, seed: int, process_index: int = 0,
                 process_count: int = 1):
        _, tfds = _tfds()
        self.local_batch = pipeline.local_batch(global_batch, process_count)
        self.stream, self.global_batch, self.seed = stream, global_batch, seed
        self.process_index = process_index
        self.split = tfds.split_for_jax_process(stream.split, process_index=process_index,
                                                process_count=process_count, drop_remainder=True)
        self.steps_per_epoch = stream.dataset.info.splits[self.split].num_examples // self.local_batch
        if self.steps_per_epoch < 1:
            raise errors.ConfigError(f"batch_size={global_batch} exceeds the {stream.num_examples} images of "
                             f"{stream.dataset.name}/{stream.split}: lower batch_size")
        self.epoch, self.position, self._batches = 0, 0, None

    def batch_spec(self) -> dict:
        """See `pipeline.batch_spec`."""
        return pipeline.batch_spec(self.stream, self.global_batch)

    def get_state(self) -> dict:
        return {"epoch": int(self.epoch), "position": int(self.position)}

    def set_state(self, state: dict) -> None:
        self.epoch, self.position, self._batches = int(state["epoch"]), int(state["position"]), None

    def _open(self):
        seed = int(np.random.default_rng([self.seed, self.epoch, self.process_index]).integers(2**31))
        ds = self.stream.records(self.split, seed, skip=self.position * self.local_batch,
                                 crop_seed=seed)
        return ds.batch(self.local_batch, drop_remainder=True).prefetch(2).as_numpy_iterator()

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self.position == self.steps_per_epoch:
            self.epoch, self.position, self._batches = self.epoch + 1, 0, None
        if self._batches is None:
            self._batches = self._open()
        images, labels, ok = next(self._batches)
        if not ok.all():
            if not ok.any():
                raise errors.ConfigError(f"a whole batch of {self.stream.dataset.name} is unreadable "
                                 f"(epoch {self.epoch}, step {self.position})")
            self.stream._count(int(np.sum(~ok)), f"epoch {self.epoch}")
            fill = np.flatnonzero(ok)[np.arange(np.sum(~ok)) % np.sum(ok)]
            images, labels = images.copy(), labels.copy()  # tf.data's buffers are read-only
            images[~ok], labels[~ok] = images[fill], labels[fill]
        self.position += 1
        return {"image": pipeline.to_unit_range(images), "label": labels}


def open_split(name: str, split: str, image_size: int, channels: int, data_dir: str = "",
               manual_dir: str = "", shuffle_buffer: int = 4096, train_crop: str = "center",
               flip: bool = False, workers: int = 0) -> TfdsStream:
    """The `TfdsStream` of a split at the model's size; ConfigError naming data.split for a split
    the dataset does not have."""
    dataset = builder(name, data_dir, manual_dir)
    try:
        dataset.info.splits[split]
    except (KeyError, ValueError):
        raise errors.ConfigError(f"config.data.split={split!r}: TFDS dataset {name} has splits "
                         f"{', '.join(dataset.info.splits)} (slices like 'train[:90%]' work too)") from None
    return TfdsStream(dataset, split, image_size, channels, shuffle_buffer, train_crop, flip,
                      workers)
