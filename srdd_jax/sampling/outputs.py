"""Sample outputs: uint8 images, PNG grids and `.npz` files for evaluation.

Paths are written through etils.epath, so local paths and gs:// both work.
"""

from __future__ import annotations

import io
import math

import numpy as np
from etils import epath
from PIL import Image


def to_uint8(images_BHWC) -> np.ndarray:
    """Images in [-1, 1] -> uint8 (B, H, W, C), rounded to nearest."""
    images = (np.asarray(images_BHWC, np.float32) + 1.0) * 127.5
    return np.clip(np.rint(images), 0, 255).astype(np.uint8)


def grid(images_BHWC: np.ndarray, columns: int | None = None, pad: int = 2) -> np.ndarray:
    """Tiles uint8 images (B, H, W, C) into one (rows*(H+pad)-pad, cols*(W+pad)-pad, C) image."""
    b, h, w, c = images_BHWC.shape
    columns = columns or math.ceil(math.sqrt(b))
    rows = math.ceil(b / columns)
    canvas = np.full((rows * (h + pad) - pad, columns * (w + pad) - pad, c), 255, np.uint8)
    for i, image in enumerate(images_BHWC):
        y, x = divmod(i, columns)
        canvas[y * (h + pad):y * (h + pad) + h, x * (w + pad):x * (w + pad) + w] = image
    return canvas


def _create(path) -> epath.Path:
    path = epath.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def save_grid(path: str, images_BHWC: np.ndarray, columns: int | None = None) -> None:
    """Writes uint8 images as one PNG grid."""
    canvas = grid(images_BHWC, columns)
    with _create(path).open("wb") as f:
        Image.fromarray(canvas[..., 0] if canvas.shape[-1] == 1 else canvas).save(f, format="PNG")


def save_samples(path: str, images_BHWC: np.ndarray, labels_B, idx_BL) -> None:
    """Writes an `.npz` with arr_0 (uint8 NHWC images, the layout FID evaluators read), labels and
    token indices. The archive is built in memory: numpy's zip writer seeks back in its file, which
    tf.io.gfile's writable files (gs://) do not allow."""
    buffer = io.BytesIO()
    np.savez(buffer, arr_0=images_BHWC, labels=np.asarray(labels_B), idx=np.asarray(idx_BL))
    _create(path).write_bytes(buffer.getvalue())
