"""What a scale attends to besides its own tokens while sampling: one strategy per attention mask.

Every strategy has the same interface, driven by the sampler's bucket loops:
- `start(previous, bucket_index)`: the loop carry for a size bucket, from the carry the previous
  bucket's loop ended with (None before the first bucket);
- `segments(carry, k)`: the key segments (k_NBcHD, v_NBcHD, valid_Bc) scale k attends to besides
  itself, keys/values stacked over the N blocks;
- `store(carry, k, keys_NBwHD, values_NBwHD)`: the carry after scale k;
- `cache_width()`: key slots held per row (for memory accounting).

- `OwnScale` (``markov``): nothing: each scale attends only to its own tokens; no cache at all.
- `PreviousScale` (``markov_prev``): the previous scale's keys/values, padded to the bucket width.
- `KVCache` (``var``): every earlier scale. Each bucket's loop carries only its own fixed-size
  buffer; the buffers of finished buckets are read in place as separate segments (one softmax over
  all segments), so the cache is never copied or concatenated as a whole.

Shapes: N blocks, B rows (the doubled batch under guidance), w the bucket width (padded tokens of
a scale), H heads, D head size. `tables` are the sampler's per-scale tables (traced arrays).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from srdd_jax.sampling.layout import Layout


@dataclasses.dataclass(frozen=True)
class CacheShape:
    """Sizes of one scale's keys/values: (depth, rows, width, heads, head_dim) in `dtype`."""

    depth: int
    rows: int
    heads: int
    head_dim: int
    dtype: jnp.dtype

    def zeros(self, width: int) -> jax.Array:
        return jnp.zeros((self.depth, self.rows, width, self.heads, self.head_dim), self.dtype)


class OwnScale:
    """markov: no context."""

    def __init__(self, shape: CacheShape, lay: Layout, tables: dict):
        del shape, lay, tables

    def start(self, previous, bucket_index: int):
        return ()

    def segments(self, carry, k) -> list:
        return []

    def store(self, carry, k, keys, values):
        return carry

    def cache_width(self) -> int:
        return 0


class PreviousScale:
    """markov_prev: the previous scale's keys, values and validity, padded to the bucket width
    (buckets only grow, so the previous bucket's scales always fit)."""

    def __init__(self, shape: CacheShape, lay: Layout, tables: dict):
        self.shape, self.layout, self.tables = shape, lay, tables

    def start(self, previous, bucket_index: int):
        width = self.layout.buckets[bucket_index].width
        if previous is None:
            return self.shape.zeros(width), self.shape.zeros(width), jnp.zeros(
                (self.shape.rows, width), bool)
        keys, values, valid = previous
        extra = width - valid.shape[1]
        pad_kv = ((0, 0), (0, 0), (0, extra), (0, 0), (0, 0))
        return (jnp.pad(keys, pad_kv), jnp.pad(values, pad_kv),
                jnp.pad(valid, ((0, 0), (0, extra))))

    def segments(self, carry, k) -> list:
        return [carry]

    def store(self, carry, k, keys, values):
        width = keys.shape[2]
        return keys, values, jnp.broadcast_to(self.tables["valid"][k, :width],
                                              (self.shape.rows, width))

    def cache_width(self) -> int:
        return self.layout.max_width


class KVCache:
    """var: every earlier scale's keys/values, one buffer per bucket. A bucket's buffer holds its
    scales' tokens, then the last scale's padding: scale k writes `width` keys at its offset and
    the next scale overwrites the padding."""

    def __init__(self, shape: CacheShape, lay: Layout, tables: dict):
        self.shape, self.layout, self.tables = shape, lay, tables
        self.finished = []  # (k_N, v_N, valid) of the buckets already sampled, in this trace
        begins = lay.begins
        self.widths = [begins[b.scale_ids[-1]] - begins[b.scale_ids[0]] + b.width
                       for b in lay.buckets]
        self.first = [begins[b.scale_ids[0]] for b in lay.buckets]
        self.bucket_index = None

    def start(self, previous, bucket_index: int):
        if previous is not None:  # the previous bucket is complete: keep its filled slots
            last = self.layout.buckets[self.bucket_index].scale_ids[-1]
            filled = (self.layout.begins[last] + self.layout.patch_nums[last] ** 2
                      - self.first[self.bucket_index])
            width = self.widths[self.bucket_index]
            valid = jnp.broadcast_to(jnp.arange(width) < filled, (self.shape.rows, width))
            self.finished.append((previous[0], previous[1], valid))
        self.bucket_index = bucket_index
        width = self.widths[bucket_index]
        return self.shape.zeros(width), self.shape.zeros(width)

    def segments(self, carry, k) -> list:
        width = self.widths[self.bucket_index]
        valid = jnp.arange(width) < self.tables["begins"][k] - self.first[self.bucket_index]
        return self.finished + [(carry[0], carry[1],
                                 jnp.broadcast_to(valid, (self.shape.rows, width)))]

    def store(self, carry, k, keys, values):
        offset = self.tables["begins"][k] - self.first[self.bucket_index]
        return (jax.lax.dynamic_update_slice_in_dim(carry[0], keys, offset, axis=2),
                jax.lax.dynamic_update_slice_in_dim(carry[1], values, offset, axis=2))

    def cache_width(self) -> int:
        return sum(self.widths)


STRATEGIES = {"markov": OwnScale, "markov_prev": PreviousScale, "var": KVCache}
