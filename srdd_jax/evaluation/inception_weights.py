"""Weights of the FID Inception-v3: the PyTorch `.pth` state dict -> `inception.InceptionV3` params.

The weights are torch-fidelity's / pytorch-fid's conversion of the TF graph
`inception-2015-12-05` (`pt_inception-2015-12-05-6726825d.pth`, the same tensors as
`weights-inception-2015-12-05-6726825d.pth`). They are never downloaded at run time: fetch
`URL` once and pass its path. Reading a `.pth` needs torch; convert once to a torch-free `.npz`:

    python -m srdd_jax.evaluation.inception_weights IN.pth OUT.npz

The `.npz` holds the state dict unchanged (same keys), so both files go through one strict
mapping: every conv weight, BatchNorm tensor and fc tensor must be present with its shape, and
any other key is an error. BatchNorm (eps 1e-3) is folded into the conv in float64.
"""

from __future__ import annotations

import functools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from srdd_jax import weights_io
from srdd_jax.evaluation import inception

URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
       "weights-inception-2015-12-05-6726825d.pth")
BN_EPS = 1e-3
_BN_TENSORS = ("weight", "bias", "running_mean", "running_var")
# Bookkeeping counters some PyTorch versions save with BatchNorm; they carry no weights.
_IGNORED_SUFFIX = ".bn.num_batches_tracked"


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """{name: array} from a `.pth` state dict (needs torch) or an `.npz` written by `convert`."""
    return weights_io.read_weights(path, (
        "The FID Inception weights are not downloaded at run time: "
        f"fetch {URL} once (e.g. wget -O pt_inception-2015-12-05-6726825d.pth '{URL}') and "
        "pass its path, or an .npz made from it with "
        "`python -m srdd_jax.evaluation.inception_weights IN.pth OUT.npz`."))


@functools.cache
def param_shapes() -> dict[tuple[str, ...], tuple[int, ...]]:
    """Flattened {param path: shape} of `InceptionV3` (abstract init, nothing computed)."""
    abstract = jax.eval_shape(inception.InceptionV3().init, jax.random.key(0),
                              jax.ShapeDtypeStruct((1, inception.INPUT_SIZE, inception.INPUT_SIZE, 3),
                                                   jnp.uint8))
    return {path: leaf.shape for path, leaf in traverse_util.flatten_dict(abstract["params"]).items()}


def _expected_tensors(shapes) -> dict[str, tuple[int, ...]]:
    """The state dict keys and shapes that `InceptionV3` needs."""
    expected = {}
    for path, shape in shapes.items():
        if path == ("fc_kernel",):
            expected["fc.weight"] = shape[::-1]
        elif path == ("fc_bias",):
            expected["fc.bias"] = shape
        elif path[-1] == "kernel":
            prefix = ".".join(path[:-1])
            kh, kw, cin, cout = shape
            expected[f"{prefix}.conv.weight"] = (cout, cin, kh, kw)
            expected.update({f"{prefix}.bn.{t}": (cout,) for t in _BN_TENSORS})
    return expected


def state_dict_to_params(state: dict[str, np.ndarray]) -> dict:
    """Maps a PyTorch FID-Inception state dict to float32 `InceptionV3` params, folding BN.

    Raises ValueError naming every missing, unexpected or mis-shaped tensor.
    """
    shapes = param_shapes()
    expected = _expected_tensors(shapes)
    given = {k: v for k, v in state.items() if not k.endswith(_IGNORED_SUFFIX)}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    misshaped = sorted(f"{k}: {tuple(given[k].shape)} (expected {expected[k]})"
                       for k in set(given) & set(expected) if tuple(given[k].shape) != expected[k])
    if missing or unexpected or misshaped:
        raise ValueError(
            "not an FID Inception-v3 (pt_inception-2015-12-05) state dict:"
            + (f"\n  missing: {missing}" if missing else "")
            + (f"\n  unexpected: {unexpected}" if unexpected else "")
            + (f"\n  wrong shape: {misshaped}" if misshaped else ""))
    flat = {}
    for path in shapes:
        if path == ("fc_kernel",):
            flat[path] = given["fc.weight"].T
        elif path == ("fc_bias",):
            flat[path] = given["fc.bias"]
        elif path[-1] == "kernel":
            prefix = ".".join(path[:-1])
            bn = {t: given[f"{prefix}.bn.{t}"].astype(np.float64) for t in _BN_TENSORS}
            scale = bn["weight"] / np.sqrt(bn["running_var"] + BN_EPS)
            weight = given[f"{prefix}.conv.weight"].astype(np.float64)
            flat[path] = np.transpose(weight, (2, 3, 1, 0)) * scale
            flat[path[:-1] + ("bias",)] = bn["bias"] - bn["running_mean"] * scale
    return traverse_util.unflatten_dict({k: np.asarray(v, np.float32) for k, v in flat.items()})


def load_params(path: str) -> dict:
    """`InceptionV3` params (float32 numpy) from a `.pth` or converted `.npz` file."""
    return state_dict_to_params(read_state_dict(path))


def convert(pth_path: str, npz_path: str) -> None:
    """Checks a `.pth` state dict maps completely, then saves it unchanged as a torch-free `.npz`."""
    state = read_state_dict(pth_path)
    state_dict_to_params(state)
    os.makedirs(os.path.dirname(os.path.abspath(npz_path)), exist_ok=True)
    np.savez(npz_path, **state)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m srdd_jax.evaluation.inception_weights IN.pth OUT.npz")
    convert(sys.argv[1], sys.argv[2])
    print(f"wrote {sys.argv[2]}")
