"""Integrity fingerprints of array trees: a 64-bit checksum, the shape, the dtype and the number of
non-finite values of every array, recorded when a checkpoint is saved and compared after it loads.

The checksum of an array with elements x_i (bits b_i, flat row-major position i) is the pair of
sums mod 2^32 of h_i = fmix32(b_i XOR g(i)) and of h_i * (2i + 1), where fmix32 is MurmurHash3's
bijective finaliser and g a position mix. Integer sums do not depend on the order of reduction,
so the value is the same for any sharding, on any number of processes, and for a host array read
in chunks. Any change of one element changes the first sum; the two together miss a random
corruption with probability about 2^-64. It is a check against damage, not against tampering.

Device arrays (sharded or not) are summed where they live, in one jitted pass per mesh: every
process must call `tree_fingerprint` on a multi-process tree (it is a collective). Host (numpy)
arrays are summed in chunks, so memory-mapped token caches need not fit in device memory.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

_GOLDEN = np.uint32(0x9E3779B9)
_HOST_CHUNK_BYTES = 1 << 28


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


def _sums(x: jax.Array, offset) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(sum h_i, sum h_i (2i+1), non-finite count) over x, whose first element has flat word
    position `offset` (uint32) in the whole array; inside jit, any sharding."""
    words = _as_words(x)
    position = jnp.asarray(offset, jnp.uint32)
    stride = np.uint32(1)
    for axis in reversed(range(words.ndim)):
        position = position + jax.lax.broadcasted_iota(jnp.uint32, words.shape, axis) * stride
        stride = stride * np.uint32(words.shape[axis])
    hashed = _fmix32(words ^ _fmix32(position * _GOLDEN + np.uint32(1)))
    first = jnp.sum(hashed, dtype=jnp.uint32)
    second = jnp.sum(hashed * (position * np.uint32(2) + np.uint32(1)), dtype=jnp.uint32)
    if jnp.issubdtype(x.dtype, jnp.inexact):
        nonfinite = jnp.sum(~jnp.isfinite(x), dtype=jnp.int32)
    else:
        nonfinite = jnp.zeros((), jnp.int32)
    return first, second, nonfinite


def _entry(array, first, second, nonfinite) -> dict:
    return {"shape": list(np.shape(array)), "dtype": str(np.dtype(array.dtype)),
            "checksum": f"{int(first):08x}{int(second):08x}", "nonfinite": int(nonfinite)}


@functools.cache
def _tree_sums_fn(out_sharding):
    return jax.jit(lambda leaves: [_sums(x, 0) for x in leaves], out_shardings=out_sharding)


@functools.cache
def _chunk_sums_fn():
    return jax.jit(_sums)


def _host_sums(array: np.ndarray) -> tuple[int, int, int]:
    """_sums of a large host array (ndim >= 1), read in chunks of leading-axis rows, so a memory
    map stays on disk."""
    row_bytes = max(array.nbytes // len(array), 1)
    rows = max(_HOST_CHUNK_BYTES // row_bytes, 1)
    words_per_row = _words_per_element(array.dtype) * int(np.prod(array.shape[1:]))
    first = second = nonfinite = 0
    for start in range(0, len(array), rows):
        chunk = np.ascontiguousarray(array[start:start + rows])
        offset = np.uint32((start * words_per_row) % 2**32)
        a, b, c = jax.device_get(_chunk_sums_fn()(chunk, offset))
        first, second, nonfinite = (first + int(a)) % 2**32, (second + int(b)) % 2**32, nonfinite + int(c)
    return first, second, nonfinite


def _words_per_element(dtype) -> int:
    return max(np.dtype(dtype).itemsize // 4, 1)


def _placement(leaf: jax.Array):
    """What a jitted pass over `leaf` must share with the other leaves it is summed with: its
    NamedSharding's mesh, else its set of devices."""
    sharding = leaf.sharding
    return sharding.mesh if isinstance(sharding, NamedSharding) else frozenset(sharding.device_set)


def _name(path) -> str:
    return jax.tree_util.keystr(path, simple=True, separator="/")


def tree_fingerprint(tree) -> dict:
    """{'path': {'shape', 'dtype', 'checksum', 'nonfinite'}} for every array of `tree`, keyed by
    its path with '/' between keys (e.g. 'transformer/blocks_0/ffn/fc1/kernel').

    jax.Arrays are hashed on their devices, one jitted pass per mesh (a collective on
    multi-process meshes: call it on every process); numpy arrays in one pass on the default
    device, those over 256 MiB in chunks.
    """
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    record = {}
    groups: dict = {}
    for path, leaf in flat:
        if isinstance(leaf, jax.Array):
            groups.setdefault(_placement(leaf), []).append((path, leaf))
        elif np.asarray(leaf).nbytes <= _HOST_CHUNK_BYTES:  # one pass with the other host arrays
            groups.setdefault(None, []).append((path, np.asarray(leaf)))
        else:
            record[_name(path)] = _entry(np.asarray(leaf), *_host_sums(np.asarray(leaf)))
    for placement, items in groups.items():  # placement None: host arrays, to the default device
        on_mesh = isinstance(placement, jax.sharding.Mesh)
        out = NamedSharding(placement, PartitionSpec()) if on_mesh else None
        sums = jax.device_get(_tree_sums_fn(out)([leaf for _, leaf in items]))
        for (path, leaf), values in zip(items, sums):
            record[_name(path)] = _entry(leaf, *values)
    return {key: record[key] for key in sorted(record)}


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
