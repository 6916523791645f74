"""Zero-shot editing measured: inpainting, outpainting and super-resolution of held-out images.

For each task of an `EditEvalSpec` the held-out images are edited by the sampler under the
task's constraints (`sampling/editing.py`) and scored against the originals:

- in/outpainting, over three regions of pixels: `known` (given to the model: consistency, since
  the given tokens pass through the tokenizer, this is bounded by its reconstruction), `generated`
  (the model's fill against the truth) and `whole`;
- super-resolution: `input` (the edit downsampled bilinearly to the input's size against the
  input: consistency) and `whole` (against the original);
- per region PSNR and SSIM (`image_similarity`; SSIM where every image's region holds the centre
  of an 11 x 11 window: at 16 px the centre box leaves none in the known region), LPIPS of the
  whole image when LPIPS weights are given, and the in-domain metrics of the edited images
  (in-domain FID, precision/recall against the real statistics, class accuracy against the
  images' labels) from the `Evaluator` that runs this.

Returns {task: {metric: mean over images}} plus the number of images per task, and the same
scores of the tokenizer's reconstructions of the images under "reconstruction": the bound of the
known regions' fidelity (forcing every token gives the reconstruction).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from srdd_jax import image_grids
from srdd_jax.evaluation import image_similarity
from srdd_jax.evaluation.spec import EditEvalSpec
from srdd_jax.sampling import editing, generation

CENTRE_BOX = (0.25, 0.25, 0.75, 0.75)


def keep_masks(task: str, n: int, size: int, spec: EditEvalSpec, grid: int | None) -> np.ndarray:
    """(n, size, size) float32 keep masks (1: given) of an in/outpainting task."""
    if task == "inpaint_center":
        return np.broadcast_to(editing.box_mask(size, CENTRE_BOX, False, grid), (n, size, size))
    if task == "inpaint_random":
        rng = np.random.default_rng(spec.seed)
        masks = []
        for _ in range(n):
            height, width = rng.uniform(0.25, 0.5, size=2)
            top, left = rng.uniform(0, 1 - height), rng.uniform(0, 1 - width)
            masks.append(editing.box_mask(size, (top, left, top + height, left + width), False,
                                          grid))
        return np.stack(masks)
    strip = spec.outpaint_strip
    kept = {"outpaint_top": (strip, 0, 1, 1), "outpaint_bottom": (0, 0, 1 - strip, 1),
            "outpaint_left": (0, strip, 1, 1), "outpaint_right": (0, 0, 1, 1 - strip)}[task]
    return np.broadcast_to(editing.box_mask(size, kept, True, grid), (n, size, size))


def _unit(images):
    """[-1, 1] -> [0, 1] float64."""
    return (np.asarray(images, np.float64) + 1) / 2


def _similarity(prefix: str, edited, truth, region=None) -> dict:
    """{prefix_psnr, prefix_ssim (when the images allow it)} means over images."""
    out = {f"{prefix}_psnr": float(np.mean(image_similarity.psnr(edited, truth, region)))}
    if min(edited.shape[1:3]) >= 11:
        ssim = image_similarity.ssim(edited, truth, region)
        if np.isfinite(ssim).all():  # (a region may hold no 11 x 11 window's centre)
            out[f"{prefix}_ssim"] = float(np.mean(ssim))
    return out


def edit(sampler, params: dict, task: str, spec: EditEvalSpec, images_NHWC: np.ndarray,
         conditioning_N: np.ndarray, batch_size: int) -> dict:
    """One task's edits of `images_NHWC` (float32 in [-1, 1]) by `sampler`, conditioned on
    `conditioning_N`: {"edited": (N, H, W, C) in [-1, 1], "given": what the model is given
    (`editing.model_view`), "keep": (N, H, W) keep masks (in/outpainting) or "low": the
    low-resolution input (super-resolution), "images_per_s"}."""
    tokenizer = sampler.model.tokenizer
    if task.startswith("super_resolution"):
        inputs = editing.edit_inputs(tokenizer, params["tokenizer"], images_NHWC,
                                     sampler.plan.layout,
                                     factor=int(task.rsplit("_", 1)[1][:-1]))
    else:
        grid = tokenizer.latent_size if spec.box_on_token_grid else None
        keep = keep_masks(task, len(images_NHWC), sampler.model.image_size, spec, grid)
        inputs = editing.edit_inputs(tokenizer, params["tokenizer"], images_NHWC,
                                     sampler.plan.layout, keep)
    out = generation.generate(sampler, params, conditioning_N, jax.random.key(spec.seed),
                              batch_size, f"editing: {task}", inputs.pop("known_idx_BL"),
                              inputs.pop("known_BL"))
    return {"edited": np.clip(out["images_NHWC"], -1, 1), "images_per_s": out["images_per_s"],
            **inputs}


def reconstruct(tokenizer, tok_params, images_NHWC: np.ndarray, batch_size: int) -> np.ndarray:
    """The tokenizer's reconstructions (N, H, W, C) in [-1, 1] of images (N, H, W, C) in [-1, 1]."""
    run = jax.jit(lambda p, x: tokenizer.apply({"params": p}, x))
    parts = [np.asarray(run(tok_params, images_NHWC[i:i + batch_size]))
             for i in range(0, len(images_NHWC), batch_size)]
    return np.clip(np.concatenate(parts), -1, 1)


