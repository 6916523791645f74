"""Returning freed host memory to the operating system.

XLA's compiler and the CPU runtime's temporary buffers are freed through glibc's malloc, which keeps
most of what they freed in its arenas: after compiling the d16 sampler on the CPU a process holds
about 0.5 GB it no longer uses, and after creating the tokenizer's parameters about 0.3 GB, which
then count in the process's resident memory while the model's own buffers (mapped separately) are
added on top. `release_freed()` hands that memory back (glibc's `malloc_trim`); it is called after
each compilation of the sampler and decoder and after parameters are created. Elsewhere (another C
library, another system) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc
        return None


def release_freed() -> bool:
    """Returns freed malloc memory to the system; True where that was possible (glibc)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
