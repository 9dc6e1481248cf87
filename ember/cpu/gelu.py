"""Launcher of the fused exact-GELU loops (``_gelu_kernels.py``); imports no numba."""

from __future__ import annotations

from ember.cpu.compile import float32_numpy, load


def gelu_exact():
    """``(f(x, out), grad(g, x, out))`` over contiguous 1-D float32 arrays: gelu(x) and
    g gelu'(x) in one pass each, or None while CPU kernels are off (the caller keeps NumPy's
    path)."""
    kernels = load("gelu")
    return None if kernels is None else (kernels.gelu_exact, kernels.gelu_exact_grad)


supports = float32_numpy  # the loops take float32 NumPy arrays
