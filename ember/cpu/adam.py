"""Launcher of the fused Adam/AdamW step (``_adam_kernels.py``); imports no numba."""

from __future__ import annotations

import numpy as np

from ember.cpu.compile import load


def adam_step_kernels():
    """``(adam_step, adam_step_amsgrad)``, each updating contiguous 1-D float32 arrays in one
    pass (see ``_adam_kernels.py`` for the arguments), or None while CPU kernels are off (the
    optimizer keeps its NumPy kernel)."""
    kernels = load("adam")
    return None if kernels is None else (kernels.adam_step, kernels.adam_step_amsgrad)


def supports(arrays) -> bool:
    """The loops take C-contiguous float32 NumPy arrays (not subclasses, not CuPy)."""
    return all(
        type(a) is np.ndarray and a.dtype == np.float32 and a.flags.c_contiguous for a in arrays
    )
