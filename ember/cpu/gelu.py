"""Launcher of the fused exact-GELU loop (``_gelu_kernels.py``); imports no numba."""

from __future__ import annotations

import numpy as np

from ember.cpu.compile import load


def gelu_exact_block():
    """``f(x, out, deriv)`` that writes gelu(x) and gelu'(x) for contiguous 1-D float32
    arrays in one pass, or None while CPU kernels are off (the caller keeps NumPy's path)."""
    kernels = load("gelu")
    return None if kernels is None else kernels.gelu_exact


def supports(x) -> bool:
    """The loop takes float32 NumPy arrays (not subclasses, not CuPy)."""
    return type(x) is np.ndarray and x.dtype == np.float32
