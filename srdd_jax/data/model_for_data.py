"""The model spec's data-dependent fields against the data it trains or is evaluated on.

Those fields are model.tokenizer.in_channels (grey 1 or RGB 3), model.transformer.num_classes, and
the scale pyramid model.patch_nums, whose last side times the tokenizer's downsampling is the image
size. With `config.model_from_data` (configs/image_folder.py) `fit` reads the first two from the
data and the pyramid from config.data.image_size; otherwise `check` refuses any disagreement, with
the field, the data's value and the fix. Either way the data's class names are recorded in
model.class_names, so sample grids can label their columns.
"""

from __future__ import annotations

import dataclasses

from absl import logging

from srdd_jax import errors, models, scales
from srdd_jax.data.sources import DataFacts, listed

TRAINING_FIX = "Use configs/image_folder.py, which reads them from the data, or set {settings}"


def mismatches(spec: models.ModelSpec, facts: DataFacts,
               image_size: int = 0) -> list[tuple[str, object, object, str]]:
    """[(field, its value, the value that agrees with the data, why)] for every field where the
    model disagrees with the data; image_size 0 means the model's own."""
    found = []
    channels = spec.tokenizer.in_channels
    if facts.channels is not None and channels != facts.channels:
        kind = "RGB" if facts.channels == 3 else "greyscale"
        found.append(("model.tokenizer.in_channels", channels, facts.channels,
                      f"{facts.where} are {kind} ({facts.channels} channel{'s' * (facts.channels > 1)})"))
    num_classes = spec.transformer.num_classes
    if num_classes != len(facts.class_names):
        found.append(("model.transformer.num_classes", num_classes, len(facts.class_names),
                      f"{facts.where} have {listed(facts.class_names)}"))
    model_size = models.Model(spec).image_size
    if image_size and image_size != model_size:
        found.append(("data.image_size", image_size, 0,
                      f"the model makes {model_size} px images (0 means the model's size)"))
    return found


def describe(found, fix: str) -> str:
    """One message for `mismatches`: each field with its value and why it disagrees, then `fix`,
    in which {settings} becomes the --config flags that would make them agree."""
    lines = [f"config.{field}={value}, but {why}" for field, value, _, why in found]
    settings = " ".join(f"--config.{field}={wanted}" for field, _, wanted, _ in found)
    return "; ".join(lines) + ". " + fix.format(settings=settings)


def check(spec: models.ModelSpec, facts: DataFacts, image_size: int = 0,
          fix: str = TRAINING_FIX) -> None:
    """Raises errors.ConfigError naming every field where the model disagrees with the data."""
    found = mismatches(spec, facts, image_size)
    if found:
        raise errors.ConfigError(describe(found, fix))


def check_saved_model_fits(spec: models.ModelSpec, facts: DataFacts, model_dir: str) -> None:
    """The data a mode reads must fit the model it loaded (evaluate, distill, edit without files)."""
    check(spec, facts, fix=(
        f"The model in {model_dir} was trained on other data: point config.data at data like its "
        "own, or use a model trained on this data"))


def with_class_names(spec: models.ModelSpec, facts: DataFacts) -> models.ModelSpec:
    """The spec recording the data's class names."""
    return spec.replace(class_names=tuple(facts.class_names))


def fit(spec: models.ModelSpec, facts: DataFacts, image_size: int = 0) -> models.ModelSpec:
    """The spec with the data's channels, classes and class names, and, when image_size differs
    from the model's, patch_nums = scales.pyramid(image_size / downsampling), unless patch_nums
    already ends at that latent side."""
    factor = spec.tokenizer.downsampling
    changes = dict(class_names=tuple(facts.class_names), transformer=dataclasses.replace(
        spec.transformer, num_classes=len(facts.class_names)))
    if facts.channels is not None:
        changes["tokenizer"] = dataclasses.replace(spec.tokenizer, in_channels=facts.channels)
    if image_size and image_size != factor * spec.patch_nums[-1]:
        if image_size % factor:
            raise errors.ConfigError(
                f"config.data.image_size={image_size} is not a multiple of the tokenizer's "
                f"downsampling {factor} (2 ** (len(model.tokenizer.ch_mult) - 1)): "
                f"choose e.g. {image_size // factor * factor or factor}")
        changes.update(patch_nums=scales.pyramid(image_size // factor), tokenizer_patch_nums=())
    fitted = spec.replace(**changes)
    logging.info("model from the data: %d channels, %s, %d px images, scales %s",
                 fitted.tokenizer.in_channels, listed(fitted.class_names),
                 factor * fitted.patch_nums[-1], tuple(fitted.patch_nums))
    return fitted
