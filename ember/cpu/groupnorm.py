"""Launcher of the fused group-norm row loops (``_groupnorm_kernels.py``); imports no numba."""

from __future__ import annotations

from ember.cpu.compile import float32_numpy, load


def group_kernels():
    """``(forward, backward)`` loops over blocks of (sample, group) rows of a C-contiguous
    float32 (N * G, C / G * L) array, or None while CPU kernels are off (the caller keeps its
    composite path). See ``_groupnorm_kernels``."""
    kernels = load("groupnorm")
    if kernels is None:
        return None
    return kernels.group_norm_forward, kernels.group_norm_backward


def supports(*arrays) -> bool:
    """Every array a float32 NumPy array (not a subclass, not CuPy); None counts as supported
    (an absent weight or bias)."""
    return float32_numpy(*(a for a in arrays if a is not None))
