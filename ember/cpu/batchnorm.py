"""Launcher of the fused batch-norm channel loops (``_batchnorm_kernels.py``); imports no numba."""

from __future__ import annotations

import numpy as np

from ember.cpu.compile import load


def channel_kernels():
    """``(forward, backward)`` channel-block loops for C-contiguous float32 (N, C, L) arrays, or
    None while CPU kernels are off (the caller keeps NumPy's path). See ``_batchnorm_kernels``."""
    kernels = load("batchnorm")
    if kernels is None:
        return None
    return kernels.batch_norm_forward, kernels.batch_norm_backward


def supports(*arrays) -> bool:
    """Every array a float32 NumPy array (not a subclass, not CuPy)."""
    return all(type(a) is np.ndarray and a.dtype == np.float32 for a in arrays)
