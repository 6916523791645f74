"""Evaluation images as one uint8 (N, H, W, C) array: a sample `.npz` or a folder of images."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


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
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
        raise ValueError(f"no {'/'.join(IMAGE_EXTENSIONS)} images in {folder}")
    arrays = []
    for name in names:
        with Image.open(os.path.join(folder, name)) as im:
            arrays.append(np.asarray(im.convert("L" if im.mode in ("L", "1") else "RGB")))
    sizes = {a.shape[:2] for a in arrays}
    if len(sizes) > 1:
        raise ValueError(f"images in {folder} differ in size ({sorted(sizes)}): resize them first")
    if all(a.ndim == 2 for a in arrays):
        return np.stack(arrays)[..., None]
    return np.stack([np.repeat(a[..., None], 3, -1) if a.ndim == 2 else a for a in arrays])
