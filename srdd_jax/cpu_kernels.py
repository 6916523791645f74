"""XLA compile options for convolution-heavy programs on the CPU (the tokenizer's decoder).

jaxlib's CPU backend can hand dots and convolutions to the YNNPACK library
(`xla_cpu_experimental_ynn_fusion_type`). On the 2-core x86 development machine it runs the
VQ-VAE decoder about 25 % faster than XLA's default path (same float32 results up to rounding,
~1e-5 on images in [-1, 1]), while the transformer's matmuls run slower with it, so only the
decoder asks for it (see the README's side-by-side benchmark against the official VAR).

The option is experimental and its name may change between jaxlib versions: `conv_options()`
returns it only on the CPU backend and only where this jaxlib accepts it (checked once, by
compiling a tiny convolution with it); elsewhere it returns {} and the program compiles as usual.
`SRDD_CPU_CONV_LIBRARY=xla` turns it off.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
from absl import logging

ENV_VAR = "SRDD_CPU_CONV_LIBRARY"
YNN_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}


@functools.cache
def _accepted(options_items: tuple) -> bool:
    """Whether this jaxlib compiles a small convolution with these options."""
    options = dict(options_items)
    image = jnp.zeros((1, 4, 4, 2), jnp.float32)
    kernel = jnp.zeros((3, 3, 2, 2), jnp.float32)

    def convolve(x, k):
        return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    try:
        jax.jit(convolve).lower(image, kernel).compile(compiler_options=options)
    except Exception as err:  # noqa: BLE001 (any refusal means: compile without the option)
        logging.info("XLA CPU convolution library option refused by this jaxlib (%s); the decoder "
                     "compiles with XLA's default kernels", err)
        return False
    return True


def conv_options() -> dict:
    """Compiler options for `jax.jit(..., compiler_options=...)` of a convolution-heavy program:
    YNNPACK on the CPU backend where available (unless SRDD_CPU_CONV_LIBRARY=xla), else {}."""
    if jax.default_backend() != "cpu" or os.environ.get(ENV_VAR, "ynn").lower() == "xla":
        return {}
    return dict(YNN_OPTIONS) if _accepted(tuple(YNN_OPTIONS.items())) else {}
