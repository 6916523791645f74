"""How mode=evaluate scores a model, declared once: `EvalSpec` (frozen, typed, validated).

per_class samples of every class (with the sampling settings) are scored against the first
reference_images (0 = all) of `split` with a dataset classifier (classifier_dir, default
<workdir>/evaluate/classifier; trained for classifier_steps on the first classifier_images (0 = all)
training images if absent); k-NN precision/recall with pr_k; NLL on the first nll_images (0 = all)
reference images, also under the null class if nll_unconditional. inception_weights ('' = skip):
the FID Inception .pth/.npz. reference_cache: real statistics (default <workdir>/evaluate/reference).
edit: the editing evaluation (`EditEvalSpec`), off unless it names tasks.
"""

from __future__ import annotations

import dataclasses
import os

EDIT_TASKS = ("inpaint_center", "inpaint_random", "outpaint_top", "outpaint_bottom",
              "outpaint_left", "outpaint_right", "super_resolution_2x", "super_resolution_4x")


@dataclasses.dataclass(frozen=True)
class EditEvalSpec:
    """Zero-shot editing measured (evaluation/edit_eval.py): each of `tasks` (EDIT_TASKS; empty:
    no editing evaluation) on the first `images` held-out images of evaluate.split, conditioned
    on their labels when `conditional` (else the null class). inpaint_center generates the
    centre box (0.25, 0.25, 0.75, 0.75); inpaint_random a box per image with sides of 25-50 %
    drawn from `seed`; outpaint_<side> the `outpaint_strip` fraction of the image at that side;
    super_resolution_<f>x the image from its 1/f bilinear downsample. `box_on_token_grid` rounds
    boxes and strips on the token grid. `lpips_weights` (+ `vgg16_weights` for the lpips
    package's .pth; see training/perceptual.py): also LPIPS, else it is skipped."""

    tasks: tuple[str, ...] = ()
    images: int = 200
    seed: int = 0
    conditional: bool = True
    outpaint_strip: float = 0.5
    box_on_token_grid: bool = False
    lpips_weights: str = ""
    vgg16_weights: str = ""

    def validate(self) -> None:
        unknown = [t for t in self.tasks if t not in EDIT_TASKS]
        if unknown:
            raise ValueError(f"config.evaluate.edit.tasks has {unknown}: choose among "
                             f"{', '.join(EDIT_TASKS)}")
        if self.images < 1:
            raise ValueError(f"config.evaluate.edit.images={self.images} must be >= 1")
        if not 0 < self.outpaint_strip < 1:
            raise ValueError(f"config.evaluate.edit.outpaint_strip={self.outpaint_strip} must be "
                             "in (0, 1)")


@dataclasses.dataclass(frozen=True)
class EvalSpec:
    per_class: int = 100
    batch_size: int = 100
    seed: int = 0
    split: str = "test"
    reference_images: int = 10000
    nll_images: int = 10000
    nll_unconditional: bool = True
    classifier_dir: str = ""
    classifier_steps: int = 1500
    classifier_images: int = 60000
    pr_k: int = 3
    inception_weights: str = ""
    inception_batch_size: int = 50
    reference_cache: str = ""
    edit: EditEvalSpec = EditEvalSpec()

    def validate(self, num_classes: int, data_source: str, need_files: bool) -> None:
        """ValueError naming the first bad field; `need_files`: the weights must exist now."""
        for field, least in (("per_class", 1), ("batch_size", 1), ("classifier_steps", 1),
                             ("pr_k", 1), ("inception_batch_size", 1), ("reference_images", 0),
                             ("nll_images", 0), ("classifier_images", 0)):
            if getattr(self, field) < least:
                raise ValueError(f"config.evaluate.{field}={getattr(self, field)} must be >= "
                                 f"{least}" + (" (0 = all)" if least == 0 else ""))
        samples = self.per_class * num_classes
        if samples <= self.pr_k or 0 < self.reference_images <= self.pr_k:
            raise ValueError(f"config.evaluate.pr_k={self.pr_k} needs more samples ({samples} = "
                             f"per_class x classes) and reference_images ({self.reference_images})"
                             " than pr_k")
        if data_source == "fashion_mnist" and self.split not in ("train", "test"):
            raise ValueError(f"config.evaluate.split={self.split!r}: Fashion-MNIST has 'train' and "
                             "'test'")
        self.edit.validate()
        if not self.split:
            raise ValueError("config.evaluate.split is empty: name the held-out split, e.g. test")
        if need_files and self.inception_weights and not os.path.isfile(self.inception_weights):
            raise ValueError(f"config.evaluate.inception_weights={self.inception_weights!r} is not "
                             "a file: give the FID Inception .pth/.npz (see "
                             "srdd_jax/evaluation/inception_weights.py) or '' to skip the "
                             "Inception metrics")
