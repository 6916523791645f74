"""Optional tokenizer losses: LPIPS (VGG16) perceptual distance and a PatchGAN discriminator.

LPIPS (Zhang et al. 2018, the `lpips` package with net='vgg', version 0.1): images in [-1, 1] are
shifted/scaled to VGG's input statistics; the relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3
features of both images are unit-normalised over channels, their squared difference is weighted
per channel by the linear heads (1x1 convs without bias), averaged over space and summed over the
five layers. Weights are never downloaded: they come from torchvision's `vgg16` state dict
(`features.N.weight|bias`) and the lpips package's `vgg.pth` (`linK.model.1.weight`), as `.pth`
files or as one `.npz` holding both sets of keys.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from srdd_jax import weights_io

SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
SCALE = np.array([0.458, 0.448, 0.450], np.float32)
# Indices of torchvision's vgg16.features convs, grouped by the LPIPS slice each ends; a 2x2 max
# pool precedes every slice but the first.
VGG_SLICES = ((0, 2), (5, 7), (10, 12, 14), (17, 19, 21), (24, 26, 28))
WEIGHTS_HELP = (
    "LPIPS needs pretrained weights: the linear heads `vgg.pth` of the lpips package (v0.1; "
    "https://github.com/richzhang/PerceptualSimilarity, file lpips/weights/v0.1/vgg.pth, also "
    "inside `pip install lpips`) in config.tokenizer_training.lpips_weights, and torchvision's "
    "ImageNet VGG16 (https://download.pytorch.org/models/vgg16-397923af.pth) in "
    "config.tokenizer_training.vgg16_weights; or one .npz holding both state dicts' keys "
    "(features.N.weight/bias, linK.model.1.weight) in lpips_weights")


def _read(path: str) -> dict[str, np.ndarray]:
    return weights_io.read_weights(path, WEIGHTS_HELP)


def load_lpips(lpips_weights: str, vgg16_weights: str = "") -> dict:
    """LPIPS params from files (see the module docstring) -> {'features': 13 x {'kernel' (3, 3,
    I, O), 'bias' (O,)}, 'lin': 5 x (C,)}."""
    state = _read(lpips_weights)
    if not lpips_weights.endswith(".npz"):
        state.update(_read(vgg16_weights))
    return lpips_params(state)


def lpips_params(state: dict[str, np.ndarray]) -> dict:
    """Torch-layout arrays (conv OIHW, lin (1, C, 1, 1)) -> the params `lpips` takes."""
    missing = [k for i in sum(VGG_SLICES, ()) for k in (f"features.{i}.weight", f"features.{i}.bias")
               if k not in state] + [f"lin{k}.model.1.weight" for k in range(5)
                                     if f"lin{k}.model.1.weight" not in state]
    if missing:
        raise ValueError(f"LPIPS weights lack {missing[:4]}{'...' if len(missing) > 4 else ''}. "
                         f"{WEIGHTS_HELP}")
    features = [{"kernel": np.transpose(state[f"features.{i}.weight"], (2, 3, 1, 0)).astype(np.float32),
                 "bias": state[f"features.{i}.bias"].astype(np.float32)} for i in sum(VGG_SLICES, ())]
    lin = [state[f"lin{k}.model.1.weight"].reshape(-1).astype(np.float32) for k in range(5)]
    return {"features": features, "lin": lin}


def vgg_features(features: list, x_BHWC: jax.Array) -> list[jax.Array]:
    """The five LPIPS VGG16 activations (B, H/2^k, W/2^k, C_k) of VGG-normalised RGB images."""
    outs, conv = [], 0
    for s, block in enumerate(VGG_SLICES):
        if s:
            x_BHWC = jax.lax.reduce_window(x_BHWC, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1),
                                           "VALID")
        for _ in block:
            p = features[conv]
            x_BHWC = jax.nn.relu(jax.lax.conv_general_dilated(
                x_BHWC, p["kernel"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
                + p["bias"])
            conv += 1
        outs.append(x_BHWC)
    return outs


def lpips(params: dict, x0_BHWC: jax.Array, x1_BHWC: jax.Array) -> jax.Array:
    """LPIPS distance (B,) between images in [-1, 1], (B, H, W, 3) or grayscale (B, H, W, 1)."""
    both = jnp.concatenate([x0_BHWC, x1_BHWC]).astype(jnp.float32)
    if both.shape[-1] == 1:
        both = jnp.repeat(both, 3, axis=-1)
    feats = vgg_features(params["features"], (both - SHIFT) / SCALE)
    b = x0_BHWC.shape[0]
    total = jnp.zeros((b,), jnp.float32)
    for f, w in zip(feats, params["lin"]):
        f = f / (jnp.sqrt(jnp.sum(jnp.square(f), axis=-1, keepdims=True)) + 1e-10)
        total = total + jnp.mean(jnp.square(f[:b] - f[b:]) @ w, axis=(1, 2))
    return total


class PatchDiscriminator(nn.Module):
    """PatchGAN (pix2pix/VQGAN layout): `layers` stride-2 4x4 convs doubling `channels` (at most
    8x), a stride-1 4x4 conv, then a 4x4 conv to one logit per patch: (B, H, W, C) ->
    (B, H/2^layers, W/2^layers, 1). GroupNorm instead of BatchNorm, so there are no batch
    statistics to carry and the sharded step stays a pure function of its batch."""

    channels: int = 64
    layers: int = 3

    @nn.compact
    def __call__(self, x_BHWC: jax.Array) -> jax.Array:
        h = nn.leaky_relu(nn.Conv(self.channels, (4, 4), (2, 2), ((1, 1), (1, 1)))(x_BHWC), 0.2)
        for n in range(1, self.layers + 1):
            width = self.channels * min(2 ** n, 8)
            stride = 2 if n < self.layers else 1
            pad = ((1, 1), (1, 1)) if stride == 2 else "SAME"
            h = nn.Conv(width, (4, 4), (stride, stride), pad, use_bias=False)(h)
            h = nn.leaky_relu(nn.GroupNorm(num_groups=math.gcd(32, width))(h), 0.2)
        return nn.Conv(1, (4, 4), padding="SAME")(h)
