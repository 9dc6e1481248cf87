"""Launcher of the fused softmax / log_softmax row loops (``_softmax_kernels.py``); imports no
numba."""

from __future__ import annotations

from ember.cpu.compile import float32_numpy, load


def row_kernels(log: bool):
    """``(forward(x, out, lo, hi), backward(g, y, out, lo, hi))`` over rows lo..hi of
    C-contiguous float32 (m, n) arrays, for log_softmax when ``log`` else softmax; None while CPU
    kernels are off (the caller keeps NumPy's path). See ``_softmax_kernels``."""
    kernels = load("softmax")
    if kernels is None:
        return None
    if log:
        return kernels.log_softmax_forward, kernels.log_softmax_backward
    return kernels.softmax_forward, kernels.softmax_backward


supports = float32_numpy  # the loops take float32 NumPy arrays
