"""Launcher of the depthwise conv loops (``_depthwise_kernels.py``); imports no numba."""

from __future__ import annotations

import numpy as np

from ember.cpu.compile import load

_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def conv_kernels():
    """``(forward, grad_input, grad_weight)``, each one loop over a block of image planes
    (see ``_depthwise_kernels.py`` for the arguments), or None while CPU kernels are off
    (the caller keeps its NumPy passes)."""
    kernels = load("depthwise")
    if kernels is None:
        return None
    return kernels.forward, kernels.grad_input, kernels.grad_weight


def supports(*arrays) -> bool:
    """The loops take float32 and float64 NumPy arrays of one dtype (not subclasses, not
    CuPy)."""
    return all(type(a) is np.ndarray and a.dtype in _DTYPES for a in arrays) and (
        len({a.dtype for a in arrays}) == 1
    )
