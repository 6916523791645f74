"""The transformer's parameter layout before the blocks were scanned, and its migration.

Model directories written before srdd_jax scanned its blocks hold one sub-tree per block
(`blocks_0` ... `blocks_{N-1}`); the model now expects one `blocks` tree whose leaves are stacked on
a leading layers axis. `stack_blocks` converts the first into the second (pure; numpy or jax).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import jax
import numpy as np

_BLOCK_KEY = re.compile(r"^blocks_(\d+)$")


def is_unstacked(transformer_params: Mapping) -> bool:
    """Whether a transformer parameter tree uses the per-block layout (`blocks_0`, ...)."""
    return any(_BLOCK_KEY.match(name) for name in transformer_params)


def stack_blocks(transformer_params: Mapping) -> dict:
    """{'blocks_0': t0, ..., 'blocks_{N-1}': tN, rest} -> {'blocks': stack(t0..tN), rest}.

    Raises ValueError when the block indices are not 0..N-1 or the blocks differ in structure.
    """
    indices = sorted(int(m.group(1)) for name in transformer_params
                     if (m := _BLOCK_KEY.match(name)))
    if indices != list(range(len(indices))):
        raise ValueError(f"per-block parameters blocks_i must be numbered 0..N-1, found {indices}")
    rest = {name: value for name, value in transformer_params.items()
            if not _BLOCK_KEY.match(name)}
    blocks = [transformer_params[f"blocks_{i}"] for i in indices]
    try:
        stacked = jax.tree.map(lambda *layers: np.stack([np.asarray(x) for x in layers]), *blocks)
    except ValueError as err:
        raise ValueError(f"per-block parameters blocks_0..blocks_{len(blocks) - 1} differ in "
                         f"structure and cannot be stacked: {err}") from err
    return {**rest, "blocks": stacked}
