"""PyTorch VAR state dicts -> Flax parameter trees (pure numpy; no torch needed).

Works on any mapping `name -> array-like with .shape` (numpy arrays, or zero-stride
`np.broadcast_to` stand-ins for shape-only checks). Layout rules: conv (O, I, kh, kw) ->
(kh, kw, I, O); Linear (out, in) -> (in, out); Embedding unchanged; GroupNorm weight -> scale.
Recomputable buffers (`lvl_1L`, `attn_bias_for_masking`, `zero_k_bias`, `ema_vocab_hit_SV`) are
skipped. Every other key must land on a parameter of the right shape, and every parameter must be
filled, else `CheckpointMismatchError` names the keys.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from srdd_jax import models
from srdd_jax.tokenizer.spec import TokenizerSpec
from srdd_jax.transformer.spec import TransformerSpec

StateDict = Mapping[str, Any]

SKIPPED_VAR_BUFFERS = re.compile(r"^(lvl_1L|attn_bias_for_masking|blocks\.\d+\.attn\.zero_k_bias)$")
SKIPPED_VAE_BUFFERS = re.compile(r"^quantize\.ema_vocab_hit_SV$")


class CheckpointMismatchError(ValueError):
    """The checkpoint does not fit the model it describes (missing/unknown/mis-shaped keys)."""


# ------------------------------------------------------------------------------------ leaf layouts
def linear(w):
    return np.transpose(w)


def conv_kernel(w):
    return np.transpose(w, (2, 3, 1, 0))


def keep(w):
    return w


def last_two_axes(w):
    return np.reshape(w, w.shape[-2:])


def flat(w):
    return np.reshape(w, (-1,))


# ------------------------------------------------------------------------------- config inference
def _require(sd: StateDict, key: str, what: str):
    if key not in sd:
        raise CheckpointMismatchError(
            f"this does not look like a {what} state dict: key {key!r} is missing "
            f"(first keys: {sorted(sd)[:5]}). Pass the right file (--vae for vae_ch*.pth, --var "
            "for var_d*.pth)."
        )
    return sd[key]


def _indices(sd: StateDict, pattern: str) -> list[int]:
    regex = re.compile(pattern)
    return sorted({int(m.group(1)) for k in sd if (m := regex.match(k))})


def infer_tokenizer_config(sd: StateDict) -> dict:
    """Tokenizer architecture from a VQVAE state dict's key names and shapes."""
    conv_in = _require(sd, "encoder.conv_in.weight", "VAR tokenizer (VQVAE)")
    ch = conv_in.shape[0]
    levels = _indices(sd, r"^encoder\.down\.(\d+)\.")
    ch_mult = tuple(
        _require(sd, f"encoder.down.{lvl}.block.0.conv1.weight", "VAR tokenizer").shape[0] // ch
        for lvl in levels
    )
    if any(k.startswith("quantize.quant_resi.qresi_ls.") for k in sd):
        share = len(_indices(sd, r"^quantize\.quant_resi\.qresi_ls\.(\d+)\."))
    elif any(k.startswith("quantize.quant_resi.qresi.") for k in sd):
        share = 1
    else:
        share = 0
    return dict(
        vocab_size=_require(sd, "quantize.embedding.weight", "VAR tokenizer").shape[0],
        z_channels=_require(sd, "quant_conv.weight", "VAR tokenizer").shape[0],
        ch=ch,
        ch_mult=ch_mult,
        num_res_blocks=len(_indices(sd, r"^encoder\.down\.0\.block\.(\d+)\.")),
        share_quant_resi=share,
        using_sa=any(k.startswith(f"encoder.down.{levels[-1]}.attn.") for k in sd),
        using_mid_sa="encoder.mid.attn_1.norm.weight" in sd,
        in_channels=conv_in.shape[1],
    )


