"""Launcher of the fused batch-norm channel loops (``_batchnorm_kernels.py``); imports no numba."""

from __future__ import annotations

from ember.cpu.compile import float32_numpy, load


def channel_kernels():
    """``(forward, backward)`` channel-block loops for C-contiguous float32 (N, C, L) arrays, or
    None while CPU kernels are off (the caller keeps NumPy's path). See ``_batchnorm_kernels``."""
    kernels = load("batchnorm")
    if kernels is None:
        return None
    return kernels.batch_norm_forward, kernels.batch_norm_backward


supports = float32_numpy  # the loops take float32 NumPy arrays
