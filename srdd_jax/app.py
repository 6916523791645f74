"""A local web page to sample and edit with a model (Gradio, https://www.gradio.app):

    python -m srdd_jax.app --model=DIR_or_name [--port=7860] [--share]

`--model` is a model directory (a workdir's `model/`) or a released name (var_d16 ... var_d36,
converted once into the cache: `srdd_jax/pretrained.py`). Two tabs:

- Sample: a class grid (classes, images per class, seed, CFG and its schedule, top-k/top-p, masked
  resampling, the attention mask), with the time it took.
- Edit: an uploaded image at the model's size; paint the region, then inpaint (generate the painted
  region), outpaint (keep the painted region, generate the rest) or super-resolve (from its 1/2 or
  1/4 downsample); shows the input as the model sees it and the results, with the time.

`Studio` holds the model and does the work without Gradio (tested directly); a bad input (wrong
size or channels, nothing painted, a bad setting) returns a message for the page instead of
raising. In Colab, `build(Studio(...)).launch()` shows the page inline; `share` stays off unless
asked for.
"""

from __future__ import annotations

import dataclasses
import os
import time

import jax
import numpy as np
from absl import app, flags

from srdd_jax import errors, image_grids, models, pretrained, saved_models
from srdd_jax.sampling import class_grid, editing, generation, guidance
from srdd_jax.sampling.sampler import Sampler
from srdd_jax.sampling.settings import SamplerSettings
from srdd_jax.transformer import masks

TASKS = ("inpaint", "outpaint", "super_resolution")


