"""Field-by-field comparison of two config dicts (e.g. the model config recorded with a
checkpoint and the run's)."""

from __future__ import annotations

import json

_ABSENT = object()


def _leaves(tree, prefix: str) -> dict:
    """{'prefix.a.b': value} for every non-dict value of a nested dict ('a.b' without a prefix);
    tuples become lists."""
    tree = json.loads(json.dumps(tree))
    flat = {}

    def walk(node, path):
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, f"{path}.{key}" if path else key)
        else:
            flat[path] = node

    walk(tree, prefix)
    return flat


def differing_fields(recorded: dict, current: dict, prefix: str = "",
                     labels: tuple[str, str] = ("recorded", "now")) -> list[str]:
    """'prefix.a.b: X recorded, Y now' (with `labels`) for each field that differs, sorted by
    name; a field present on one side only shows as 'absent' on the other."""
    old, new = _leaves(recorded, prefix), _leaves(current, prefix)
    lines = []
    for name in sorted(old.keys() | new.keys()):
        before, after = old.get(name, _ABSENT), new.get(name, _ABSENT)
        if before != after:
            lines.append(f"{name}: {_show(before)} {labels[0]}, {_show(after)} {labels[1]}")
    return lines


def _show(value) -> str:
    return "absent" if value is _ABSENT else json.dumps(value)
