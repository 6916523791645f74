"""Evaluation images as one uint8 (N, H, W, C) array: a sample `.npz` or a folder of images."""

from __future__ import annotations

import os

import numpy as np

from srdd_jax import image_files


def load_images(path: str) -> np.ndarray:
    """uint8 (N, H, W, C) images from an `.npz` (key `arr_0`, as `sampling.outputs.save_samples`
    writes; (N, H, W) gets a channel axis) or from the image files of a folder (sorted by name,
    all of one size; RGB unless every file is grayscale, then C = 1)."""
    if os.path.isdir(path):
        return _load_folder(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no image .npz or folder at {path!r}")
    with np.load(path) as data:
        if "arr_0" not in data.files:
            raise ValueError(f"{path} has no 'arr_0' image array (keys: {data.files})")
        images = data["arr_0"]
    if images.ndim == 3:
        images = images[..., None]
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"{path}: arr_0 must be uint8 (N, H, W, C) images, got {images.dtype} "
                         f"{images.shape}")
    return images


def _load_folder(folder: str) -> np.ndarray:
    paths = image_files.list_images(folder)
    if not paths:
        raise ValueError(f"no images ({'/'.join(image_files.IMAGE_EXTENSIONS)}) in {folder}")
    mode = "L" if all(image_files.is_grey(p) for p in paths) else "RGB"
    arrays = [image_files.decode(p, mode) for p in paths]
    sizes = {a.shape[:2] for a in arrays}
    if len(sizes) > 1:
        raise ValueError(f"images in {folder} differ in size ({sorted(sizes)}): resize them first")
    return np.stack(arrays)
