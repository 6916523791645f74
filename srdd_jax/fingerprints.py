"""Integrity fingerprints of array trees: a 64-bit checksum, the shape, the dtype and the number of
non-finite values of every array, recorded when a checkpoint is saved and compared after it loads.

The checksum of an array whose bits, as uint32 words w_i at flat row-major word position i, hash
to h_i = fmix32(w_i XOR fmix32(i * 0x9E3779B9 + 1)) (fmix32: MurmurHash3's bijective finaliser)
is the pair (sum h_i, sum h_i * (2i + 1)) mod 2^32. Integer sums do not depend on the order of
reduction, so the value is the same for any sharding, any number of processes, and for an array
read in pieces. Any change of one word changes the first sum; the two together miss a random
corruption with probability about 2^-64. It is a check against damage, not against tampering.

Two ways to compute it, with equal results:
- arrays held on the host (numpy, memory maps, jax arrays on CPU that this process holds whole)
  are cut into flat pieces of a few fixed sizes and summed on a CPU device: a handful of compiled
  programs for any tree, and memory maps stay on disk;
- arrays on accelerators, or spread over several processes, are summed where they live by one
  program per shape, dtype and sharding (compiled once per run; a collective on multi-process
  meshes, so every process must call `tree_fingerprint`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

_GOLDEN = np.uint32(0x9E3779B9)
PIECE_SIZES = (1 << 20, 1 << 16, 1 << 12)  # elements per host piece, largest first


# ------------------------------------------------------------------------------- the checksum
def _fmix32(h: jax.Array) -> jax.Array:
    """MurmurHash3's 32-bit finaliser (a bijection of uint32)."""
    h = h ^ (h >> 16)
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def _as_words(x: jax.Array) -> jax.Array:
    """The bits of x as uint32 words: shape x.shape + (words per element,)."""
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)[..., None]
    width = x.dtype.itemsize
    if width >= 4:
        words = jax.lax.bitcast_convert_type(x, jnp.uint32)
        return words if width > 4 else words[..., None]
    unsigned = {1: jnp.uint8, 2: jnp.uint16}[width]
    return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)[..., None]


def _reduce(x: jax.Array, element_index: jax.Array, valid: jax.Array):
    """(sum h, sum h (2i+1), non-finite count) over the elements of x where `valid`; element
    (flat) indices are given, words are numbered element_index * words + word."""
    words = _as_words(x)
    per_element = words.shape[-1]
    position = (element_index[..., None] * np.uint32(per_element)
                + jax.lax.broadcasted_iota(jnp.uint32, words.shape, words.ndim - 1))
    hashed = jnp.where(valid[..., None], _fmix32(words ^ _fmix32(position * _GOLDEN + np.uint32(1))),
                       np.uint32(0))
    first = jnp.sum(hashed, dtype=jnp.uint32)
    second = jnp.sum(hashed * (position * np.uint32(2) + np.uint32(1)), dtype=jnp.uint32)
    if jnp.issubdtype(x.dtype, jnp.inexact):
        nonfinite = jnp.sum(valid & ~jnp.isfinite(x), dtype=jnp.int32)
    else:
        nonfinite = jnp.zeros((), jnp.int32)
    return first, second, nonfinite


def _whole_sums(x: jax.Array):
    """_reduce over a whole n-d array in place (any sharding: no reshape, no communication but
    the final sums)."""
    index = jnp.zeros(x.shape, jnp.uint32)
    stride = np.uint32(1)
    for axis in reversed(range(x.ndim)):
        index = index + jax.lax.broadcasted_iota(jnp.uint32, x.shape, axis) * stride
        stride = stride * np.uint32(x.shape[axis])
    return _reduce(x, index, jnp.ones(x.shape, bool))


def _piece_sums(piece: jax.Array, start, count):
    """_reduce over a flat piece whose first element is element `start` of its array; only the
    first `count` elements are the array's (the rest is padding)."""
    iota = jax.lax.iota(jnp.uint32, piece.shape[0])
    return _reduce(piece, jnp.asarray(start, jnp.uint32) + iota,
                   iota < jnp.asarray(count, jnp.uint32))


@functools.cache
def _whole_sums_fn(out_sharding):
    """_whole_sums jitted, results placed by out_sharding (replicated over a multi-process mesh,
    so every process reads them)."""
    return jax.jit(_whole_sums, out_shardings=out_sharding)


@functools.cache
def _piece_sums_fn():
    return jax.jit(_piece_sums)


@functools.cache
def _host_device():
    """Where host arrays are hashed: a CPU device (the default device if JAX has no CPU
    backend, e.g. JAX_PLATFORMS=tpu)."""
    try:
        return jax.local_devices(backend="cpu")[0]
    except RuntimeError:
        return jax.local_devices()[0]


