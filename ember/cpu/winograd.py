"""Launcher of the fused Winograd F(2x2, 3x3) transforms (``_winograd_kernels.py``); imports
no numba."""

from __future__ import annotations

import numpy as np

from ember.cpu.compile import load

_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def transform_kernels():
    """``(input_transform, output_transform, grad_transform)``, each one pass over a block of
    images (see ``_winograd_kernels.py`` for the layout and arguments), or None while CPU
    kernels are off (the caller keeps NumPy's passes)."""
    kernels = load("winograd")
    if kernels is None:
        return None
    return kernels.input_transform, kernels.output_transform, kernels.grad_transform


def supports(x) -> bool:
    """The loops take float32 and float64 NumPy arrays (not subclasses, not CuPy)."""
    return type(x) is np.ndarray and x.dtype in _DTYPES
