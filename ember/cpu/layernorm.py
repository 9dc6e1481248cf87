"""Launcher of the fused layer-norm row loops (``_layernorm_kernels.py``); imports no numba."""

from __future__ import annotations

from ember.cpu.compile import float32_numpy, load


def row_kernels():
    """``(forward, backward)`` row-block loops for C-contiguous float32 (m, d) arrays, or None
    while CPU kernels are off (the caller keeps NumPy's path). See ``_layernorm_kernels``."""
    kernels = load("layernorm")
    if kernels is None:
        return None
    return kernels.layer_norm_forward, kernels.layer_norm_backward


supports = float32_numpy  # the loops take float32 NumPy arrays
