"""VAR's multi-scale residual quantizer: codebook, nearest-code search and the Phi refinement convs.

Phi (the "quant_resi" conv) is phi(h) = (1 - r) h + r conv3x3(h), r = quant_resi. VAR shares K Phi
convs among the scales ("partially shared"; K = share_quant_resi, 1 = fully shared, 0 = one per
scale); scale si uses the Phi whose tick is nearest to si / (S - 1). The K kernels are stored
stacked, (K, 3, 3, C, C), so a traced scale index can pick one.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def phi_count(share_quant_resi: int, num_scales: int) -> int:
    """Number of Phi convs: share_quant_resi, or one per scale when it is 0."""
    return num_scales if share_quant_resi == 0 else share_quant_resi


def phi_index_table(share_quant_resi: int, num_scales: int) -> tuple[int, ...]:
    """Phi index used at each scale, exactly as VAR's PhiPartiallyShared/PhiNonShared pick it.

    The ticks are float64 numpy linspaces and ties go to the first index, so mathematical ties
    (si = 2 and 7 for K = 4, S = 10) are decided by float64 rounding, as in VAR:
    K=4, S=10 gives (0, 0, 1, 1, 1, 2, 2, 3, 3, 3).
    """
    k = phi_count(share_quant_resi, num_scales)
    if k == 1:
        return (0,) * num_scales
    if k == 4:
        ticks = np.linspace(1 / 3 / k, 1 - 1 / 3 / k, k)
    else:
        ticks = np.linspace(1 / 2 / k, 1 - 1 / 2 / k, k)
    denominator = max(num_scales - 1, 1)
    return tuple(int(np.argmin(np.abs(ticks - si / denominator))) for si in range(num_scales))


def nearest_code(z_NC: jax.Array, codebook_VC: jax.Array) -> jax.Array:
    """Index of the nearest code in squared L2, first index on ties. (N, C), (V, C) -> (N,) int32.

    Uses VAR's expansion |z|^2 + |e|^2 - 2 z.e (not (z - e)^2) so that near-ties break the same way.
    """
    highest = jax.lax.Precision.HIGHEST
    z_NC = z_NC.astype(jnp.float32)
    codebook_VC = codebook_VC.astype(jnp.float32)
    dist_NV = (
        jnp.sum(jnp.square(z_NC), axis=1, keepdims=True)
        + jnp.sum(jnp.square(codebook_VC), axis=1)[None, :]
        - 2.0 * jnp.matmul(z_NC, codebook_VC.T, precision=highest)
    )
    return jnp.argmin(dist_NV, axis=1).astype(jnp.int32)


class MultiScaleQuantizer(nn.Module):
    """Holds the codebook `embedding` (V, C) and stacked Phi convs; the scale loop lives in VQVAE."""

    vocab_size: int
    z_channels: int
    num_scales: int
    quant_resi: float = 0.5
    share_quant_resi: int = 4

    def setup(self):
        k = phi_count(self.share_quant_resi, self.num_scales)
        c = self.z_channels
        self.embedding = self.param("embedding", self._codebook_init, (self.vocab_size, c))
        self.phi_kernel = self.param(
            "phi_kernel", nn.initializers.lecun_normal(in_axis=(1, 2, 3), out_axis=4,
                                                       batch_axis=(0,)), (k, 3, 3, c, c)
        )
        self.phi_bias = self.param("phi_bias", nn.initializers.zeros, (k, c))
        self.phi_table = jnp.asarray(phi_index_table(self.share_quant_resi, self.num_scales))

    def _codebook_init(self, key, shape, dtype=jnp.float32):
        """Uniform in +-1/V, VAR's `eini < 0` codebook initialisation."""
        bound = 1.0 / self.vocab_size
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    def lookup(self, idx: jax.Array) -> jax.Array:
        """Codebook rows for any int index array: (...) -> (..., C)."""
        return jnp.take(self.embedding, idx, axis=0)

    def nearest(self, z_NC: jax.Array) -> jax.Array:
        """(N, C) -> (N,) nearest code indices."""
        return nearest_code(z_NC, self.embedding)

    def phi(self, h_BHWC: jax.Array, si) -> jax.Array:
        """Applies scale si's Phi: (1 - r) h + r (conv3x3(h) + b). si may be a traced int."""
        which = self.phi_table[si]
        kernel = self.phi_kernel[which]
        conv = jax.lax.conv_general_dilated(
            h_BHWC,
            kernel.astype(h_BHWC.dtype),
            window_strides=(1, 1),
            padding="SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        ) + self.phi_bias[which]
        r = abs(self.quant_resi)
        return h_BHWC * (1.0 - r) + conv * r

    def __call__(self, h_BHWC: jax.Array) -> jax.Array:
        """Initialisation entry point: touches every parameter."""
        return self.phi(h_BHWC, 0) + self.lookup(jnp.zeros((), jnp.int32))
