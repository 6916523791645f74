"""Where the images come from, declared once: `DataSpec` (frozen, typed, validated)."""

from __future__ import annotations

import dataclasses

SOURCES = ("fashion_mnist", "image_folder", "tfds", "shards")
TRAIN_CROPS = ("center", "random")
STREAMING = ("auto", "always", "never")


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """source fashion_mnist | image_folder (root) | shards (root: a folder written by
    mode=prepare, data/shards.py) | tfds: `name` (e.g. sun397, imagenet2012) and `split` from
    tfds_data_dir (may be gs://; default ~/tensorflow_datasets), manual downloads (imagenet2012)
    in manual_dir; a TFRecord split is streamed shuffled per epoch in a shuffle_buffer-record
    window, an ArrayRecord split by grain. image_size: 0 = the model's; else it must equal it, or
    with model_from_data it sets it.

    Image folders and TFDS splits: `streaming` 'auto' reads the images into memory when they fit
    in max_in_memory_mb at the model's size, else streams them (files decoded when read,
    per-process shards, resumable: data/pipeline.py); 'always' / 'never' choose. Shards always
    stream. `train_crop`: the training transform after the shorter-side resize, 'center' (as
    evaluation) or 'random' (VAR's trainer; drawn per read, so the data streams), with a
    left-right mirror half the time when `flip`. `workers`: decoding processes of a stream (-1:
    one per core beyond two, at most 16; 0: threads of the training process)."""

    source: str = "fashion_mnist"
    root: str = ""
    name: str = ""
    split: str = "train"
    tfds_data_dir: str = ""
    manual_dir: str = ""
    max_in_memory_mb: float = 2048.0
    shuffle_buffer: int = 4096
    image_size: int = 0
    streaming: str = "auto"
    train_crop: str = "center"
    flip: bool = False
    workers: int = -1

    def validate(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"config.data.source={self.source!r}: choose one of {', '.join(SOURCES)}")
        if self.source == "tfds" and not self.name:
            raise ValueError("config.data.name is empty: data.source='tfds' needs a TFDS dataset "
                             "name, e.g. --config.data.name=sun397 or imagenet2012")
        if self.image_size < 0:
            raise ValueError(f"config.data.image_size={self.image_size} must be >= 0 (0: the "
                             "model's image size)")
        if self.shuffle_buffer < 1:
            raise ValueError(f"config.data.shuffle_buffer={self.shuffle_buffer} must be >= 1")
        if self.streaming not in STREAMING:
            raise ValueError(f"config.data.streaming={self.streaming!r}: choose one of "
                             f"{', '.join(STREAMING)}")
        if self.train_crop not in TRAIN_CROPS:
            raise ValueError(f"config.data.train_crop={self.train_crop!r}: choose one of "
                             f"{', '.join(TRAIN_CROPS)}")
        if (self.train_crop == "random" or self.flip) and self.streaming == "never":
            raise ValueError("config.data.train_crop='random' and data.flip draw a new crop at every "
                             "read, which needs the streamed folder: set data.streaming to 'auto' "
                             "or 'always'")
        if self.workers < -1:
            raise ValueError(f"config.data.workers={self.workers} must be >= 0, or -1 for one per "
                             "core beyond two")

    def replace(self, **changes) -> DataSpec:
        return dataclasses.replace(self, **changes)


ENCODINGS = ("png", "jpeg")


@dataclasses.dataclass(frozen=True)
class PrepareSpec:
    """mode=prepare (data/shards.py): an image folder written as ArrayRecord shards of
    `records_per_shard` images each, every image resized (shorter side to round(1.125 * size))
    and stored as `encoding`: 'png' (lossless: reads equal the folder's) or 'jpeg' at
    `jpeg_quality` (several times smaller)."""

    encoding: str = "png"
    jpeg_quality: int = 95
    records_per_shard: int = 1024

    def validate(self) -> None:
        if self.encoding not in ENCODINGS:
            raise ValueError(f"config.prepare.encoding={self.encoding!r}: choose one of "
                             f"{', '.join(ENCODINGS)}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"config.prepare.jpeg_quality={self.jpeg_quality} must be in 1..100")
        if self.records_per_shard < 1:
            raise ValueError(f"config.prepare.records_per_shard={self.records_per_shard} must be "
                             ">= 1")
