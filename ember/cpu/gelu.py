"""Launcher of the fused exact-GELU loops (``_gelu_kernels.py``); imports no numba."""

from __future__ import annotations

import numpy as np

from ember.cpu.compile import load


def gelu_exact():
    """``(f(x, out), grad(g, x, out))`` over contiguous 1-D float32 arrays: gelu(x) and
    g gelu'(x) in one pass each, or None while CPU kernels are off (the caller keeps NumPy's
    path)."""
    kernels = load("gelu")
    return None if kernels is None else (kernels.gelu_exact, kernels.gelu_exact_grad)


def supports(*arrays) -> bool:
    """The loops take float32 NumPy arrays (not subclasses, not CuPy)."""
    return all(type(x) is np.ndarray and x.dtype == np.float32 for x in arrays)
