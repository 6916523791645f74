"""VAR's released ImageNet models by name: `params, spec = pretrained.load("var_d16")`.

Names: var_d16, var_d20, var_d24, var_d30 (256 px) and var_d36 (512 px). The first `load` of a name
downloads the tokenizer `vae_ch160v4096z32.pth` and the transformer `var_dXX.pth` from the Hugging
Face Hub repository FoundationVision/var with huggingface_hub (into its own cache, HF_HUB_CACHE or
HF_HOME; HF_HUB_OFFLINE=1 reads only that cache), converts them (this needs torch) and keeps the
converted model directory in `cache_dir()`: $SRDD_JAX_CACHE, by default ~/.cache/srdd_jax
($XDG_CACHE_HOME/srdd_jax). Later loads read that directory with orbax and need neither torch nor
the network. The architecture is read from the files, as `python -m srdd_jax.convert` does, and
the released weights keep their block-causal `var` mask in the returned spec (a
`models.ModelSpec`; `srdd_jax.experiment_config.model_section(spec)` makes the config section
back from it, for users who want a ConfigDict).
"""

from __future__ import annotations

import os
import shutil
from typing import NamedTuple

from absl import logging

from srdd_jax import checkpoints, models, saved_models, weights_io
from srdd_jax.convert import var_checkpoints
from srdd_jax.sampling import class_grid

REPO_ID = "FoundationVision/var"
TOKENIZER_FILE = "vae_ch160v4096z32.pth"
NAMES = ("var_d16", "var_d20", "var_d24", "var_d30", "var_d36")


def cache_dir() -> str:
    """Where converted models are kept: $SRDD_JAX_CACHE, else $XDG_CACHE_HOME/srdd_jax, else
    ~/.cache/srdd_jax."""
    if os.environ.get("SRDD_JAX_CACHE"):
        return os.environ["SRDD_JAX_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "srdd_jax")


def files(name: str) -> tuple[str, str]:
    """(tokenizer file, transformer file) of a released model name."""
    if name not in NAMES:
        raise ValueError(f"unknown pretrained model {name!r}: choose one of {', '.join(NAMES)}, or "
                         "give a model directory")
    return TOKENIZER_FILE, f"{name}.pth"


def _download(name: str, target: str) -> tuple[str, str]:
    """Local paths of the name's two files, from the Hub or its local cache; a clear error with
    what to download and where to put it when neither has them."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.utils import HfHubHTTPError, LocalEntryNotFoundError

    wanted = files(name)
    paths = []
    for filename in wanted:
        logging.info("%s: fetching %s from %s (Hugging Face Hub, or its cache %s)", name, filename,
                     REPO_ID, constants.HF_HUB_CACHE)
        try:
            paths.append(hf_hub_download(REPO_ID, filename))
        except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as err:
            urls = " and ".join(f"https://huggingface.co/{REPO_ID}/resolve/main/{f}" for f in wanted)
            offline = " (HF_HUB_OFFLINE is set)" if constants.HF_HUB_OFFLINE else ""
            raise FileNotFoundError(
                f"cannot get {filename} for {name} from the Hugging Face Hub{offline}: "
                f"{type(err).__name__}: {err}\nDownload {urls} on a machine with network, then "
                f"either convert them into the directory this loader reads first:\n  python -m "
                f"srdd_jax.convert --vae={wanted[0]} --var={wanted[1]} --out={target}\nor copy a "
                f"Hugging Face cache that holds them (`hf download {REPO_ID} {' '.join(wanted)}`) to "
                f"{constants.HF_HUB_CACHE} (HF_HUB_CACHE).") from err
    return paths[0], paths[1]


def model_dir(name: str, cache: str | None = None) -> str:
    """The converted model directory of a released name in `cache` (default `cache_dir()`),
    downloaded and converted first if it is not there yet."""
    files(name)
    target = os.path.join(cache or cache_dir(), name)
    if os.path.isfile(os.path.join(target, checkpoints.CONFIG_FILE)):
        return target
    vae_path, var_path = _download(name, target)
    logging.info("%s: converting %s and %s (once)", name, vae_path, var_path)
    spec, params = var_checkpoints.convert_state_dicts(weights_io.load_state_dict(vae_path, "vae"),
                                                       weights_io.load_state_dict(var_path, "var"))
    # Written beside the target and renamed, so an interrupted conversion leaves no half model.
    partial = f"{target}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    saved_models.save_model(partial, params, spec)
    try:
        os.rename(partial, target)
    except OSError:  # another process converted it meanwhile
        shutil.rmtree(partial, ignore_errors=True)
        if not os.path.isfile(os.path.join(target, checkpoints.CONFIG_FILE)):
            raise
    logging.info("%s: the converted model is in %s; later loads read it without torch", name, target)
    return target


def resolve(name_or_dir: str, cache: str | None = None) -> str:
    """A model directory: for a released name its converted directory (see `model_dir`), else
    `name_or_dir` itself."""
    return model_dir(name_or_dir, cache) if name_or_dir in NAMES else name_or_dir


class Model(NamedTuple):
    """A loaded model: unpacks as (params, spec); `sample` draws a class grid from it."""

    params: dict
    spec: models.ModelSpec

    def sample(self, classes=(), per_class: int = 1, settings=None, seed: int = 0, **kwargs):
        """`sampling.class_grid.sample` of this model: a ClassGrid, one column per class (a
        notebook shows it)."""
        return class_grid.sample(self.params, self.spec, classes, per_class, settings, seed,
                                 **kwargs)


def load(name_or_dir: str, cache: str | None = None, shardings=None) -> Model:
    """(params, spec) of a released name (see the module docstring) or of a model directory.
    `shardings` places the arrays as in `saved_models.load_model`."""
    directory = resolve(name_or_dir, cache)
    if "://" not in directory and not os.path.isdir(directory):
        raise FileNotFoundError(f"{name_or_dir!r} is neither a released model name ({', '.join(NAMES)}) "
                                "nor a model directory")
    return Model(*saved_models.load_model(directory, shardings))
