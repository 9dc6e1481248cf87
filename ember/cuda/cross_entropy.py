"""Launchers for cross_entropy.cu: llm.c-style fused classifier loss over (rows, C) logits.

Class-index targets, optional label smoothing, ignored rows as a per-row 0/1 scale. Class
weights and probability targets stay on the composite (ember.nn.functional._cross_entropy's
CrossEntropy, the oracle). The forward keeps the fp32 log-sum-exp per row; the backward
re-reads the logits, so no probability matrix is ever stored.
"""

from __future__ import annotations

import numpy as np

from ember.cuda import compile as C

SOURCE = "cross_entropy.cu"
_TYPES = ("float", "__half", "__nv_bfloat16")
NAMES = tuple(f"cross_entropy_{d}<{t}>" for d in ("forward", "backward") for t in _TYPES)
_MAX_GRID = 65535 * 4


def supports(logits, weight=None, prob_target: bool = False) -> bool:
    """A kernel handles these logits: 2-D, a kernel dtype, no class weights or soft targets."""
    return (
        weight is None
        and not prob_target
        and logits.ndim == 2
        and logits.size > 0
        and logits.shape[1] < 2**31
        and logits.shape[0] < 2**31
        and C.ctype(logits.dtype) is not None
    )


def _f32(cp, arr):
    """A contiguous fp32 device copy of ``arr`` (host or device), or the null pointer."""
    return C.NULL if arr is None else C.contiguous(cp.asarray(arr, dtype=np.float32))


def cross_entropy_forward(logits, target, rowscale=None, smoothing: float = 0.0):
    """(per-row loss in fp32, per-row log-sum-exp in fp32). ``target``: int64 class indices
    already in range; ``rowscale``: per-row factor (0 for ignored rows) or None."""
    cp = C.cupy_module()
    x = C.contiguous(logits)
    rows, cols = x.shape
    y = C.contiguous(cp.asarray(target, dtype=np.int64))
    loss = cp.empty(rows, dtype=np.float32)
    lse = cp.empty(rows, dtype=np.float32)
    kernel = C.function(SOURCE, NAMES, f"cross_entropy_forward<{C.ctype(x.dtype)}>")
    args = (x, y, _f32(cp, rowscale), loss, lse, np.int32(rows), np.int32(cols))
    kernel((min(rows, _MAX_GRID),), (C.row_threads(cols, 8),), (*args, np.float32(smoothing)))
    return loss, lse


def cross_entropy_backward(logits, target, lse, dloss, rowscale=None, smoothing: float = 0.0):
    """The logits' gradient, in their dtype. ``dloss``: per-row (rows,) or a 0-d scalar (the
    mean's division already applied), host or device."""
    cp = C.cupy_module()
    x = C.contiguous(logits)
    rows, cols = x.shape
    y = C.contiguous(cp.asarray(target, dtype=np.int64))
    d = _f32(cp, dloss).reshape(-1)
    if d.size not in (1, rows):
        raise ValueError(f"cross_entropy_backward: dloss of {d.size} values for {rows} rows")
    stride = 1 if d.size == rows and rows != 1 else 0
    dx = cp.empty_like(x)
    kernel = C.function(SOURCE, NAMES, f"cross_entropy_backward<{C.ctype(x.dtype)}>")
    args = (x, y, _f32(cp, rowscale), _f32(cp, lse), d, np.int32(stride), dx)
    args += (np.int32(rows), np.int32(cols), np.float32(smoothing))
    kernel((min(rows, _MAX_GRID),), (C.row_threads(cols, 8),), args)
    return dx
