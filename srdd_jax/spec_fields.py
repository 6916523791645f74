"""Reading plain dicts into frozen spec dataclasses (layer 0: every spec module uses it).

`from_dict(spec_cls, raw, where)` builds a spec from a dict (a config section's `to_dict()`, a
model directory's JSON): lists become tuples where the field is a tuple, nested spec fields are
read recursively, a missing field takes its default, and an unknown one is a ValueError naming it
(`where` is the config path, e.g. "config.training").
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping


def from_dict(spec_cls, raw: Mapping, where: str):
    raw = dict(raw)
    fields = {f.name: f for f in dataclasses.fields(spec_cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ValueError(f"{where} has unknown fields {unknown}: the fields are {sorted(fields)}")
    hints = typing.get_type_hints(spec_cls)
    values = {}
    for name, value in raw.items():
        kind = hints[name]
        nested = _spec_class(kind)
        if nested is not None and isinstance(value, Mapping):
            value = from_dict(nested, value, f"{where}.{name}")
        elif _is_tuple(kind) and value is not None:
            value = tuple(value)
        values[name] = value
    return spec_cls(**values)


def _spec_class(kind):
    """The dataclass a field holds (directly or as `X | None`), else None."""
    for candidate in (kind, *typing.get_args(kind)):
        if dataclasses.is_dataclass(candidate):
            return candidate
    return None


def _is_tuple(kind) -> bool:
    return any(typing.get_origin(k) is tuple or k is tuple for k in (kind, *typing.get_args(kind)))
