"""How mode=evaluate scores a model, declared once: `EvalSpec` (frozen, typed, validated).

per_class samples of every class (with the sampling settings) are scored against the first
reference_images (0 = all) of `split` with a dataset classifier (classifier_dir, default
<workdir>/evaluate/classifier; trained for classifier_steps on the first classifier_images (0 = all)
training images if absent); k-NN precision/recall with pr_k; NLL on the first nll_images (0 = all)
reference images, also under the null class if nll_unconditional. inception_weights ('' = skip):
the FID Inception .pth/.npz. reference_cache: real statistics (default <workdir>/evaluate/reference).
"""

from __future__ import annotations

import dataclasses
import os


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
        if not self.split:
            raise ValueError("config.evaluate.split is empty: name the held-out split, e.g. test")
        if need_files and self.inception_weights and not os.path.isfile(self.inception_weights):
            raise ValueError(f"config.evaluate.inception_weights={self.inception_weights!r} is not "
                             "a file: give the FID Inception .pth/.npz (see "
                             "srdd_jax/evaluation/inception_weights.py) or '' to skip the "
                             "Inception metrics")
