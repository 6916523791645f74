"""Image outputs: uint8 images, labelled PNG grids and `.npz` sample files (for sampling,
training and evaluation alike).

Paths are written through etils.epath, so local paths and gs:// both work.
"""

from __future__ import annotations

import io
import math

import numpy as np
from etils import epath
from PIL import Image, ImageDraw, ImageFont


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


def grid_picture(images_BHWC: np.ndarray, columns: int | None = None,
                 column_names: tuple[str, ...] = (), pad: int = 2) -> Image.Image:
    """The `grid` as a PIL image (mode L for one channel, RGB for three). With `column_names`
    (one per column), a white band above the grid holds each name, cut to its column's width."""
    canvas = grid(images_BHWC, columns, pad)
    picture = Image.fromarray(canvas[..., 0] if canvas.shape[-1] == 1 else canvas)
    if not column_names:
        return picture
    font = ImageFont.load_default()
    band = font.getbbox("Hg")[3] + 2
    labelled = Image.new(picture.mode, (picture.width, picture.height + band), "white")
    labelled.paste(picture, (0, band))
    draw, width = ImageDraw.Draw(labelled), images_BHWC.shape[2]
    for column, name in enumerate(column_names):
        while name and draw.textlength(name, font=font) > width:
            name = name[:-1]
        draw.text((column * (width + pad), 0), name, fill="black", font=font)
    return labelled


def save_picture(path: str, picture: Image.Image) -> None:
    """Writes a PIL image as PNG."""
    with _create(path).open("wb") as f:
        picture.save(f, format="PNG")


def save_grid(path: str, images_BHWC: np.ndarray, columns: int | None = None,
              column_names: tuple[str, ...] = ()) -> None:
    """Writes uint8 images as one PNG grid (see `grid_picture` for `column_names`)."""
    save_picture(path, grid_picture(images_BHWC, columns, column_names))


def save_samples(path: str, images_BHWC: np.ndarray, labels_B, idx_BL) -> None:
    """Writes an `.npz` with arr_0 (uint8 NHWC images, the layout FID evaluators read), labels and
    token indices. The archive is built in memory: numpy's zip writer seeks back in its file, which
    tf.io.gfile's writable files (gs://) do not allow."""
    buffer = io.BytesIO()
    np.savez(buffer, arr_0=images_BHWC, labels=np.asarray(labels_B), idx=np.asarray(idx_BL))
    _create(path).write_bytes(buffer.getvalue())