class Studio:
    """A loaded model and its compiled samplers (one per settings and mask)."""

    def __init__(self, model: str):
        self.params, self.spec = saved_models.load_model(pretrained.resolve(model))
        self.size = models.Model(self.spec).image_size
        self.channels = self.spec.tokenizer.in_channels
        self.num_classes = self.spec.transformer.num_classes
        self._samplers: dict = {}

    def sampler(self, settings: SamplerSettings, mask: str) -> Sampler:
        key = (settings, mask)
        if key not in self._samplers:
            self._samplers[key] = Sampler(self.spec, settings, mask=mask)
        return self._samplers[key]

    def settings(self, cfg, cfg_schedule, top_k, top_p, mr, mr_threshold, mr_iterations,
                 more_smooth=False) -> SamplerSettings:
        settings = SamplerSettings(cfg=float(cfg), cfg_schedule=cfg_schedule, top_k=int(top_k),
                                   top_p=float(top_p), mr=bool(mr),
                                   mr_threshold=float(mr_threshold),
                                   mr_iterations=int(mr_iterations), more_smooth=bool(more_smooth))
        settings.validate(self.spec.patch_nums)
        return settings

    def classes(self, text: str) -> tuple[int, ...]:
        """'0, 3' -> (0, 3); empty: every class."""
        try:
            chosen = tuple(int(c) for c in str(text).replace(",", " ").split())
        except ValueError:
            raise ValueError(f"classes {text!r}: give class numbers separated by commas") from None
        if any(not 0 <= c < self.num_classes for c in chosen):
            raise ValueError(f"classes {chosen}: this model has classes 0..{self.num_classes - 1}")
        return chosen

    def sample_grid(self, classes="", per_class=2, seed=0, cfg=1.5, cfg_schedule="linear",
                    top_k=0, top_p=0.0, mr=False, mr_threshold=0.01, mr_iterations=5,
                    mask=None, more_smooth=False):
        """(uint8 grid picture (H, W, C) or None, message)."""
        try:
            settings = self.settings(cfg, cfg_schedule, top_k, top_p, mr, mr_threshold,
                                     mr_iterations, more_smooth)
            sampler = self.sampler(settings, mask or self.spec.transformer.mask)
            start = time.perf_counter()
            drawn = class_grid.sample(self.params, self.spec, self.classes(classes),
                                      int(per_class), seed=int(seed), sampler=sampler)
            seconds = time.perf_counter() - start
        except (ValueError, errors.KnownError) as error:
            return None, f"**Error:** {error}"
        return (enlarged(np.asarray(drawn.picture()), self.size),
                f"{len(drawn.labels)} images in {seconds:.1f} s ({sampler.plan.mask.name} mask; the first "
                "call of a setting includes compiling it)")

    def image_in(self, image) -> np.ndarray:
        """An uploaded uint8 image (H, W) or (H, W, 1|3|4) -> float32 (size, size, C) in [-1, 1]
        with the model's channels; ValueError naming the problem otherwise."""
        pixels = np.asarray(image)
        if pixels.ndim == 2:
            pixels = pixels[..., None]
        if pixels.ndim != 3 or pixels.shape[-1] not in (1, 3, 4):
            raise ValueError(f"the image has shape {pixels.shape}: give a grey, RGB or RGBA image")
        if pixels.shape[:2] != (self.size, self.size):
            raise ValueError(f"the image is {pixels.shape[1]}x{pixels.shape[0]} px, the model takes "
                             f"{self.size}x{self.size}: crop or resize it first")
        rgb = pixels[..., :3] if pixels.shape[-1] >= 3 else np.repeat(pixels, 3, axis=-1)
        if self.channels == 1:
            rgb = np.rint(rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114]))[..., None]
        return rgb.astype(np.float32) / 127.5 - 1.0

    def edit(self, image, painted, task="inpaint", factor=2, label=-1, samples=2, seed=0, cfg=1.5,
             cfg_schedule="linear", top_k=0, top_p=0.0, box_on_token_grid=False):
        """Edits `image` (uint8 array; `painted`: (H, W) bool of the painted pixels, for in- and
        outpainting). Returns (uint8 strip: the input as the model sees it, then the results;
        or None, message)."""
        try:
            if task not in TASKS:
                raise ValueError(f"task {task!r}: choose one of {', '.join(TASKS)}")
            if image is None:
                raise ValueError("upload an image first")
            images = self.image_in(image)[None]
            label = int(label)
            if not -1 <= label < self.num_classes:
                raise ValueError(f"label {label}: this model has classes 0..{self.num_classes - 1}"
                                 " (-1: unconditional)")
            settings = self.settings(cfg, cfg_schedule, top_k, top_p, False, 0.01, 1)
            sampler = self.sampler(settings, self.spec.transformer.mask)
            tokenizer = sampler.model.tokenizer
            if task == "super_resolution":
                inputs = editing.edit_inputs(tokenizer, self.params["tokenizer"], images,
                                             sampler.plan.layout, factor=int(factor))
            else:
                keep = self.keep_mask(painted, task, tokenizer.latent_size if box_on_token_grid
                                      else None)
                inputs = editing.edit_inputs(tokenizer, self.params["tokenizer"], images,
                                             sampler.plan.layout, keep)
            n = int(samples)
            labels = np.full(n, self.num_classes if label < 0 else label, np.int32)
            start = time.perf_counter()
            out = generation.generate(sampler, self.params, labels, jax.random.key(int(seed)), n,
                                      "editing", np.repeat(inputs["known_idx_BL"], n, axis=0),
                                      np.repeat(inputs["known_BL"], n, axis=0))
            seconds = time.perf_counter() - start
        except (ValueError, errors.KnownError) as error:
            return None, f"**Error:** {error}"
        strip = image_grids.grid(image_grids.to_uint8(np.concatenate([inputs["given"], out["images_NHWC"]])),
                                 columns=n + 1)
        return enlarged(strip, self.size), (f"{task}: {n} results in {seconds:.1f} s (left: the "
                                            "input as the model sees it)")

    def keep_mask(self, painted, task: str, grid: int | None) -> np.ndarray:
        """(size, size) float32 keep mask from the painted pixels: inpaint keeps the unpainted,
        outpaint the painted; with `grid`, cells of the token grid that are more than half
        painted count as painted."""
        if painted is None or not np.asarray(painted).any():
            raise ValueError("nothing is painted: paint the region to "
                             + ("generate" if task == "inpaint" else "keep") + " first")
        painted = np.asarray(painted, bool)
        if painted.shape != (self.size, self.size):
            raise ValueError(f"the painted mask is {painted.shape}, the image {self.size}x{self.size}")
        if grid:
            cell = self.size // grid
            share = painted.reshape(grid, cell, grid, cell).mean(axis=(1, 3)) > 0.5
            painted = np.kron(share, np.ones((cell, cell), bool)).astype(bool)
        keep = painted if task == "outpaint" else ~painted
        return keep.astype(np.float32)


