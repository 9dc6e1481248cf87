"""Launchers for flash_attention.cu: causal attention without the (T, S) matrix (tiles in
shared memory, an online softmax, the log-sum-exp kept per query row for the backward).

Inputs (..., T, d) / (..., S, d) with equal leading dims, d <= 128. Oracles:
``attention.causal_attention`` (GEMMs around the fused softmax) and, on the CPU,
``ember.nn.functional.scaled_dot_product_attention(is_causal=True)``.
"""

from __future__ import annotations

import numpy as np

from ember.cuda import compile as C

SOURCE = "flash_attention.cu"
_TYPES = ("float", "__half", "__nv_bfloat16")
NAMES = tuple(
    f"flash_attn_{k}<{t}>" for k in ("forward", "backward_prep", "backward_dq", "backward_dkdv")
    for t in _TYPES
)  # fmt: skip
DMAX = 128  # flash::DMAX in the kernel
_THREADS = 128  # flash::WARPS warps
_FWD_ROWS = 16  # query rows per forward block (WARPS * FWD_ROWS)
_BWD_ROWS = 8  # rows per backward block (WARPS * BWD_ROWS)
_MAX_GRID_Y = 65535


def supports(q, k, v) -> bool:
    """q (..., T, d), k and v (..., S, d) with the same leading dims and dtype."""
    if q.ndim < 2 or q.ndim != k.ndim or k.shape != v.shape or q.shape[:-2] != k.shape[:-2]:
        return False
    if q.shape[-1] != k.shape[-1] or not 0 < q.shape[-1] <= DMAX:
        return False
    if not (q.dtype == k.dtype == v.dtype) or C.ctype(q.dtype) is None:
        return False
    bh = q.size // (q.shape[-2] * q.shape[-1]) if q.size else 0
    return q.size > 0 and k.size > 0 and 0 < bh <= _MAX_GRID_Y and q.size < 2**31


def _dims(q, k) -> tuple:
    tgt, d = q.shape[-2:]
    return q.size // (tgt * d), tgt, k.shape[-2], d


def flash_attention_forward(q, k, v, scale: float):
    """(out like q, lse fp32 (..., T)): softmax(scale q k^T, causal) v."""
    cp = C.cupy_module()
    q, k, v = C.contiguous(q), C.contiguous(k), C.contiguous(v)
    bh, tgt, src, d = _dims(q, k)
    out = cp.empty_like(q)
    lse = cp.empty(q.shape[:-1], dtype=np.float32)
    fn = C.function(SOURCE, NAMES, f"flash_attn_forward<{C.ctype(q.dtype)}>")
    grid = ((tgt + _FWD_ROWS - 1) // _FWD_ROWS, bh)
    args = (q, k, v, out, lse, np.int32(tgt), np.int32(src), np.int32(d), np.float32(scale))
    fn(grid, (_THREADS,), args)
    return out, lse


def flash_attention_backward(q, k, v, out, lse, dout, scale: float):
    """(dq, dk, dv) from the saved forward (out, lse) and the output gradient."""
    cp = C.cupy_module()
    q, k, v, out = (C.contiguous(a) for a in (q, k, v, out))
    dout = C.contiguous(C.cast(dout, q.dtype))
    bh, tgt, src, d = _dims(q, k)
    t = C.ctype(q.dtype)
    dsum = cp.empty(lse.shape, dtype=np.float32)
    prep = C.function(SOURCE, NAMES, f"flash_attn_backward_prep<{t}>")
    rows = bh * tgt
    prep(
        (C.blocks_for(rows, _THREADS // 32),),
        (_THREADS,),
        (out, dout, dsum, np.int64(rows), np.int32(d)),
    )
    dq, dk, dv = cp.empty_like(q), cp.empty_like(k), cp.empty_like(v)
    tail = (np.int32(tgt), np.int32(src), np.int32(d), np.float32(scale))
    fn = C.function(SOURCE, NAMES, f"flash_attn_backward_dq<{t}>")
    fn(((tgt + _BWD_ROWS - 1) // _BWD_ROWS, bh), (_THREADS,), (q, k, v, dout, lse, dsum, dq, *tail))
    fn = C.function(SOURCE, NAMES, f"flash_attn_backward_dkdv<{t}>")
    grid = ((src + _BWD_ROWS - 1) // _BWD_ROWS, bh)
    fn(grid, (_THREADS,), (q, k, v, dout, lse, dsum, dk, dv, *tail))
    return dq, dk, dv