def infer_patch_nums(sd: StateDict) -> tuple[int, ...] | None:
    """Scale sides from the `lvl_1L` buffer's values, else from L matching VAR's 256/512 layouts."""
    levels = np.asarray(sd["lvl_1L"]).reshape(-1) if "lvl_1L" in sd else None
    if levels is not None and levels.size and levels.min() == 0:
        counts = np.bincount(levels.astype(np.int64))
        sides = [math.isqrt(int(n)) for n in counts]
        if all(s > 0 and s * s == n for s, n in zip(sides, counts)):
            return tuple(sides)
    length = sd["pos_1LC"].shape[1] if "pos_1LC" in sd else None
    for preset in (models.PATCH_NUMS_256, models.PATCH_NUMS_512):
        if length == sum(p * p for p in preset):
            return preset
    return None


def infer_transformer_config(sd: StateDict) -> dict:
    """Transformer architecture from a VAR state dict. Heads come from `scale_mul_1H11` when the
    checkpoint has it, else VAR's head size 64 is assumed."""
    word = _require(sd, "word_embed.weight", "VAR transformer")
    width = word.shape[0]
    depth = len(_indices(sd, r"^blocks\.(\d+)\."))
    l2 = "blocks.0.attn.scale_mul_1H11" in sd
    heads = sd["blocks.0.attn.scale_mul_1H11"].shape[1] if l2 else max(width // 64, 1)
    return dict(
        depth=depth,
        embed_dim=width,
        num_heads=heads,
        mlp_ratio=_require(sd, "blocks.0.ffn.fc1.weight", "VAR transformer").shape[0] / width,
        num_classes=_require(sd, "class_emb.weight", "VAR transformer").shape[0] - 1,
        attn_l2_norm=l2,
        shared_aln="shared_ada_lin.1.weight" in sd,
    )


def model_spec_from_checkpoints(vae_sd: StateDict | None = None, var_sd: StateDict | None = None,
                                  patch_nums=None, **transformer_overrides):
    """A `models.ModelSpec` from one or both state dicts (VAR-d16's defaults where they say
    nothing).

    patch_nums: taken from the VAR checkpoint when not given (VAR's 256 px layout for a tokenizer
    alone). Vocabulary and latent width must agree between the two files.
    """
    tokenizer = TokenizerSpec()
    transformer = {}
    if vae_sd is not None:
        tokenizer = dataclasses.replace(tokenizer, **infer_tokenizer_config(vae_sd))
    if var_sd is not None:
        transformer.update(infer_transformer_config(var_sd))
        z_channels = var_sd["word_embed.weight"].shape[1]
        vocab = _require(var_sd, "head.weight", "VAR transformer").shape[0]
        if vae_sd is not None and (z_channels, vocab) != (tokenizer.z_channels, tokenizer.vocab_size):
            raise CheckpointMismatchError(
                f"the VAR checkpoint expects a tokenizer with z_channels={z_channels}, "
                f"vocab_size={vocab}, but the VAE has z_channels={tokenizer.z_channels}, "
                f"vocab_size={tokenizer.vocab_size}: pass the VAE these weights were trained with"
            )
        tokenizer = dataclasses.replace(tokenizer, z_channels=z_channels, vocab_size=vocab)
        if patch_nums is None:
            patch_nums = infer_patch_nums(var_sd)
            if patch_nums is None:
                raise CheckpointMismatchError(
                    "cannot infer patch_nums from the VAR checkpoint (no valid lvl_1L buffer and "
                    "L matches no VAR preset): pass them explicitly, e.g. --patch_nums=1,2,3,4,6,9"
                )
    transformer.update(transformer_overrides)
    return models.ModelSpec(tuple(patch_nums or models.PATCH_NUMS_256), tokenizer=tokenizer,
                            transformer=TransformerSpec(**transformer))


# ---------------------------------------------------------------------------------- key mapping
def _generic_path(torch_key: str) -> tuple[tuple[str, ...], str]:
    """'encoder.down.0.block.1.norm1.weight' -> (('encoder','down_0','block_1','norm1'), 'weight')."""
    parts = torch_key.split(".")
    path: list[str] = []
    for part in parts[:-1]:
        if part.isdigit() and path:
            path[-1] = f"{path[-1]}_{part}"
        else:
            path.append(part)
    return tuple(path), parts[-1]


def tokenizer_rule(key: str, value) -> tuple[tuple[str, ...], Callable] | None:
    """Flax path and layout function for one VQVAE key (None for skipped buffers)."""
    if SKIPPED_VAE_BUFFERS.match(key):
        return None
    if key == "quantize.embedding.weight":
        return ("quantize", "embedding"), keep
    phi = re.match(r"^quantize\.quant_resi\.(?:qresi_ls\.(\d+)|qresi|(\d+))\.(weight|bias)$", key)
    if phi:
        index = int(phi.group(1) or phi.group(2) or 0)
        leaf = "phi_kernel" if phi.group(3) == "weight" else "phi_bias"
        return ("quantize", leaf, index), conv_kernel if leaf == "phi_kernel" else keep
    path, leaf = _generic_path(key)
    if leaf == "bias":
        return path + ("bias",), keep
    if leaf == "weight" and len(value.shape) == 4:
        return path + ("kernel",), conv_kernel
    if leaf == "weight" and len(value.shape) == 1:
        return path + ("scale",), keep
    return path + (leaf,), keep


# Per-block keys land on the stacked `blocks` tree (leading layers axis): the first group is the
# block index.
_VAR_BLOCK_RULES = [
    (r"^blocks\.(\d+)\.attn\.scale_mul_1H11$", ("attn", "scale_mul"), flat),
    (r"^blocks\.(\d+)\.attn\.(q_bias|v_bias)$", ("attn", "{1}"), keep),
    (r"^blocks\.(\d+)\.attn\.mat_qkv\.weight$", ("attn", "mat_qkv", "kernel"), linear),
    (r"^blocks\.(\d+)\.attn\.proj\.(weight|bias)$", ("attn", "proj", "{p}"), None),
    (r"^blocks\.(\d+)\.ffn\.(fc1|fc2)\.(weight|bias)$", ("ffn", "{1}", "{p}"), None),
    (r"^blocks\.(\d+)\.ada_lin\.1\.(weight|bias)$", ("ada_lin", "{p}"), None),
    (r"^blocks\.(\d+)\.ada_gss$", ("ada_gss",), last_two_axes),
]
_VAR_RULES = [
    (r"^pos_start$", ("pos_start",), last_two_axes),
    (r"^pos_1LC$", ("pos_embed",), last_two_axes),
    (r"^word_embed\.(weight|bias)$", ("word_embed", "{p}"), None),
    (r"^class_emb\.weight$", ("class_emb", "embedding"), keep),
    (r"^lvl_embed\.weight$", ("lvl_embed", "embedding"), keep),
    (r"^shared_ada_lin\.1\.(weight|bias)$", ("shared_ada_lin", "{p}"), None),
    (r"^head_nm\.ada_lin\.1\.(weight|bias)$", ("head_ada_lin", "{p}"), None),
    (r"^head\.(weight|bias)$", ("head", "{p}"), None),
]


def transformer_rule(key: str, value) -> tuple[tuple, Callable] | None:
    """Flax path and layout function for one VAR key (None for skipped buffers). A block's key
    maps to ('blocks', ..., block index): one slice of the stacked parameter."""
    del value
    if SKIPPED_VAR_BUFFERS.match(key):
        return None
    for rules, prefix in ((_VAR_BLOCK_RULES, ("blocks",)), (_VAR_RULES, ())):
        for pattern, template, layout in rules:
            match = re.match(pattern, key)
            if not match:
                continue
            groups = match.groups()
            leaf_kind = groups[-1] if groups and groups[-1] in ("weight", "bias") else None
            path = prefix + tuple(
                part.format(*groups, p={"weight": "kernel", "bias": "bias"}.get(leaf_kind, ""))
                for part in template
            )
            if layout is None:
                layout = linear if leaf_kind == "weight" else keep
            return (path + (int(groups[0]),) if prefix else path), layout
    return ("<unknown>", key), keep


# ------------------------------------------------------------------------------------ conversion
def _flatten(tree: Mapping, prefix=()) -> dict[tuple[str, ...], Any]:
    flat_tree = {}
    for name, value in tree.items():
        if isinstance(value, Mapping):
            flat_tree.update(_flatten(value, prefix + (name,)))
        else:
            flat_tree[prefix + (name,)] = value
    return flat_tree


def _unflatten(flat_tree: Mapping[tuple[str, ...], Any]) -> dict:
    tree: dict = {}
    for path, value in flat_tree.items():
        node = tree
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = value
    return tree


def _float32(array: np.ndarray) -> np.ndarray:
    return array if array.dtype == np.float32 else array.astype(np.float32)


def _stack(slices: list[np.ndarray]) -> np.ndarray:
    """np.stack, except that equal constant zero-stride stand-ins (shape-only checks) stack to
    a zero-stride stand-in, so checking a d30 manifest allocates nothing."""
    first = slices[0]
    if all(s.strides == (0,) * s.ndim for s in slices):
        value = first.flat[0] if first.size else np.float32(0)
        if all(not s.size or s.flat[0] == value for s in slices):
            return np.broadcast_to(value, (len(slices),) + first.shape)
    return np.stack(slices)


def _key_for_index(index: int, key: str, wanted: int) -> str:
    """The checkpoint key of slice `wanted` of a stacked parameter, from slice `index`'s `key`."""
    return re.sub(rf"\.{index}\.", f".{wanted}.", key, count=1)


def convert(sd: StateDict, rule: Callable, expected_params: Mapping, what: str) -> dict:
    """Maps every key of `sd` with `rule` onto `expected_params` (a tree of shapes or arrays).

    Returns the Flax parameter tree (numpy float32). Raises CheckpointMismatchError listing unknown
    keys, parameters left unfilled, and shape mismatches (torch shape -> expected Flax shape).
    """
    expected = {path: tuple(getattr(v, "shape", v)) for path, v in _flatten(expected_params).items()}
    converted, stacked, source = {}, {}, {}
    unknown, mismatched, bad_paths = [], [], set()
    for key, value in sd.items():
        mapped = rule(key, value)
        if mapped is None:
            continue
        path, layout = mapped
        if isinstance(path[-1], int):  # one slice of a stacked parameter (blocks, Phi convs)
            array = layout(value if isinstance(value, np.ndarray) else np.asarray(value))
            stacked.setdefault(path[:-1], {})[path[-1]] = _float32(array)
            source.setdefault(path[:-1], {})[path[-1]] = key
            continue
        if path not in expected:
            unknown.append(key)
            continue
        array = layout(np.asarray(value) if not isinstance(value, np.ndarray) else value)
        if tuple(array.shape) != expected[path]:
            mismatched.append(f"{key} {tuple(value.shape)} -> {'/'.join(path)} expects "
                              f"{expected[path]}")
            bad_paths.add(path)
            continue
        converted[path] = _float32(array)
    for path, pieces in stacked.items():
        if path not in expected:
            unknown.extend(source[path].values())
            continue
        count = expected[path][0]
        absent = [i for i in range(count) if i not in pieces]
        extra = [i for i in pieces if i >= count]
        shapes = {pieces[i].shape for i in pieces}
        if absent or extra or len(shapes) != 1 or (count,) + shapes.pop() != expected[path]:
            example = next(iter(source[path].items()))
            named = [_key_for_index(*example, i) for i in absent]
            mismatched.append(
                f"{'/'.join(path)} expects {expected[path]} stacked from {count} slices, got "
                f"slices {sorted(pieces)} of shapes {sorted({pieces[i].shape for i in pieces})}"
                + (f"; missing keys: {named}" if named else "")
                + (f"; extra keys: {[source[path][i] for i in extra]}" if extra else ""))
            bad_paths.add(path)
        else:
            converted[path] = _stack([pieces[i] for i in range(count)])
    missing = sorted("/".join(p) for p in expected if p not in converted and p not in bad_paths)
    problems = []
    if unknown:
        problems.append(f"unknown keys (no matching parameter): {sorted(unknown)}")
    if mismatched:
        problems.append("mis-shaped keys: " + "; ".join(mismatched))
    if missing:
        problems.append(f"parameters with no key in the checkpoint: {missing}")
    if problems:
        raise CheckpointMismatchError(f"{what} checkpoint does not fit the model:\n  "
                                      + "\n  ".join(problems))
    return _unflatten(converted)
