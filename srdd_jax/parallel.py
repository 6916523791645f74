"""Device mesh, logical-axis rules and sharding helpers.

Parameters carry logical axis names (see `srdd_jax.transformer.model`); one rules table maps them
to the mesh axes `data` and `fsdp`. Data parallel -> FSDP is a config change: with the default
rules the `embed` axis of every weight is split over `fsdp` and the batch over both axes. A mesh
axis that does not divide a dimension is dropped for that parameter (it stays replicated there),
so small models and odd vocabularies shard without special cases.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp")
BATCH_AXES = ("data", "fsdp")

# logical name -> mesh axis (or None = replicated). Unlisted names are replicated.
DEFAULT_RULES = (
    ("batch", BATCH_AXES),
    ("embed", "fsdp"),
    ("mlp", None),
    ("qkv", None),
    ("joined_heads", None),
    ("heads", None),
    ("adaln", None),
    ("vocab", None),
    ("classes", None),
    ("levels", None),
    ("tokens", None),
    ("latent", None),
    ("layers", None),
)


def make_mesh(data: int = -1, fsdp: int = 1, devices: Sequence | None = None) -> Mesh:
    """A (data, fsdp) mesh over `devices` (default: all). -1 for one axis means 'the rest'."""
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    if data == -1 and fsdp == -1:
        raise ValueError("mesh: at most one of data, fsdp may be -1")
    if data == -1:
        data = n // fsdp if fsdp > 0 else 0
    if fsdp == -1:
        fsdp = n // data if data > 0 else 0
    if data < 1 or fsdp < 1 or data * fsdp != n:
        raise ValueError(
            f"mesh data={data} x fsdp={fsdp} does not use the {n} available devices: choose "
            "sizes whose product is the device count (or -1 for one of them)"
        )
    return Mesh(np.asarray(devices).reshape(data, fsdp), MESH_AXES)


def _fit_to_shape(spec: PartitionSpec, shape: tuple[int, ...], mesh: Mesh) -> PartitionSpec:
    """Drops the mesh axes of `spec` that do not evenly divide the dimension they shard."""
    fitted = []
    for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        names = (axes,) if isinstance(axes, str) else tuple(axes or ())
        size = int(np.prod([mesh.shape[a] for a in names])) if names else 1
        fitted.append(axes if names and dim % size == 0 else None)
    return PartitionSpec(*fitted)


def param_shardings(boxed_params, mesh: Mesh, rules=DEFAULT_RULES):
    """NamedShardings for a boxed (logically partitioned) param tree, abstract or concrete."""
    logical_specs = nn.get_partition_spec(boxed_params)
    shapes = jax.tree.map(lambda x: x.shape, nn.unbox(boxed_params))

    def to_sharding(logical: PartitionSpec, shape):
        mesh_spec = nn.logical_to_mesh_axes(tuple(logical), rules)
        return NamedSharding(mesh, _fit_to_shape(mesh_spec, shape, mesh))

    return jax.tree.map(to_sharding, logical_specs, shapes,
                        is_leaf=lambda x: isinstance(x, PartitionSpec))


def batch_sharding(mesh: Mesh, ndim: int, batch_size: int | None = None) -> NamedSharding:
    """Sharding of an array whose leading axis is the batch (split over data x fsdp)."""
    spec = PartitionSpec(BATCH_AXES, *([None] * (ndim - 1)))
    if batch_size is not None:
        spec = _fit_to_shape(spec, (batch_size,) + (1,) * (ndim - 1), mesh)
    return NamedSharding(mesh, spec)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def to_host(x) -> np.ndarray:
    """The whole of a (global) array as numpy, on every process: an array that spans several
    processes is gathered (a collective: every process must call it)."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def any_process(flag: bool) -> bool:
    """True if `flag` is true on any process (a collective: every process must call it; no-op
    with one process)."""
    if jax.process_count() == 1:
        return bool(flag)
    return bool(np.max(multihost_utils.process_allgather(np.int32(bool(flag)))))


def sync_processes(name: str) -> None:
    """Waits until every process reaches this point (no-op with one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)
