"""Prepared shards: an image folder written once as ArrayRecord files, read by the grain pipeline.

`mode=prepare` writes `WORKDIR/shards/<split>/`; training reads it with
`--config.data.source=shards --config.data.root=THAT_DIR`. A pod then reads a few hundred large
files instead of millions of small ones, and decodes images already at their training size.

- `shard-SSSSS-of-NNNNN.array_record`: one record per image (https://github.com/google/array_record,
  random access by index): a 4-byte little-endian int32 label, then the image encoded as PNG
  (lossless, the default) or JPEG, with its shorter side already at round(1.125 * image_size)
  (`image_files.decode_resized`). Training crops it (random or centre, as `train_crop` says);
  evaluation and token caches take the centre crop, so a PNG shard reads exactly as its folder.
- `meta.json`, written last (a folder without it is unfinished): the format and version, the
  image size and channels, the resize, the encoding, the class names, the number of records,
  the shards with their record counts, the unreadable files skipped and the source folder.
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import os
import struct

import grain
import numpy as np
from absl import logging
from PIL import Image

from srdd_jax import errors, image_files, preemption
from srdd_jax.data import image_folder, pipeline, sources
from srdd_jax.data.spec import PrepareSpec
from srdd_jax.progress import Progress

FORMAT, VERSION, META_FILE = "srdd_jax image shards", 1, "meta.json"
_LABEL = struct.Struct("<i")


def shard_name(index: int, count: int) -> str:
    return f"shard-{index:05d}-of-{count:05d}.array_record"


def encode_record(label: int, pixels_HWC: np.ndarray, spec: PrepareSpec) -> bytes:
    """A record: the label, then the image as spec.encoding."""
    buffer = io.BytesIO()
    image = Image.fromarray(pixels_HWC[..., 0] if pixels_HWC.shape[-1] == 1 else pixels_HWC)
    if spec.encoding == "png":
        image.save(buffer, format="PNG", compress_level=1)
    else:
        image.save(buffer, format="JPEG", quality=spec.jpeg_quality)
    return _LABEL.pack(label) + buffer.getvalue()


def decode_record(record: bytes, mode: str) -> tuple[int, np.ndarray]:
    """(label, uint8 (H, W, C) resized image) of a record; raises UnreadableImageError."""
    (label,) = _LABEL.unpack_from(record)
    return label, image_files.decode(io.BytesIO(record[_LABEL.size:]), mode)


def write(stream: image_folder.FolderStream, directory: str, spec: PrepareSpec) -> dict:
    """Writes the folder of `stream` (its files in file order) as shards in `directory` and
    returns the meta written last. Images are read and encoded on one thread per core, one shard
    at a time, so memory holds at most one shard's records."""
    from array_record.python.array_record_module import ArrayRecordWriter

    os.makedirs(directory, exist_ok=True)
    files = stream.files
    count = max(1, -(-len(files) // spec.records_per_shard))
    mode, size = stream.mode, stream.image_size

    def record(file):
        path, label = file
        try:
            return encode_record(label, image_files.decode_resized(path, mode, size), spec)
        except image_files.UnreadableImageError as err:
            logging.warning("skipping unreadable image %s: %s", path, err)
            return path

    shards, skipped, done = [], [], 0
    progress = Progress(f"preparing shards of {stream.root}", len(files), "images")
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
        for index in range(count):
            part = files[index * spec.records_per_shard:(index + 1) * spec.records_per_shard]
            writer = ArrayRecordWriter(os.path.join(directory, shard_name(index, count)),
                                       "group_size:1")
            written = 0
            for result in pool.map(record, part):
                if isinstance(result, bytes):
                    writer.write(result)
                    written += 1
                else:
                    skipped.append(result)
            writer.close()
            shards.append({"file": shard_name(index, count), "records": written})
            done += len(part)
            progress.update(done)
            preemption.check_between_batches("prepare", done, len(files), "images")
    if not sum(s["records"] for s in shards):
        raise errors.ConfigError(f"no readable images under {stream.root} ({len(skipped)} "
                                 "unreadable): nothing to prepare")
    meta = {"format": FORMAT, "version": VERSION, "image_size": size, "channels": stream.channels,
            "resized_to": round(1.125 * size), "encoding": spec.encoding,
            "jpeg_quality": spec.jpeg_quality if spec.encoding == "jpeg" else None,
            "class_names": list(stream.class_names),
            "num_examples": sum(s["records"] for s in shards), "shards": shards,
            "skipped": len(skipped), "skipped_files": skipped[:100], "source": stream.root}
    with open(os.path.join(directory, META_FILE), "w") as f:
        json.dump(meta, f, indent=1)
    return meta


def read_meta(directory: str) -> dict:
    """The meta.json of a shard folder; MissingFileError / ConfigError naming data.root and the
    fix for a folder that holds no finished shard set."""
    path = os.path.join(directory, META_FILE)
    if not directory:
        raise errors.MissingFileError("config.data.root is empty: data.source='shards' reads the "
                                      "folder mode=prepare wrote, --config.data.root=DIR")
    if not os.path.isfile(path):
        raise errors.MissingFileError(
            f"config.data.root={directory!r} holds no prepared shards ({META_FILE} missing; a "
            "folder without it is unfinished): write them with --config.mode=prepare, which "
            "creates WORKDIR/shards/<split>")
    with open(path) as f:
        meta = json.load(f)
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise errors.ConfigError(f"{path} is not a version-{VERSION} {FORMAT} meta file "
                                 f"(format {meta.get('format')!r}, version {meta.get('version')!r})")
    if not meta["shards"] or not meta["num_examples"]:
        raise errors.ConfigError(f"config.data.root={directory!r}: its shard list is empty (no "
                                 "records): prepare the folder again")
    missing = [s["file"] for s in meta["shards"]
               if not os.path.isfile(os.path.join(directory, s["file"]))]
    if missing:
        raise errors.MissingFileError(f"config.data.root={directory!r} lacks {len(missing)} of its "
                                      f"shards ({missing[0]}, ...): copy them all, or prepare again")
    return meta


def facts(directory: str) -> sources.DataFacts:
    meta = read_meta(directory)
    return sources.DataFacts(meta["channels"], tuple(meta["class_names"]),
                             f"the shards under {directory}")


class Shards(pipeline.ImageRecords):
    """A prepared shard folder at the model's size, as `pipeline.Records` (training reads with
    `train_crop`/`flip`, on `workers` processes) with `ordered`/`head` (centre crop, stored
    order) for evaluation, grids and token caches."""

    def __init__(self, directory: str, image_size: int, channels: int, train_crop: str = "center",
                 flip: bool = False, workers: int = -1):
        meta = read_meta(directory)
        if meta["image_size"] != image_size or meta["channels"] != channels:
            raise errors.ConfigError(
                f"the shards under {directory} hold {meta['channels']}-channel images for "
                f"{meta['image_size']} px, the model takes {channels} channels at {image_size} px: "
                f"prepare the folder again for this model (mode=prepare with its config), or set "
                f"data.image_size={meta['image_size']}")
        self.root, self.meta, self.image_size, self.channels = directory, meta, image_size, channels
        self.train_crop, self.flip = train_crop, flip
        self.workers = pipeline.default_workers() if workers < 0 else workers
        self.class_names = tuple(meta["class_names"])
        self.num_examples = meta["num_examples"]
        self.mode = "RGB" if channels == 3 else "L"
        self.where = f"the shards under {directory}"
        self.skipped: list[str] = []
        self._source = None

    def _records(self):
        if self._source is None:  # opened on first use, in each worker process
            self._source = grain.sources.ArrayRecordDataSource(
                [os.path.join(self.root, s["file"]) for s in self.meta["shards"]])
        return self._source

    def __getstate__(self) -> dict:
        return dict(self.__dict__, _source=None)

    def _example(self, record: bytes, crop_at=None, flip: bool = False) -> tuple[int, np.ndarray | None]:
        try:
            label, pixels = decode_record(record, self.mode)
        except image_files.UnreadableImageError:
            return _LABEL.unpack_from(record)[0], None
        return label, image_files.crop(pixels, self.image_size, crop_at, flip)

    # ----------------------------------------------- pipeline.Records (see pipeline.ImageRecords)
    def read(self, index: int, rng: np.random.Generator) -> dict:
        crop_at, flip = image_folder.training_crop(self.train_crop, self.flip, rng)
        label, image = self._example(self._records()[index], crop_at, flip)
        return self.example(image, label)

    # ------------------------------------------------------------------- evaluation reads
    def ordered(self, batch: int):
        """(uint8 (b, H, W, C), int32 (b,)) batches in stored order, centre-cropped, decoded on one
        thread per core; unreadable records are skipped and counted."""
        records = self._records()
        with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
            for start in range(0, self.num_examples, batch):
                indices = range(start, min(start + batch, self.num_examples))
                examples = list(pool.map(self._example, records.__getitems__(list(indices))))
                good = [(label, image) for label, image in examples if image is not None]
                self.skipped.extend(["(a stored record)"] * (len(examples) - len(good)))
                if good:
                    yield (np.stack([image for _, image in good]),
                           np.asarray([label for label, _ in good], np.int32))

    def head(self, n: int) -> np.ndarray:
        """The first n readable images, float32 (n, H, W, C) in [-1, 1], centre-cropped."""
        images, _ = next(self.ordered(max(n, 1)))
        return pipeline.to_unit_range(images[:n])
