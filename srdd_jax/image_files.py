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
    round(1.125 * size) (`decode_resized`), then a size x size crop (`crop`): the centre
    (evaluation), or with `crop_at` = (top, left) fractions in [0, 1] of the free margin, that
    window (training's random crop draws them); `flip` mirrors the crop left to right.

    Raises UnreadableImageError naming the file and the formats to use.
    """
    if size is None:
        return _read(path, lambda img: _flattened(img, mode))
    return crop(decode_resized(path, mode, size), size, crop_at, flip)


def decode_resized(path, mode: str, size: int) -> np.ndarray:
    """uint8 (H, W, C) pixels with the shorter side resized to round(1.125 * size) by Lanczos
    (transparency premultiplied, then laid on white): what VAR's training and evaluation
    transforms crop from, and what prepared shards store."""
    return _read(path, lambda img: _flattened(_resized(img, mode, size), mode))


def crop(pixels_HWC: np.ndarray, size: int, crop_at: tuple[float, float] | None = None,
         flip: bool = False) -> np.ndarray:
    """The size x size window of a `decode_resized` image: centred, or at `crop_at` = (top, left)
    fractions of the free margin; `flip` mirrors it left to right."""
    h, w = pixels_HWC.shape[:2]
    if crop_at is None:
        top, left = (h - size) // 2, (w - size) // 2
    else:
        top, left = round(crop_at[0] * (h - size)), round(crop_at[1] * (w - size))
    window = pixels_HWC[top:top + size, left:left + size]
    return np.ascontiguousarray(window[:, ::-1] if flip else window)


def _read(path, pixels_of):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                return pixels_of(img)
    except FileNotFoundError:
        raise
    except _PIL_FAILURES as err:
        raise UnreadableImageError(
            f"cannot read image {path}: {err}. Give an image file "
            f"({', '.join(e[1:].upper() for e in IMAGE_EXTENSIONS)})") from err


def _resized(img: Image.Image, mode: str, size: int) -> Image.Image:
    """The shorter side at round(1.125 * size), Lanczos, in `mode` (RGBA when transparent)."""
    transparent = img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
    img = img.convert("RGBA" if transparent else mode)
    w, h = img.size
    scale = round(1.125 * size) / min(w, h)
    return img.resize((max(round(w * scale), size), max(round(h * scale), size)), Image.LANCZOS)


def _flattened(img: Image.Image, mode: str) -> np.ndarray:
    """uint8 (H, W, C) in `mode`, a transparent image laid on white first."""
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        img = img.convert("RGBA")
        white = Image.new("RGBA", img.size, "white")
        white.alpha_composite(img)
        img = white
    pixels = np.asarray(img.convert(mode), np.uint8)
    return pixels.reshape(pixels.shape[:2] + (3 if mode == "RGB" else 1,))