def conditioning(spec: EditEvalSpec, labels_N: np.ndarray, num_classes: int) -> np.ndarray:
    """The class each edit is conditioned on: its label when `spec.conditional`, else the null
    class (`num_classes`)."""
    return labels_N if spec.conditional else np.full(len(labels_N), num_classes, np.int32)


def evaluate(evaluator, params: dict, settings, spec: EditEvalSpec, images_NHWC: np.ndarray,
             labels_N: np.ndarray, classifier, real_stats) -> dict:
    """Edits `images_NHWC` (float32 in [-1, 1], the held-out images) by every task of `spec` and
    scores them (see the module docstring); `evaluator` supplies the sampler, the batch size,
    the in-domain scores and the mesh."""
    sampler = evaluator.sampler(settings)
    classes = conditioning(spec, labels_N, evaluator.spec.transformer.num_classes)
    lpips_params = None
    if spec.lpips_weights:
        from srdd_jax.training import perceptual  # (torch-free; only where LPIPS is asked for)

        lpips_params = perceptual.load_lpips(spec.lpips_weights, spec.vgg16_weights)
    truth = _unit(images_NHWC)

    def whole_scores(edited):
        scores = {"images": len(images_NHWC), **_similarity("whole", _unit(edited), truth)}
        if lpips_params is not None:
            distance = perceptual.lpips(lpips_params, jnp.asarray(edited), jnp.asarray(images_NHWC))
            scores["whole_lpips"] = float(np.mean(np.asarray(distance)))
        in_domain = evaluator.classifier_metrics(classifier, real_stats,
                                                 image_grids.to_uint8(edited), labels_N)
        scores.update({k: v for k, v in in_domain.items()
                       if k not in ("images", "class_accuracy_per_class", "classifier_test_accuracy")})
        return scores

    report = {"reconstruction": whole_scores(reconstruct(
        sampler.model.tokenizer, params["tokenizer"], images_NHWC, evaluator.ev.batch_size))}
    for task in spec.tasks:
        result = edit(sampler, params, task, spec, images_NHWC, classes, evaluator.ev.batch_size)
        edited = result["edited"]
        scores = {"images_per_s": result["images_per_s"], **whole_scores(edited)}
        if "low" in result:
            down = np.asarray(jax.image.resize(edited, result["low"].shape, "linear"))
            scores.update(_similarity("input", _unit(down), _unit(result["low"])))
        else:
            scores.update(_similarity("known", _unit(edited), truth, result["keep"]))
            scores.update(_similarity("generated", _unit(edited), truth, 1.0 - result["keep"]))
        report[task] = scores
    return report
