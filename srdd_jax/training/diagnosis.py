"""What to tell the user when a run's loss or parameters stop being finite.

The advice depends on what is known: a batch that disagrees with the model (labels or token
indices out of range, images outside [-1, 1]) is a data/config problem; a loss that was never
finite in this run points at the data or config too (the learning rate had no time to diverge);
only a loss that was finite and then diverged calls for a lower learning rate.
"""

from __future__ import annotations

import numpy as np


def batch_problems(batch: dict, num_classes: int | None = None,
                   vocab_size: int | None = None) -> list[str]:
    """How a host batch ({'image': (b, H, W, C) | 'tokens': (b, L), 'label': (b,)}) disagrees
    with a model of `num_classes` classes and `vocab_size` codes (None: not checked)."""
    problems = []
    if "image" in batch:
        images = np.asarray(batch["image"])
        finite = np.isfinite(images)
        if not finite.all():
            problems.append(f"{int((~finite).sum())} image values are NaN or infinite")
        elif images.size and (images.min() < -1.0001 or images.max() > 1.0001):
            problems.append(f"image values span [{images.min():.3g}, {images.max():.3g}], "
                            "outside the model's [-1, 1]")
    for key, limit, what in (("label", num_classes, "config.model.transformer.num_classes"),
                             ("tokens", vocab_size, "config.model.tokenizer.vocab_size")):
        if key in batch and limit is not None and np.size(batch[key]):
            values = np.asarray(batch[key])
            if values.min() < 0 or values.max() >= limit:
                problems.append(f"{key} values span [{values.min()}, {values.max()}] but {what} "
                                f"is {limit} (valid: 0..{limit - 1})")
    return problems


def advice(section: str, optim, batch_issues: list[str], last_finite_step: int | None,
           start: int) -> str:
    """The fix to suggest, from what is known about the failure.

    section: the run's config section (e.g. 'training'); optim: its optimiser config;
    batch_issues: batch_problems of the batch that failed; last_finite_step: the last step whose
    loss was logged finite in this process (None: none since it started at step `start`).
    """
    if batch_issues:
        return ("The batch disagrees with the model: " + "; ".join(batch_issues) + ". This is a "
                "data/config problem, not a learning-rate one: fix the data, or set the model "
                "config to match it.")
    if last_finite_step is None:
        return (f"No finite loss was logged since this run started at step {start}, so the "
                "learning rate has had no time to diverge: check the data (images in [-1, 1], "
                "labels below num_classes) and the model and data config before the optimiser.")
    return (f"The loss was finite at step {last_finite_step} and diverged after it: lower "
            f"config.{section}.optim.base_lr (now {optim.base_lr:g}), clip harder with "
            f"config.{section}.optim.grad_clip (now {optim.grad_clip:g}), or lengthen "
            f"config.{section}.optim.warmup_steps (now {optim.warmup_steps}).")
