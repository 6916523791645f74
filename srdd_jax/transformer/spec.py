"""The transformer's settings, declared once: `TransformerSpec` (frozen, typed, validated).

Each field carries its kind as metadata (`kind_of`):
- ``identity``:  what the trained weights mean (shape, initialisation, training regularisers);
- ``sampling``:  changes results but may differ from training when sampling (mask, dtype);
- ``execution``: changes how, not what, the model computes (memory, kernels).
A training run resumes only with the same identity and sampling fields; sample, edit and evaluate
accept new sampling and execution fields for a saved model (`modes/model_resolver.py`).
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp

from srdd_jax.transformer import attention, masks

IDENTITY, SAMPLING, EXECUTION = "identity", "sampling", "execution"
KINDS = (IDENTITY, SAMPLING, EXECUTION)
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
REMATS = ("none", "dots", "full")
# Chosen by measurement (README, "Scaling"): the only remat that bounds d16's training memory.
DEFAULT_REMAT = "full"


def setting(default, kind: str = IDENTITY):
    """A spec field with its kind."""
    return dataclasses.field(default=default, metadata={"kind": kind})


def kind_of(field: dataclasses.Field) -> str:
    return field.metadata.get("kind", IDENTITY)


def validate_remat(name: str) -> str:
    if name not in REMATS:
        raise ValueError(f"model.transformer.remat={name!r}: choose one of {', '.join(REMATS)}")
    return name


@dataclasses.dataclass(frozen=True)
class TransformerSpec:
    """VAR-d16's shape by default (`for_depth` gives any depth's). vocab_size and z_channels are
    the tokenizer's (`models.ModelSpec` passes them)."""

    depth: int = setting(16)
    embed_dim: int = setting(1024)
    num_heads: int = setting(16)
    mlp_ratio: float = setting(4.0)
    num_classes: int = setting(1000)
    attn_l2_norm: bool = setting(True)
    shared_aln: bool = setting(False)
    norm_eps: float = setting(1e-6)
    drop_path_rate: float = setting(0.1 * 16 / 24)
    cond_drop_rate: float = setting(0.1)
    mask: str = setting("markov", SAMPLING)
    dtype: str = setting("float32", SAMPLING)
    init_adaln: float = setting(0.5)
    init_adaln_gamma: float = setting(1e-5)
    init_head: float = setting(0.02)
    init_std: float = setting(-1.0)  # <= 0: sqrt(1 / (3 embed_dim)), as VAR
    remat: str = setting(DEFAULT_REMAT, EXECUTION)  # rematerialisation of the blocks in training
    attention: str = setting("auto", EXECUTION)  # the attention kernel: auto, xla or cudnn

    @classmethod
    def for_depth(cls, depth: int = 16, **overrides) -> TransformerSpec:
        """VAR-d{depth}'s shape (width 64*depth, depth heads, drop-path 0.1*depth/24)."""
        return cls(**{**dict(depth=depth, embed_dim=64 * depth, num_heads=depth,
                             drop_path_rate=0.1 * depth / 24), **overrides})

    @property
    def compute_dtype(self):
        return DTYPES[self.dtype]

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def weight_std(self) -> float:
        return self.init_std if self.init_std > 0 else math.sqrt(1.0 / self.embed_dim / 3)

    @property
    def attention_mask(self) -> masks.Mask:
        return masks.get(self.mask)

    def validate(self) -> None:
        """ValueError naming the first bad field and how to fix it."""
        if self.embed_dim % self.num_heads:
            raise ValueError(f"model.transformer.embed_dim={self.embed_dim} is not divisible by "
                             f"num_heads={self.num_heads}")
        if self.depth < 1 or self.num_classes < 1:
            raise ValueError("model.transformer.depth and num_classes must be >= 1")
        if not 0 <= self.cond_drop_rate < 1 or not 0 <= self.drop_path_rate < 1:
            raise ValueError("model.transformer.cond_drop_rate and drop_path_rate must be in [0, 1)")
        masks.get(self.mask)
        if self.dtype not in DTYPES:
            raise ValueError(f"model.transformer.dtype={self.dtype!r}: choose one of {sorted(DTYPES)}")
        validate_remat(self.remat)
        attention.validate_implementation(self.attention)
