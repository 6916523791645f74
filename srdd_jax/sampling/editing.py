"""Zero-shot editing as sampling constraints: which tokens to force, and to what.

The sampler forces `known_idx_BL` wherever `known_BL` is True and samples the rest, scale by scale,
so later scales see the forced tokens in their input state.

- Inpainting / outpainting: known tokens are the encoded image's tokens where the keep mask,
  resized to each scale (area to the latent grid, then PyTorch bilinear to pn x pn, > 0.5), is set.
  As in VAR's editing demo, scales with pn^2 <= 3 are kept whole.
- Super-resolution: the low-resolution image is upsampled (bicubic) to the model's size and encoded;
  its coarse scales, up to the finest one the low-resolution image can resolve, are kept whole and
  the finer scales are generated.

Images are NHWC float in [-1, 1] with the tokenizer's channel count; masks are (B, H, W) with
1 = keep the given pixels, 0 = generate.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from srdd_jax import image_files, scales
from srdd_jax.sampling.layout import Layout
from srdd_jax.tokenizer.resize import area_resize, bicubic_resize, bilinear_resize
from srdd_jax.tokenizer.vqvae import VQVAE


# ----------------------------------------------------------------------------------------- inputs
def _read(path: str, mode: str, what: str, size: int) -> np.ndarray:
    """An image file in PIL `mode` as float32 (size, size, C), checking its size."""
    pixels = image_files.decode(path, mode).astype(np.float32)
    if pixels.shape[:2] != (size, size):
        raise ValueError(f"{what} {path} is {pixels.shape[1]}x{pixels.shape[0]}, the model needs "
                         f"{size}x{size}: resize or crop it first")
    return pixels


def load_image(path: str, size: int) -> np.ndarray:
    """An RGB image file -> (size, size, 3) float32 in [-1, 1]."""
    return _read(path, "RGB", "image", size) / 127.5 - 1.0


def load_mask(path: str, size: int) -> np.ndarray:
    """A grayscale mask file -> (size, size) float32 in [0, 1]; white = keep, black = generate."""
    return _read(path, "L", "mask", size)[..., 0] / 255.0


def box_mask(size: int, box: tuple[float, float, float, float], keep_inside: bool,
             grid: int | None = None) -> np.ndarray:
    """(size, size) mask from a box (y0, x0, y1, x1) in [0, 1] fractions of the image.

    keep_inside=False is inpainting (generate the box), True is outpainting (generate around it).
    grid: round the box's edges on a grid of that many cells per side (the latent's side: VAR's
    editing demo rounds its box on the token grid), so it covers whole tokens; None: on pixels.
    """
    y0, x0, y1, x1 = box
    if not 0 <= y0 < y1 <= 1 or not 0 <= x0 < x1 <= 1:
        raise ValueError(f"box {box} must be (y0, x0, y1, x1) with 0 <= y0 < y1 <= 1, 0 <= x0 < x1 <= 1")
    cells = grid or size
    inside = np.zeros((cells, cells), np.float32)
    inside[round(y0 * cells):round(y1 * cells), round(x0 * cells):round(x1 * cells)] = 1.0
    if cells != size:
        if size % cells:
            raise ValueError(f"a {cells}-cell grid does not divide {size} px images")
        inside = np.kron(inside, np.ones((size // cells, size // cells), np.float32))
    return inside if keep_inside else 1.0 - inside


def low_resolution(images_BHWC, factor: int) -> np.ndarray:
    """The 1/factor bilinear downsample (B, H/f, W/f, C) that super-resolution starts from."""
    b, h, w, c = np.shape(images_BHWC)
    return np.asarray(jax.image.resize(images_BHWC, (b, h // factor, w // factor, c), "linear"))


def model_view(images_BHWC, keep_BHW=None, low_BhwC=None) -> np.ndarray:
    """What the model is given, to show beside edits: the images black (-1) where in/outpainting
    generates (`keep_BHW`, (B, H, W) or (H, W)), or the low-resolution input enlarged (nearest)."""
    images = np.asarray(images_BHWC)
    if low_BhwC is not None:
        return np.asarray(jax.image.resize(low_BhwC, images.shape, "nearest"))
    keep = np.broadcast_to(np.asarray(keep_BHW), images.shape[:3])[..., None]
    return images * keep - (1 - keep)


def edit_inputs(tokenizer: VQVAE, tok_params, images_BHWC, lay: Layout, keep_BHW=None,
                factor: int | None = None) -> dict:
    """One edit's constraints over the sampled layout `lay` and what the model is given:
    super-resolution from the images' 1/`factor` bilinear downsample when `factor` is set, else
    in/outpainting keeping `keep_BHW` ((B, H, W) or (H, W), 1 = keep). Returns {"known_idx_BL",
    "known_BL" (numpy), "given" (`model_view`), and "low" (super-resolution) or "keep"}."""
    if factor:
        low = low_resolution(images_BHWC, factor)
        known_idx, known = super_resolution_constraints(tokenizer, tok_params, low, lay)
        shown = {"low": low, "given": model_view(images_BHWC, low_BhwC=low)}
    else:
        known_idx, known = inpainting_constraints(tokenizer, tok_params, images_BHWC, keep_BHW, lay)
        shown = {"keep": keep_BHW, "given": model_view(images_BHWC, keep_BHW)}
    return {"known_idx_BL": np.asarray(known_idx), "known_BL": np.asarray(known), **shown}


def _check_images(images_BHWC, size: int, channels: int) -> jax.Array:
    images_BHWC = jnp.asarray(images_BHWC, jnp.float32)
    if images_BHWC.ndim != 4 or images_BHWC.shape[-1] != channels:
        raise ValueError(f"images must be (B, H, W, {channels}) NHWC, got {images_BHWC.shape}")
    if images_BHWC.shape[1:3] != (size, size):
        raise ValueError(f"images are {images_BHWC.shape[1]}x{images_BHWC.shape[2]}, the model "
                         f"needs {size}x{size}")
    return images_BHWC


# ------------------------------------------------------------------------------------ constraints
def _to_layout(full_BL: jax.Array, patch_nums, lay: Layout) -> jax.Array:
    """Per-token values of the model's full layout -> the sampled (possibly subset) layout."""
    pieces = scales.split_scales(full_BL, patch_nums)
    return jnp.concatenate([pieces[level] for level in lay.levels], axis=1)


