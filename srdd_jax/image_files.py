"""Reading image files: one extension list, one decoder, one error for a file that is not a
readable image. Data sources, evaluation folders and edit inputs all read through here.

Transparent pixels are laid on white; `mode` is PIL's "RGB" or "L". Large images are read
without PIL's decompression-bomb warning (one's own files are read on purpose); those beyond its
hard limit are unreadable.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")  # PIL modes of single-channel images
# What PIL raises for a file it cannot read: not an image, truncated or corrupt, or more pixels
# than PIL.Image.MAX_IMAGE_PIXELS allows (its decompression-bomb guard).
_PIL_FAILURES = (UnidentifiedImageError, OSError, ValueError, SyntaxError,
                 Image.DecompressionBombError)


class UnreadableImageError(ValueError):
    """A file that is not a readable image (missing files raise FileNotFoundError)."""


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def list_images(folder: str) -> list[str]:
    """The image files directly in `folder`, by extension, sorted by name."""
    return [os.path.join(folder, n) for n in sorted(os.listdir(folder))
            if is_image_name(n) and os.path.isfile(os.path.join(folder, n))]


def is_grey(path) -> bool | None:
    """From the header alone: whether the image is grey (a grey mode, or a palette of grey
    entries only); None for a file that is not a readable image."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.mode == "P":
                    palette = np.asarray(img.getpalette() or [0, 0, 0]).reshape(-1, 3)
                    return bool((palette == palette[:, :1]).all())
                return img.mode in GREY_MODES
    except _PIL_FAILURES:
        return None


def decode(path, mode: str, size: int | None = None, crop_at: tuple[float, float] | None = None,
           flip: bool = False) -> np.ndarray:
    """uint8 (H, W, C) pixels of an image file (a path or a file object) in `mode`, C = 3 for
    "RGB" and 1 for "L". With `size`, by VAR's transforms: the shorter side resized to
    round(1.125 * size) (Lanczos, transparency premultiplied), then a size x size crop: the centre
    (evaluation), or with `crop_at` = (top, left) fractions in [0, 1] of the free margin, that
    window (training's random crop draws them); `flip` mirrors the crop left to right.

    Raises UnreadableImageError naming the file and the formats to use.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                return _pixels(img, mode, size, crop_at, flip)
    except FileNotFoundError:
        raise
    except _PIL_FAILURES as err:
        raise UnreadableImageError(
            f"cannot read image {path}: {err}. Give an image file "
            f"({', '.join(e[1:].upper() for e in IMAGE_EXTENSIONS)})") from err


def _pixels(img: Image.Image, mode: str, size: int | None, crop_at=None, flip: bool = False
            ) -> np.ndarray:
    transparent = img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
    img = img.convert("RGBA" if transparent else mode)
    if size is not None:
        w, h = img.size
        scale = round(1.125 * size) / min(w, h)
        img = img.resize((max(round(w * scale), size), max(round(h * scale), size)), Image.LANCZOS)
        w, h = img.size
        if crop_at is None:
            left, top = (w - size) // 2, (h - size) // 2
        else:
            top, left = round(crop_at[0] * (h - size)), round(crop_at[1] * (w - size))
        img = img.crop((left, top, left + size, top + size))
        if flip:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
    if transparent:
        white = Image.new("RGBA", img.size, "white")
        white.alpha_composite(img)
        img = white
    pixels = np.asarray(img.convert(mode), np.uint8)
    return pixels.reshape(pixels.shape[:2] + (3 if mode == "RGB" else 1,))
