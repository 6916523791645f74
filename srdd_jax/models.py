"""Model configuration (one schema for both models), validation, and module builders.

A model config is an `ml_collections.ConfigDict`:

    patch_nums: tuple of scale sides, e.g. (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
    tokenizer_patch_nums: the pyramid the tokenizer was trained on (its Phi per scale); () means
                patch_nums. Set for a scale-distilled student, whose patch_nums are a subset of it.
    class_names: the name of every class label (in label order) of the data the model was
                trained on, for labelled sample grids; () when unknown (converted VAR models).
    tokenizer:  vocab_size, z_channels, ch, ch_mult, num_res_blocks, quant_resi, share_quant_resi,
                using_sa, using_mid_sa, in_channels
    transformer: depth, embed_dim, num_heads, mlp_ratio, num_classes, attn_l2_norm, shared_aln,
                norm_eps, drop_path_rate, cond_drop_rate, mask, dtype, init_adaln,
                init_adaln_gamma, init_head, init_std, and two execution settings that change no
                result: remat (none, dots, full: rematerialisation of the blocks in training) and
                attention (auto, xla, cudnn: the attention kernel)

The transformer's vocab_size and z_channels are the tokenizer's, so they are given once.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from srdd_jax import host_memory, parallel, scales
from srdd_jax.tokenizer.vqvae import VQVAE
from srdd_jax.transformer import attention, masks
from srdd_jax.transformer.model import VAR, validate_remat

PATCH_NUMS_256 = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
PATCH_NUMS_512 = (1, 2, 3, 4, 6, 9, 13, 18, 24, 32)
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
DEFAULT_REMAT = "full"  # chosen by measurement (README, "Scaling"): the only one that bounds d16 memory
# Transformer fields that change how, not what, the model computes (memory, kernels).
EXECUTION_SETTINGS = ("remat", "attention")


def tokenizer_config(**overrides) -> ml_collections.ConfigDict:
    """VAR's released tokenizer (vae_ch160v4096z32) unless overridden."""
    cfg = ml_collections.ConfigDict(dict(
        vocab_size=4096, z_channels=32, ch=160, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2,
        quant_resi=0.5, share_quant_resi=4, using_sa=True, using_mid_sa=True, in_channels=3,
    ))
    cfg.update(overrides)
    return cfg


def transformer_config(depth: int = 16, **overrides) -> ml_collections.ConfigDict:
    """VAR-d{depth}'s shape (width 64*depth, depth heads, drop-path 0.1*depth/24) unless overridden."""
    cfg = ml_collections.ConfigDict(dict(
        depth=depth, embed_dim=64 * depth, num_heads=depth, mlp_ratio=4.0, num_classes=1000,
        attn_l2_norm=True, shared_aln=False, norm_eps=1e-6, drop_path_rate=0.1 * depth / 24,
        cond_drop_rate=0.1, mask="markov", dtype="float32", init_adaln=0.5,
        init_adaln_gamma=1e-5, init_head=0.02, init_std=-1.0, remat=DEFAULT_REMAT,
        attention="auto",
    ))
    cfg.update(overrides)
    return cfg


def model_config(patch_nums=PATCH_NUMS_256, tokenizer=None, transformer=None, tokenizer_patch_nums=(),
                 class_names=()):
    return ml_collections.ConfigDict(dict(
        patch_nums=tuple(patch_nums),
        tokenizer_patch_nums=tuple(tokenizer_patch_nums),
        class_names=tuple(class_names),
        tokenizer=tokenizer if tokenizer is not None else tokenizer_config(),
        transformer=transformer if transformer is not None else transformer_config(),
    ))


