"""Reading PyTorch `.pth` checkpoints (needs the optional `torch` extra: pip install -e .[torch]).

Accepts plain state dicts (the released `vae_ch160v4096z32.pth`, `var_d*.pth`) and VAR's training
checkpoints (`ar-ckpt-*.pth`: {'trainer': {'var_wo_ddp': ..., 'vae_local': ...}, ...}).
"""

from __future__ import annotations

import os

import numpy as np

_TRAINER_KEYS = {"vae": "vae_local", "var": "var_wo_ddp"}


def _torch_load(path: str):
    """torch.load of a .pth file (weights only), with clear errors for a missing torch or file."""
    try:
        import torch
    except ImportError as err:
        raise ImportError(
            f"reading {path} needs PyTorch: pip install 'srdd_jax[torch]' (or convert it once on a "
            "machine that has it and use the saved .npz / orbax checkpoint)"
        ) from err
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated/corrupt archives
        raise ValueError(
            f"cannot read PyTorch checkpoint {path} ({type(err).__name__}: {err}). The file is "
            "corrupt or incomplete: download it again (compare its size with the release)."
        ) from err


def _to_numpy(obj, path: str) -> dict[str, np.ndarray]:
    import torch

    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} holds no state dict of tensors (found {type(obj).__name__})")
    return {name: tensor.detach().cpu().numpy() for name, tensor in obj.items()}


def load_state_dict(path: str, part: str) -> dict[str, np.ndarray]:
    """Loads `part` ('vae' or 'var') from a .pth file as {name: numpy array}."""
    obj = _torch_load(path)
    if isinstance(obj, dict) and "trainer" in obj:
        obj = obj["trainer"].get(_TRAINER_KEYS[part])
        if obj is None:
            raise ValueError(f"{path} is a VAR training checkpoint without '{_TRAINER_KEYS[part]}'")
    return _to_numpy(obj, path)


def read_weights(path: str, missing_help: str) -> dict[str, np.ndarray]:
    """{name: array} from a state-dict `.pth` (needs torch) or an `.npz` of the same keys.

    A missing file raises FileNotFoundError with `missing_help` (where to get it)."""
    if not path or not os.path.isfile(path):
        raise FileNotFoundError(f"weights file {path!r} not found. {missing_help}")
    if path.endswith(".npz"):
        with np.load(path) as data:
            return {name: data[name] for name in data.files}
    return _to_numpy(_torch_load(path), path)
