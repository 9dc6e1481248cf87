"""Launchers for attention.cu: causal attention's fused scale + mask + softmax, and the
attention built on it (two cuBLAS GEMMs around the kernel).

Oracle: ``causal_softmax_composite`` below (xp-generic), which is what
ember.nn.functional.attention computes for ``is_causal=True`` without the fused path.
"""

from __future__ import annotations

import numpy as np

from ember.cuda import compile as C
from ember.tensor.backend import get_array_module

SOURCE = "attention.cu"
_TYPES = ("float", "__half", "__nv_bfloat16")
NAMES = tuple(f"causal_softmax_{d}<{t}>" for d in ("forward", "backward") for t in _TYPES)
_MAX_GRID = 65535 * 4


def supports(scores) -> bool:
    return (
        scores.ndim >= 2
        and scores.size > 0
        and C.ctype(scores.dtype) is not None
        and scores.size // scores.shape[-1] < 2**31
    )


def _launch(direction: str, arrays: tuple, out, scale: float) -> None:
    tgt, src = out.shape[-2:]
    rows = out.size // src
    fn = C.function(SOURCE, NAMES, f"causal_softmax_{direction}<{C.ctype(out.dtype)}>")
    args = (*arrays, out, np.int32(rows), np.int32(tgt), np.int32(src), np.float32(scale))
    fn((min(rows, _MAX_GRID),), (C.row_threads(src, 4, 512),), args)


def causal_softmax_forward(scores, scale: float):
    """softmax(scale * scores) over the last axis with keys j > i (query row i) masked to 0."""
    scores = C.contiguous(scores)
    y = C.cupy_module().empty_like(scores)
    _launch("forward", (scores,), y, scale)
    return y


def causal_softmax_backward(y, g, scale: float):
    """The scores' gradient: scale * y * (g - rowsum(g * y)), 0 where masked."""
    y, g = C.contiguous(y), C.contiguous(C.cast(g, y.dtype))
    dx = C.cupy_module().empty_like(y)
    _launch("backward", (y, g), dx, scale)
    return dx


def causal_softmax_composite(scores, scale: float):
    """The oracle (any xp, float32 math): the same masked, scaled softmax."""
    xp = get_array_module(scores)
    tgt, src = scores.shape[-2:]
    s = scores.astype(np.float32) * np.float32(scale)
    keep = xp.arange(src)[None, :] <= xp.arange(tgt)[:, None]
    s = xp.where(keep, s, -np.inf)
    s -= s.max(axis=-1, keepdims=True)
    e = xp.exp(s)
    return (e / e.sum(axis=-1, keepdims=True)).astype(scores.dtype)


def causal_softmax_backward_composite(y, g, scale: float):
    """The oracle of the backward (float32 math)."""
    y32, g32 = y.astype(np.float32), g.astype(np.float32)
    total = (g32 * y32).sum(axis=-1, keepdims=True)
    return (np.float32(scale) * y32 * (g32 - total)).astype(y.dtype)


def causal_attention(q, k, v, scale: float):
    """(out, probs): softmax(scale * q k^T, causal) @ v with the kernel between two GEMMs."""
    xp = get_array_module(q)
    probs = causal_softmax_forward(xp.matmul(q, xp.swapaxes(k, -1, -2)), scale)
    return xp.matmul(probs, v), probs


def causal_attention_backward(g, q, k, v, probs, scale: float):
    """(dq, dk, dv) of causal_attention from the output gradient and the saved probs."""
    xp = get_array_module(g)
    dv = xp.matmul(xp.swapaxes(probs, -1, -2), g)
    ds = causal_softmax_backward(probs, xp.matmul(g, xp.swapaxes(v, -1, -2)), scale)
    return xp.matmul(ds, k), xp.matmul(xp.swapaxes(ds, -1, -2), q), dv