def _pieces(flat: np.ndarray):
    """(piece, start, count): `flat` cut into pieces of PIECE_SIZES, largest first; the last
    piece is zero-padded to the smallest size."""
    start, total = 0, flat.size
    for size in PIECE_SIZES:
        while total - start >= size or (size == PIECE_SIZES[-1] and start < total):
            piece = flat[start:start + size]
            count = piece.size
            if count < size:
                piece = np.concatenate([piece, np.zeros(size - count, piece.dtype)])
            yield piece, start, count
            start += size


def _host_sums(array: np.ndarray) -> tuple[int, int, int]:
    """The sums of a host array, over its pieces (read before the next array's, which bounds
    the memory in flight to one array)."""
    device = _host_device()
    return _combine(jax.device_get([
        _piece_sums_fn()(jax.device_put(piece, device), np.uint32(start % 2**32), count)
        for piece, start, count in _pieces(np.asarray(array).reshape(-1))]))


def _combine(sums: list) -> tuple[int, int, int]:
    first = sum(int(s[0]) for s in sums) % 2**32
    second = sum(int(s[1]) for s in sums) % 2**32
    return first, second, sum(int(s[2]) for s in sums)


# ------------------------------------------------------------------------------------- trees
def _on_host(leaf) -> bool:
    """Whether the array's bytes are on this host, whole (numpy, or a CPU jax array)."""
    if not isinstance(leaf, jax.Array):
        return True
    return leaf.is_fully_addressable and all(d.platform == "cpu" for d in leaf.sharding.device_set)


def _out_sharding(leaf: jax.Array):
    """Where the sums of a device array go: replicated over its mesh (None: as jit decides)."""
    sharding = leaf.sharding
    return NamedSharding(sharding.mesh, PartitionSpec()) if isinstance(sharding, NamedSharding) else None


def _name(path) -> str:
    return jax.tree_util.keystr(path, simple=True, separator="/")


def tree_fingerprint(tree) -> dict:
    """{'path': {'shape', 'dtype', 'checksum', 'nonfinite'}} for every array of `tree`, keyed by
    its path with '/' between keys (e.g. 'transformer/blocks_0/ffn/fc1/kernel').

    A collective when the tree holds arrays spread over several processes: call it on every
    process.
    """
    record, on_devices = {}, []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if _on_host(leaf):
            record[_name(path)] = _entry(leaf, *_host_sums(leaf))
        else:  # dispatched now, read below
            on_devices.append((path, leaf, _whole_sums_fn(_out_sharding(leaf))(leaf)))
    for (path, leaf, _), sums in zip(on_devices, jax.device_get([p[2] for p in on_devices])):
        record[_name(path)] = _entry(leaf, *(int(v) for v in sums))
    return {key: record[key] for key in sorted(record)}


def _entry(array, first, second, nonfinite) -> dict:
    return {"shape": list(np.shape(array)), "dtype": str(np.dtype(array.dtype)),
            "checksum": f"{first:08x}{second:08x}", "nonfinite": nonfinite}


# -------------------------------------------------------------------------------- comparison
def mismatches(recorded: dict, found: dict) -> list[str]:
    """What differs between a recorded fingerprint and one computed after loading: one line per
    array (missing, unexpected, other shape/dtype, other checksum, non-finite values)."""
    problems = [f"{key}: missing (recorded {_describe(entry)})" for key, entry in recorded.items()
                if key not in found]
    problems += [f"{key}: not in the record" for key in found if key not in recorded]
    for key in recorded.keys() & found.keys():
        want, got = recorded[key], found[key]
        if (want["shape"], want["dtype"]) != (got["shape"], got["dtype"]):
            problems.append(f"{key}: {_describe(got)}, recorded {_describe(want)}")
        elif want["checksum"] != got["checksum"]:
            problems.append(f"{key}: checksum {got['checksum']}, recorded {want['checksum']}"
                            + (f" ({got['nonfinite']} non-finite values)" if got["nonfinite"] else ""))
    return sorted(problems)


def nonfinite_arrays(fingerprint: dict) -> list[str]:
    """Paths of the arrays that hold NaN or infinite values."""
    return [key for key, entry in fingerprint.items() if entry["nonfinite"]]


def _describe(entry: dict) -> str:
    return f"{entry['dtype']}{tuple(entry['shape'])}"


def summary(problems: Iterable[str], limit: int = 3) -> str:
    """The first `limit` problems on one line, with the count of the rest."""
    problems = list(problems)
    shown = "; ".join(problems[:limit])
    return shown + (f"; and {len(problems) - limit} more" if len(problems) > limit else "")
