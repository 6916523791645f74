"""Where the images come from, declared once: `DataSpec` (frozen, typed, validated)."""

from __future__ import annotations

import dataclasses

SOURCES = ("fashion_mnist", "image_folder", "tfds")


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """source fashion_mnist | image_folder (root) | tfds: `name` (e.g. sun397, imagenet2012) and
    `split` from tfds_data_dir (may be gs://; default ~/tensorflow_datasets), manual downloads
    (imagenet2012) in manual_dir; splits whose resized images exceed max_in_memory_mb are
    streamed, shuffled per epoch in a shuffle_buffer-record window. image_size: 0 = the model's;
    else it must equal it, or with model_from_data it sets it."""

    source: str = "fashion_mnist"
    root: str = ""
    name: str = ""
    split: str = "train"
    tfds_data_dir: str = ""
    manual_dir: str = ""
    max_in_memory_mb: float = 2048.0
    shuffle_buffer: int = 4096
    image_size: int = 0

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

    def replace(self, **changes) -> DataSpec:
        return dataclasses.replace(self, **changes)
