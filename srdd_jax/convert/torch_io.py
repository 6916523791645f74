"""Reading PyTorch `.pth` checkpoints (needs the optional `torch` extra: pip install -e .[torch]).

Accepts plain state dicts (the released `vae_ch160v4096z32.pth`, `var_d*.pth`) and VAR's training
checkpoints (`ar-ckpt-*.pth`: {'trainer': {'var_wo_ddp': ..., 'vae_local': ...}, ...}).
"""

from __future__ import annotations

import os

import numpy as np

_TRAINER_KEYS = {"vae": "vae_local", "var": "var_wo_ddp"}


def load_state_dict(path: str, part: str) -> dict[str, np.ndarray]:
    """Loads `part` ('vae' or 'var') from a .pth file as {name: numpy array}."""
    try:
        import torch
    except ImportError as err:
        raise ImportError(
            "reading .pth checkpoints needs PyTorch: pip install 'srdd_jax[torch]' "
            "(or convert once on a machine that has it and use the saved orbax checkpoint)"
        ) from err
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated/corrupt archives
        raise ValueError(
            f"cannot read PyTorch checkpoint {path} ({type(err).__name__}: {err}). The file is "
            "corrupt or incomplete: download it again (compare its size with the release)."
        ) from err
    if isinstance(obj, dict) and "trainer" in obj:
        obj = obj["trainer"].get(_TRAINER_KEYS[part])
        if obj is None:
            raise ValueError(f"{path} is a VAR training checkpoint without '{_TRAINER_KEYS[part]}'")
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} holds no state dict of tensors (found {type(obj).__name__})")
    return {name: tensor.detach().cpu().numpy() for name, tensor in obj.items()}