def scale_keep_masks(keep_BHW: jax.Array, patch_nums, latent: int) -> jax.Array:
    """Keep mask (B, H, W) -> per-token keep flags over the full layout (B, L) bool."""
    keep = area_resize(keep_BHW[..., None].astype(jnp.float32), (latent, latent))
    flags = []
    for pn in patch_nums:
        if pn * pn <= 3:
            flags.append(jnp.ones((keep.shape[0], pn * pn), bool))
        else:
            flags.append((bilinear_resize(keep, (pn, pn)) > 0.5).reshape(keep.shape[0], pn * pn))
    return jnp.concatenate(flags, axis=1)


def inpainting_constraints(tokenizer: VQVAE, tok_params, images_BHWC, keep_BHW, lay: Layout):
    """(known_idx_BL, known_BL) for in/outpainting over the sampled layout `lay`.

    Args:
      images_BHWC: (B, H, W, 3) in [-1, 1] at the model's resolution.
      keep_BHW: (B, H, W) or (H, W) in [0, 1]: 1 = keep these pixels, 0 = generate.
    """
    size = tokenizer.image_size
    images_BHWC = _check_images(images_BHWC, size, tokenizer.spec.in_channels)
    keep = jnp.asarray(keep_BHW, jnp.float32)
    if keep.ndim == 2:
        keep = jnp.broadcast_to(keep, (images_BHWC.shape[0],) + keep.shape)
    if keep.shape != images_BHWC.shape[:3]:
        raise ValueError(f"mask must be (H, W) or (B, H, W) matching images {images_BHWC.shape[:3]}, "
                         f"got {keep.shape}")
    if float(keep.min()) < 0 or float(keep.max()) > 1:
        raise ValueError("mask values must lie in [0, 1] (1 = keep, 0 = generate)")
    idx = tokenizer.apply({"params": tok_params}, images_BHWC, method=VQVAE.encode_to_indices)
    flags = scale_keep_masks(keep, tokenizer.patch_nums, tokenizer.latent_size)
    return (_to_layout(idx, tokenizer.patch_nums, lay), _to_layout(flags, tokenizer.patch_nums, lay))


def super_resolution_constraints(tokenizer: VQVAE, tok_params, low_res_BhwC, lay: Layout,
                                 num_known_scales: int | None = None):
    """(known_idx_BL, known_BL) that fix the coarse scales to a low-resolution image's tokens.

    num_known_scales: sampled scales to keep (default: those with pn <= latent * low/high).
    """
    low = jnp.asarray(low_res_BhwC, jnp.float32)
    size = tokenizer.image_size
    channels = tokenizer.spec.in_channels
    if low.ndim != 4 or low.shape[-1] != channels or low.shape[1] != low.shape[2] or low.shape[1] > size:
        raise ValueError(f"low-resolution images must be square (B, h, h, {channels}) NHWC with "
                         f"h <= {size}, got {low.shape}")
    upsampled = jnp.clip(bicubic_resize(low, (size, size)), -1.0, 1.0)
    idx = tokenizer.apply({"params": tok_params}, upsampled, method=VQVAE.encode_to_indices)
    if num_known_scales is None:
        limit = tokenizer.latent_size * low.shape[1] / size
        num_known_scales = sum(pn <= limit for pn in lay.patch_nums)
    if not 0 < num_known_scales < len(lay.patch_nums):
        raise ValueError(f"num_known_scales={num_known_scales} must leave some scales to generate "
                         f"and keep at least one (sampled scales: {lay.patch_nums})")
    known_tokens = lay.begins[num_known_scales]
    known = jnp.broadcast_to(jnp.arange(lay.length) < known_tokens, (low.shape[0], lay.length))
    return _to_layout(idx, tokenizer.patch_nums, lay), known