def validate(cfg: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the first bad field of a model config and how to fix it."""
    scales.validate_patch_nums(cfg.patch_nums)
    full = tuple(cfg.get("tokenizer_patch_nums") or ())
    if full:
        scales.validate_patch_nums(full)
        if not set(cfg.patch_nums) <= set(full) or cfg.patch_nums[-1] != full[-1]:
            raise ValueError(f"model.patch_nums={tuple(cfg.patch_nums)} must be a subset of "
                             f"model.tokenizer_patch_nums={full} ending with its last scale")
    tok, tr = cfg.tokenizer, cfg.transformer
    levels = len(tok.ch_mult)
    if tok.ch % 32:
        raise ValueError(f"model.tokenizer.ch={tok.ch} must be a multiple of 32 (GroupNorm groups)")
    if not 0 < abs(tok.quant_resi) <= 1:
        raise ValueError(f"model.tokenizer.quant_resi={tok.quant_resi} must be in (0, 1]")
    if tok.share_quant_resi < 0:
        raise ValueError("model.tokenizer.share_quant_resi must be >= 0 (0 = one Phi per scale)")
    if levels < 1 or tok.num_res_blocks < 1 or tok.vocab_size < 2 or tok.z_channels < 1:
        raise ValueError("model.tokenizer needs ch_mult non-empty, num_res_blocks >= 1, "
                         "vocab_size >= 2 and z_channels >= 1")
    if tr.embed_dim % tr.num_heads:
        raise ValueError(f"model.transformer.embed_dim={tr.embed_dim} is not divisible by "
                         f"num_heads={tr.num_heads}")
    if tr.depth < 1 or tr.num_classes < 1:
        raise ValueError("model.transformer.depth and num_classes must be >= 1")
    names = tuple(cfg.get("class_names") or ())
    if names and len(names) != tr.num_classes:
        raise ValueError(f"model.class_names has {len(names)} names for "
                         f"model.transformer.num_classes={tr.num_classes}: give one per class, or ()")
    if not 0 <= tr.cond_drop_rate < 1 or not 0 <= tr.drop_path_rate < 1:
        raise ValueError("model.transformer.cond_drop_rate and drop_path_rate must be in [0, 1)")
    masks.validate_mask(tr.mask)
    if tr.dtype not in DTYPES:
        raise ValueError(f"model.transformer.dtype={tr.dtype!r}: choose one of {sorted(DTYPES)}")
    validate_remat(tr.get("remat", DEFAULT_REMAT))
    attention.validate_implementation(tr.get("attention", "auto"))


def build_tokenizer(cfg: ml_collections.ConfigDict, dtype=jnp.float32) -> VQVAE:
    """The tokenizer for `cfg`, computing in `dtype` (parameters stay float32)."""
    validate(cfg)
    tok = cfg.tokenizer
    return VQVAE(
        vocab_size=tok.vocab_size, z_channels=tok.z_channels, ch=tok.ch,
        ch_mult=tuple(tok.ch_mult), num_res_blocks=tok.num_res_blocks,
        patch_nums=tuple(cfg.patch_nums), quant_resi=tok.quant_resi,
        share_quant_resi=tok.share_quant_resi, using_sa=tok.using_sa,
        using_mid_sa=tok.using_mid_sa, in_channels=tok.in_channels,
        phi_patch_nums=tuple(cfg.get("tokenizer_patch_nums") or ()), dtype=dtype,
    )


def build_transformer(cfg: ml_collections.ConfigDict, **overrides) -> VAR:
    """The transformer for `cfg`; keyword overrides (e.g. mask="var") replace config fields."""
    validate(cfg)
    tr = dict(cfg.transformer.to_dict(), **overrides)
    tr["dtype"] = DTYPES[tr["dtype"]] if isinstance(tr["dtype"], str) else tr["dtype"]
    return VAR(
        patch_nums=tuple(cfg.patch_nums), vocab_size=cfg.tokenizer.vocab_size,
        z_channels=cfg.tokenizer.z_channels, **tr,
    )


def init_image(cfg: ml_collections.ConfigDict) -> jax.Array:
    """A zero image batch (1, H, W, C) of the tokenizer's input size."""
    size = build_tokenizer(cfg).image_size
    return jnp.zeros((1, size, size, cfg.tokenizer.in_channels), jnp.float32)


def parameter_key(rng) -> jax.Array:
    """An 'rbg' key drawn from `rng` (any JAX key), for creating parameters. Every tensor is then
    drawn by one XLA RngBitGenerator op instead of threefry's unrolled rounds, which makes the
    init program compile several times faster (a model has hundreds of parameter tensors)."""
    return jax.random.wrap_key_data(jax.random.bits(rng, (4,), jnp.uint32), impl="rbg")


def create_params(cfg: ml_collections.ConfigDict, rng, which: str):
    """Boxed parameters (with logical-axis metadata) of 'tokenizer' or 'transformer', traced
    (not jitted): call it inside `jax.jit` (with out_shardings) or `jax.eval_shape`. Both models
    make their parameters from the smallest input (one token, one latent pixel), so nothing runs at
    full size."""
    if which == "tokenizer":
        return build_tokenizer(cfg).init(parameter_key(rng), method=VQVAE.create_params)["params"]
    if which == "transformer":
        return build_transformer(cfg).init(parameter_key(rng), jnp.zeros((1,), jnp.int32),
                                           method=VAR.create_params)["params"]
    raise ValueError(f"which must be 'tokenizer' or 'transformer', got {which!r}")


def init_params(cfg: ml_collections.ConfigDict, rng, which: str, mesh=None):
    """Boxed parameters of 'tokenizer' or 'transformer', made by one jitted program. With a
    `parallel.make_mesh` mesh, each parameter is created directly in its sharding (by the
    logical-axis rules), so no device ever holds a whole FSDP-sharded model. Waits for the
    program and hands its freed temporaries back to the system (`host_memory.release_freed`)."""
    make = jax.jit(lambda r: create_params(cfg, r, which), out_shardings=None if mesh is None
                   else boxed_shardings(abstract_params(cfg, which), mesh))
    params = jax.block_until_ready(make(rng))
    host_memory.release_freed()
    return params


def boxed_shardings(boxed, mesh):
    """`parallel.param_shardings` of a boxed tree, boxed the same way (for jit out_shardings)."""
    shardings = parallel.param_shardings(boxed, mesh)

    def box_like(leaf, sharding):
        return leaf.replace_boxed(sharding) if isinstance(leaf, nn.Partitioned) else sharding

    return jax.tree.map(box_like, boxed, shardings,
                        is_leaf=lambda x: isinstance(x, nn.Partitioned))


def abstract_params(cfg: ml_collections.ConfigDict, which: str):
    """Boxed ShapeDtypeStructs of `init_params` (no memory is allocated)."""
    return jax.eval_shape(lambda rng: create_params(cfg, rng, which), jax.random.key(0))
