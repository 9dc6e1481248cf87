"""Launcher of the row scatter-add loop (``_index_kernels.py``); imports no numba."""

from __future__ import annotations

import math

import numpy as np

from ember.cpu.compile import load

_FLOATS = (np.float32, np.float64)
_INTS = (np.int32, np.int64)


def supports(out, idx, src) -> bool:
    """A C-contiguous float32/float64 NumPy ``out`` (not a subclass, not CuPy) of at least
    one dimension, ``src`` a NumPy array of the same dtype, integer indices of 32 or 64 bits."""
    return (
        type(out) is np.ndarray
        and type(src) is np.ndarray
        and type(idx) is np.ndarray
        and out.dtype in _FLOATS
        and src.dtype == out.dtype
        and idx.dtype in _INTS
        and out.ndim >= 1
        and out.flags.c_contiguous
    )


def add_rows(out, idx, src) -> bool:
    """``out[idx[k]] += src[k]`` for every k in order (np.add.at's bits), for arrays that
    :func:`supports` accepts; ``idx`` is 1-D, ``src`` of shape ``(idx.size,) + out.shape[1:]``.
    Returns False, having done nothing, while CPU kernels are off (the caller keeps its NumPy
    path). An index outside ``[-n, n)`` raises NumPy's IndexError before anything is written."""
    kernels = load("index")
    if kernels is None:
        return False
    n = out.shape[0]
    cols = math.prod(out.shape[1:])
    rows = out.reshape(n, cols)  # a view: out is C-contiguous
    vals = np.ascontiguousarray(src).reshape(idx.size, cols)
    bad = kernels.add_rows(rows, np.ascontiguousarray(idx.reshape(-1)), vals)
    if bad >= 0:
        raise IndexError(
            f"index {int(idx.reshape(-1)[bad])} is out of bounds for axis 0 with size {n}"
        )
    return True
