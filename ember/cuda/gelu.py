"""Launchers for gelu.cu: GELU (tanh approximation) forward and backward, and bias + GELU.

Oracle: ember.ops.activation's Gelu(approximate='tanh') (xp-generic), after ``x + bias``.
"""

from __future__ import annotations

import numpy as np

from ember.cuda import compile as C

SOURCE = "gelu.cu"
_TYPES = ("float", "__half", "__nv_bfloat16")
NAMES = tuple(f"gelu_{d}<{t}>" for d in ("forward", "backward") for t in _TYPES)
_THREADS = 256


def supports(x) -> bool:
    return x.size > 0 and C.ctype(x.dtype) is not None


def _check_bias(x, bias):
    if bias is None:
        return None, 1
    if bias.ndim != 1 or x.ndim == 0 or bias.shape[0] != x.shape[-1] or bias.dtype != x.dtype:
        raise ValueError(
            f"bias_gelu: bias {bias.shape} {bias.dtype} must match the last axis of "
            f"{x.shape} {x.dtype}"
        )
    return C.contiguous(bias), x.shape[-1]


def gelu_forward(x, bias=None):
    """gelu(x + bias) (tanh approximation), bias broadcast over the last axis when given."""
    cp = C.cupy_module()
    x = C.contiguous(x)
    b, cols = _check_bias(x, bias)
    y = cp.empty_like(x)
    kernel = C.function(SOURCE, NAMES, f"gelu_forward<{C.ctype(x.dtype)}>")
    grid = C.blocks_for(x.size, _THREADS * 4)
    kernel((grid,), (_THREADS,), (x, C.opt(b), y, np.int64(x.size), np.int32(cols)))
    return y


def gelu_backward(x, g, bias=None):
    """(dx, dbias): dx = g * gelu'(x + bias); dbias (None without bias) sums dx over every
    axis but the last, in fp32."""
    cp = C.cupy_module()
    x = C.contiguous(x)
    g = C.contiguous(C.cast(g, x.dtype))
    b, cols = _check_bias(x, bias)
    dx = cp.empty_like(x)
    kernel = C.function(SOURCE, NAMES, f"gelu_backward<{C.ctype(x.dtype)}>")
    grid = C.blocks_for(x.size, _THREADS * 4)
    kernel((grid,), (_THREADS,), (x, C.opt(b), g, dx, np.int64(x.size), np.int32(cols)))
    if b is None:
        return dx, None
    db = C.from_f32(C.to_f32(dx).reshape(-1, cols).sum(axis=0), x.dtype)
    return dx, db
