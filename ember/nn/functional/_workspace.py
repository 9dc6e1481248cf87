"""A small pool of large scratch arrays (NumPy only), recycled by size and dtype.

Arrays past glibc's mmap threshold (32 MiB at most) are fresh mappings every time: each 4 KiB
page faults and is zeroed by the kernel on first touch, which costs about as much as filling
the array once more. Convolution's column buffers are that large and recur with the same sizes
every step, so they come from here. CuPy keeps its own memory pool and is not pooled.

Only code that knows an array is dead gives it back (a kernel's temporary, or saved columns
when autograd releases the node that saved them).
"""

from __future__ import annotations

import numpy as np

MIN_BYTES = 1 << 22  # smaller arrays are recycled well enough by malloc
LIMIT_BYTES = 1 << 29  # never keep more than this much idle memory
PER_SIZE = 4

_free: dict = {}
_idle = [0]


def take(xp, shape: tuple, dtype):
    """An uninitialised C-contiguous array of ``shape`` (recycled when one is idle)."""
    if xp is not np:
        return xp.empty(shape, dtype=dtype)
    dtype = np.dtype(dtype)
    size = 1
    for s in shape:
        size *= s
    stack = _free.get((size, dtype))
    if stack:
        flat = stack.pop()
        _idle[0] -= flat.nbytes
    else:
        flat = np.empty(size, dtype=dtype)
    return flat.reshape(shape)


def give(arr) -> None:
    """Return an array obtained from :func:`take` (or any view of it) that is no longer used."""
    if type(arr) is not np.ndarray:
        return
    root = arr
    while isinstance(root.base, np.ndarray):
        root = root.base
    if (
        root.ndim != 1
        or root.base is not None
        or not root.flags.c_contiguous
        or not root.flags.writeable
        or root.nbytes < MIN_BYTES
    ):
        return
    stack = _free.setdefault((root.size, root.dtype), [])
    if len(stack) >= PER_SIZE or _idle[0] + root.nbytes > LIMIT_BYTES:
        return
    if any(a is root for a in stack):
        return
    stack.append(root)
    _idle[0] += root.nbytes


def clear() -> None:
    """Drop every idle array (frees the memory)."""
    _free.clear()
    _idle[0] = 0
