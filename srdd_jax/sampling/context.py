"""What a scale attends to besides its own tokens while sampling: one strategy per mask window
(`transformer/masks.py`: 0 own scale, 1 previous scale, None every earlier scale).

Every strategy has the same interface, driven by the sampler's bucket loops:
- `start(previous, bucket_index)`: the loop carry for a size bucket, from the carry the previous
  bucket's loop ended with (None before the first bucket);
- `segments(carry, k)`: the key segments (k_NBHcD, v_NBHcD, valid_Bc) scale k attends to besides
  itself, keys/values stacked over the N blocks;
- `store(carry, k, keys_NBHwD, values_NBHwD)`: the carry after scale k;
- `cache_slots()`: key slots held over all rows (for memory accounting);

- `OwnScale` (``markov``): nothing: each scale attends only to its own tokens; no cache at all.
- `PreviousScale` (``markov_prev``): the previous scale's keys/values, padded to the bucket width.
- `KVCache` (``var``): every earlier scale. Each bucket's loop carries only its own fixed-size
  buffer; the buffers of finished buckets are read in place as separate segments (one softmax over
  all segments), so the cache is never copied or concatenated as a whole.

Shapes: N blocks, B rows (the doubled batch in guided buckets), w the bucket width (padded tokens
of a scale), H heads, D head size. `plan` is the `SamplingPlan` (its arrays traced).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from srdd_jax.sampling.plan import SamplingPlan


@dataclasses.dataclass(frozen=True)
class CacheShape:
    """Sizes of one scale's keys/values, (depth, rows, heads, width, head_dim) in `dtype`, and the
    rows each bucket runs (the doubled batch where it is guided, the batch elsewhere)."""

    depth: int
    heads: int
    head_dim: int
    dtype: jnp.dtype
    bucket_rows: tuple[int, ...]

    def zeros(self, bucket_index: int, width: int) -> jax.Array:
        return jnp.zeros((self.depth, self.bucket_rows[bucket_index], self.heads, width,
                          self.head_dim), self.dtype)


def _first_rows(segment, rows: int):
    """A key segment (k_NBHcD, v_NBHcD, valid_Bc) cut to its first `rows` rows: a bucket that runs
    the conditional rows only reads the conditional half of a doubled scale's keys."""
    keys, values, valid = segment
    if valid.shape[0] == rows:
        return segment
    return keys[:, :rows], values[:, :rows], valid[:rows]


class OwnScale:
    """Window 0 (markov): no context."""

    def __init__(self, shape: CacheShape, plan: SamplingPlan):
        del shape, plan

    def start(self, previous, bucket_index: int):
        return ()

    def segments(self, carry, k) -> list:
        return []

    def store(self, carry, k, keys, values):
        return carry

    def cache_slots(self) -> int:
        return 0


class PreviousScale:
    """Window 1 (markov_prev): the previous scale's keys, values and validity, padded to the
    bucket width (buckets only grow, so the previous bucket's scales always fit)."""

    def __init__(self, shape: CacheShape, plan: SamplingPlan):
        self.shape, self.layout, self.plan = shape, plan.layout, plan

    def start(self, previous, bucket_index: int):
        width = self.layout.buckets[bucket_index].width
        rows = self.shape.bucket_rows[bucket_index]
        if previous is None:
            return (self.shape.zeros(bucket_index, width), self.shape.zeros(bucket_index, width),
                    jnp.zeros((rows, width), bool))
        keys, values, valid = _first_rows(previous, rows)
        extra = width - valid.shape[1]
        pad_kv = ((0, 0), (0, 0), (0, 0), (0, extra), (0, 0))
        return (jnp.pad(keys, pad_kv), jnp.pad(values, pad_kv),
                jnp.pad(valid, ((0, 0), (0, extra))))

    def segments(self, carry, k) -> list:
        return [carry]

    def store(self, carry, k, keys, values):
        rows, width = keys.shape[1], keys.shape[3]
        return keys, values, jnp.broadcast_to(self.plan.valid_Kw[k, :width], (rows, width))

    def cache_slots(self) -> int:
        return max(self.shape.bucket_rows) * self.layout.max_width


class KVCache:
    """Unbounded window (var): every earlier scale's keys/values, one buffer per bucket. A bucket's
    buffer holds its scales' tokens, then the last scale's padding: scale k writes `width` keys at
    its offset and the next scale overwrites the padding."""

    def __init__(self, shape: CacheShape, plan: SamplingPlan):
        lay = plan.layout
        self.shape, self.layout, self.plan = shape, lay, plan
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
            rows = previous[0].shape[1]
            valid = jnp.broadcast_to(jnp.arange(width) < filled, (rows, width))
            self.finished.append((previous[0], previous[1], valid))
        self.bucket_index = bucket_index
        width = self.widths[bucket_index]
        return self.shape.zeros(bucket_index, width), self.shape.zeros(bucket_index, width)

    def segments(self, carry, k) -> list:
        width = self.widths[self.bucket_index]
        rows = carry[0].shape[1]
        valid = jnp.arange(width) < self.plan.begins_K[k] - self.first[self.bucket_index]
        return [_first_rows(segment, rows) for segment in self.finished] + [
            (carry[0], carry[1], jnp.broadcast_to(valid, (rows, width)))]

    def store(self, carry, k, keys, values):
        offset = self.plan.begins_K[k] - self.first[self.bucket_index]
        return (jax.lax.dynamic_update_slice_in_dim(carry[0], keys, offset, axis=3),
                jax.lax.dynamic_update_slice_in_dim(carry[1], values, offset, axis=3))

    def cache_slots(self) -> int:
        return sum(rows * width for rows, width in zip(self.shape.bucket_rows, self.widths))


STRATEGIES = {0: OwnScale, 1: PreviousScale, None: KVCache}  # by mask window


def for_plan(shape: CacheShape, plan: SamplingPlan):
    """The context strategy of the plan's mask."""
    if plan.mask.window not in STRATEGIES:
        raise ValueError(f"mask {plan.mask.name!r} has window {plan.mask.window}: the sampler has "
                         f"contexts for windows {sorted(STRATEGIES, key=str)} only (add one in "
                         "sampling/context.py)")
    return STRATEGIES[plan.mask.window](shape, plan)