def enlarged(picture: np.ndarray, size: int) -> np.ndarray:
    """A uint8 picture (H, W[, C]) repeated to about 128 px per image of `size` px (nearest), so
    small models' images can be seen; 2-D for one channel."""
    zoom = max(1, 128 // size)
    picture = np.repeat(np.repeat(picture, zoom, axis=0), zoom, axis=1)
    return picture[..., 0] if picture.ndim == 3 and picture.shape[-1] == 1 else picture


def painted_pixels(editor_value) -> np.ndarray | None:
    """The painted pixels (H, W) bool of a Gradio ImageEditor value (any layer's alpha > 0)."""
    layers = (editor_value or {}).get("layers") or []
    marks = [np.asarray(layer)[..., -1] > 0 for layer in layers if layer is not None
             and np.asarray(layer).ndim == 3 and np.asarray(layer).shape[-1] == 4]
    return np.any(marks, axis=0) if marks else None


def build(studio: Studio):
    """The Gradio page of a `Studio`."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a local page
    import gradio as gr

    spec = studio.spec
    names = ", ".join(f"{i}: {n}" for i, n in enumerate(spec.class_names[:20]))
    defaults = dataclasses.asdict(SamplerSettings())
    with gr.Blocks(title="srdd_jax") as page:
        gr.Markdown(f"### srdd_jax: {spec.transformer.mask} model, {studio.size} px, "
                    f"{studio.num_classes} classes" + (f" ({names})" if names else ""))
        with gr.Tab("Sample"):
            with gr.Row():
                classes = gr.Textbox(label="classes (e.g. 0, 3; empty: all)", value="")
                per_class = gr.Slider(1, 8, value=2, step=1, label="images per class")
                seed = gr.Number(value=0, precision=0, label="seed")
            with gr.Row():
                cfg = gr.Slider(0, 10, value=defaults["cfg"], step=0.1, label="CFG")
                schedule = gr.Dropdown([s for s in guidance.SCHEDULES if s != "list"],
                                       value="linear", label="CFG schedule")
                top_k = gr.Number(value=0, precision=0, label="top-k (0: off)")
                top_p = gr.Slider(0, 1, value=0.0, step=0.01, label="top-p (0: off)")
            with gr.Row():
                mr = gr.Checkbox(value=False, label="masked resampling")
                mr_threshold = gr.Number(value=defaults["mr_threshold"], label="MR threshold")
                mr_iterations = gr.Slider(1, 25, value=defaults["mr_iterations"], step=1,
                                          label="MR iterations")
                mask = gr.Dropdown(list(masks.NAMES), value=spec.transformer.mask,
                                   label="attention mask")
                smooth = gr.Checkbox(value=False, label="more_smooth (visual)")
            run = gr.Button("Sample", variant="primary", elem_id="sample-button")
            picture = gr.Image(label="samples", elem_id="sample-result")
            message = gr.Markdown(elem_id="sample-message")
            run.click(studio.sample_grid, [classes, per_class, seed, cfg, schedule, top_k, top_p,
                                           mr, mr_threshold, mr_iterations, mask, smooth],
                      [picture, message])
        with gr.Tab("Edit"):
            editor = gr.ImageEditor(type="numpy", label=f"image ({studio.size} x {studio.size})"
                                    "; paint the region", elem_id="edit-input")
            with gr.Row():
                task = gr.Radio(list(TASKS), value="inpaint", label="task")
                factor = gr.Dropdown([2, 4], value=2, label="super-resolution factor")
                label = gr.Number(value=-1, precision=0, label="class (-1: unconditional)")
                samples = gr.Slider(1, 8, value=2, step=1, label="results")
                edit_seed = gr.Number(value=0, precision=0, label="seed")
                edit_cfg = gr.Slider(0, 10, value=defaults["cfg"], step=0.1, label="CFG")
                on_grid = gr.Checkbox(value=False, label="round the region on the token grid")
            go = gr.Button("Edit", variant="primary", elem_id="edit-button")
            result = gr.Image(label="input and results", elem_id="edit-result")
            edit_message = gr.Markdown(elem_id="edit-message")

            def edit(value, task, factor, label, samples, seed, cfg, on_grid):
                background = (value or {}).get("background")
                return studio.edit(background, painted_pixels(value), task, factor, label,
                                   samples, seed, cfg, box_on_token_grid=on_grid)

            go.click(edit, [editor, task, factor, label, samples, edit_seed, edit_cfg, on_grid],
                     [result, edit_message])
    return page


_MODEL = flags.DEFINE_string("model", None, "model directory or released name (var_d16 ...)",
                             required=True)
_PORT = flags.DEFINE_integer("port", 7860, "local port of the page")
_SHARE = flags.DEFINE_bool("share", False, "also serve through a public Gradio link")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        studio = Studio(_MODEL.value)
    except errors.KnownError as error:
        raise app.UsageError(str(error)) from None
    build(studio).launch(server_name="127.0.0.1", server_port=_PORT.value, share=_SHARE.value)


if __name__ == "__main__":
    app.run(main)
