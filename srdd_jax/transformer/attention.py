"""Softmax attention kernels: the exact XLA path and the fused cuDNN path.

- ``xla``: einsum + softmax in float32, written out here; it runs everywhere and is the reference
  (fp32 parity with PyTorch is checked on it).
- ``cudnn``: `jax.nn.dot_product_attention(implementation="cudnn")`, a fused flash-attention kernel
  on NVIDIA GPUs for bfloat16/float16 inputs. It never materialises the (q, k) weights.
- ``auto``: cudnn where it applies (GPU backend, 16-bit compute, head size a multiple of 8 up to
  128, and shapes cuDNN accepts), xla elsewhere (CPU, TPU, float32).

Callers split attention per query scale over the key range that scale may see (see
`transformer.masks`), so no path ever builds an L x L matrix.

Shapes: B batch, q queries, k keys, H heads, D head size. Queries, keys and values are heads-major
(B, H, q/k, D); outputs are (B, q, H, D), ready for the output projection.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from absl import logging

IMPLEMENTATIONS = ("auto", "xla", "cudnn")
_FUSED_DTYPES = (jnp.bfloat16, jnp.float16)
_warned = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        logging.warning(message)


def validate_implementation(name: str) -> str:
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"model.transformer.attention={name!r}: choose one of "
                         f"{', '.join(IMPLEMENTATIONS)}")
    return name


def fused_supported(dtype, head_dim: int) -> bool:
    """Whether cuDNN's fused attention takes these inputs on this platform."""
    return (jax.default_backend() == "gpu" and jnp.dtype(dtype) in map(jnp.dtype, _FUSED_DTYPES)
            and head_dim % 8 == 0 and head_dim <= 128)


def resolve(name: str, dtype, head_dim: int) -> str:
    """What the model passes to `attend`: 'xla' where the fused kernel cannot apply, else the
    requested name ('auto' keeps its per-call fallback); 'cudnn' where it cannot is an error."""
    validate_implementation(name)
    if name == "auto":
        return "auto" if fused_supported(dtype, head_dim) else "xla"
    if name == "cudnn" and not fused_supported(dtype, head_dim):
        raise ValueError(
            f"model.transformer.attention='cudnn' needs an NVIDIA GPU backend (found "
            f"{jax.default_backend()!r}), dtype bfloat16 or float16 (got {jnp.dtype(dtype).name}) "
            f"and a head size that is a multiple of 8 up to 128 (got {head_dim}): use 'auto'")
    return name


def attend(q_BHqD, k_BHkD, v_BHkD, softmax_scale: float, implementation: str = "xla",
           key_lengths_B=None) -> jax.Array:
    """Softmax attention of every query over keys [0, key_lengths) (all keys when None).

    Inputs are heads-major, (B, H, q, D) and (B, H, k, D): the layout the XLA path reads without
    copies. implementation: 'xla', 'cudnn', or 'auto' (cudnn where `fused_supported`, and the xla
    path when cuDNN refuses these shapes while tracing). Returns (B, q, H, D) in the values' dtype.
    """
    if implementation == "auto":
        if fused_supported(q_BHqD.dtype, q_BHqD.shape[-1]):
            try:
                return attend(q_BHqD, k_BHkD, v_BHkD, softmax_scale, "cudnn", key_lengths_B)
            except (NotImplementedError, RuntimeError, ValueError) as err:
                _warn_once(f"cuDNN fused attention refused q {q_BHqD.shape}, k {k_BHkD.shape} "
                           f"({err}); using the XLA path for them")
        implementation = "xla"
    if implementation == "cudnn":
        lengths = None if key_lengths_B is None else key_lengths_B.astype(jnp.int32)
        q, k, v = (jnp.swapaxes(x, 1, 2) for x in (q_BHqD, k_BHkD, v_BHkD))
        return jax.nn.dot_product_attention(q, k, v, scale=softmax_scale,
                                            key_value_seq_lengths=lengths,
                                            implementation="cudnn")
    valid_Bk = None
    if key_lengths_B is not None:
        valid_Bk = jnp.arange(k_BHkD.shape[2])[None] < key_lengths_B[:, None]
    return attend_segments(q_BHqD, [(k_BHkD, v_BHkD, valid_Bk)], softmax_scale)


def attend_segments(q_BHqD, segments, softmax_scale: float) -> jax.Array:
    """The XLA path: softmax attention over keys in one or more segments, never concatenated.

    One softmax across all segments: float32 logits per segment, one running max, exp, and the
    value products summed and divided by the softmax denominator once at the end. A KV cache is
    read where it lies instead of being copied next to the new keys. Masked keys get an additive
    -inf bias (a select on the logits keeps XLA on CPU from fusing the exp into the value product,
    about 3x slower at 256 tokens), and the normalisation after the value product saves a pass
    over the (B, H, q, k) weights. Every query must see at least one valid key.

    Args:
      q_BHqD: queries (B, H, q, D).
      segments: sequence of (k_BHkD, v_BHkD, valid_Bk), one per key segment (k may differ);
        valid is (B, k) bool, or None when every key is valid.
      softmax_scale: multiplies the logits.
    Returns:
      (B, q, H, D) in the dtype of the values.
    """
    logits = []
    for k, _, valid in segments:
        lg = jnp.einsum("bhqd,bhkd->bhqk", q_BHqD, k).astype(jnp.float32) * softmax_scale
        if valid is not None:
            lg = lg + jnp.where(valid, 0.0, -jnp.inf).astype(jnp.float32)[:, None, None, :]
        logits.append(lg)
    peak_BHq1 = functools.reduce(jnp.maximum, [jnp.max(lg, axis=-1, keepdims=True)
                                               for lg in logits])
    total_BHq1 = 0.0
    out_BHqD = 0.0
    for lg, (_, v, _) in zip(logits, segments):
        weights = jnp.exp(lg - peak_BHq1)
        total_BHq1 = total_BHq1 + jnp.sum(weights, axis=-1, keepdims=True)
        out_BHqD = out_BHqD + jnp.einsum("bhqk,bhkd->bhqd", weights.astype(v.dtype), v,
                                         preferred_element_type=jnp.float32)
    # Transposed once at the end: a value product that writes (B, q, H, D) directly is ~3x slower.
    out_BqHD = jnp.transpose(out_BHqD / total_BHq1, (0, 2, 1, 3))
    return out_BqHD.astype(segments[0][1].dtype)
