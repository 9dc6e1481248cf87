"""Launchers for softmax.cu: softmax and log_softmax over the last axis, forward and backward.

The oracle is ember.ops.nn_ops' Softmax / LogSoftmax (xp-generic composites).
"""

from __future__ import annotations

import numpy as np

from ember.cuda import compile as C

SOURCE = "softmax.cu"
_TYPES = ("float", "__half", "__nv_bfloat16")
NAMES = tuple(
    f"softmax_{d}<{t}, {log}>"
    for d in ("forward", "backward")
    for t in _TYPES
    for log in ("false", "true")
)
_MAX_GRID = 65535 * 4


def supports(x, dim: int) -> bool:
    """A kernel handles ``x`` along ``dim``: the last axis, a floating kernel dtype, > 0 size,
    rows and columns that fit the kernel's int arguments."""
    return (
        dim == x.ndim - 1
        and x.size > 0
        and x.shape[-1] < 2**31
        and x.size // x.shape[-1] < 2**31
        and C.ctype(x.dtype) is not None
    )


def _launch(direction: str, log: bool, arrays: tuple, out, cols: int) -> None:
    t = C.ctype(out.dtype)
    kernel = C.function(SOURCE, NAMES, f"softmax_{direction}<{t}, {'true' if log else 'false'}>")
    rows = out.size // cols
    threads = C.row_threads(cols, per_thread=8)
    grid = min(rows, _MAX_GRID)
    kernel((grid,), (threads,), (*arrays, out, np.int32(rows), np.int32(cols)))


def softmax_forward(x, log: bool = False):
    """softmax (or log_softmax) of ``x`` along its last axis, in a new array of x's dtype."""
    cp = C.cupy_module()
    x = C.contiguous(x)
    y = cp.empty_like(x)
    _launch("forward", log, (x,), y, x.shape[-1])
    return y


def softmax_backward(y, g, log: bool = False):
    """The input gradient from the saved output ``y`` and the upstream gradient ``g``."""
    cp = C.cupy_module()
    y, g = C.contiguous(y), C.contiguous(C.cast(g, y.dtype))
    dx = cp.empty_like(y)
    _launch("backward", log, (y, g), dx, y.shape[-1])
    return dx
