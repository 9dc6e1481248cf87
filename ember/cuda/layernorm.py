"""Launchers for layernorm.cu: layer norm over the last axis with fp32 statistics, forward
(plain and residual-add fused) and backward.

Oracle: ember.nn.functional.normalization's LayerNormFn (xp-generic); for the residual form,
``a + r`` followed by it.
"""

from __future__ import annotations

import numpy as np

from ember.cuda import compile as C

SOURCE = "layernorm.cu"
_TYPES = ("float", "__half", "__nv_bfloat16")
NAMES = tuple(
    f"{k}<{t}>"
    for k in ("layernorm_forward", "residual_layernorm_forward", "layernorm_backward")
    for t in _TYPES
)
_MAX_GRID = 65535 * 4
# 2 * cols fp32 partial sums plus the kernel's static 32-float scratch must fit the 48 KiB a
# block gets without an opt-in: (49152 - 128) // 8 = 6128 (6144 would fail to launch)
MAX_COLS_PARAM_GRAD = 6128


def supports(x, weight, bias) -> bool:
    """A kernel handles x (rows, cols) with these affine parameters (None or x's dtype)."""
    if x.size == 0 or C.ctype(x.dtype) is None or x.shape[-1] >= 2**31:
        return False
    if x.size // x.shape[-1] >= 2**31:  # rows travel as an int
        return False
    return all(p is None or (p.dtype == x.dtype and p.size == x.shape[-1]) for p in (weight, bias))


def _rows(x) -> tuple:
    cols = x.shape[-1]
    return x.size // cols, cols


def _forward(name: str, inputs: tuple, weight, bias, y, eps: float, cols: int):
    cp = C.cupy_module()
    rows = y.size // cols
    mean = cp.empty(rows, dtype=np.float32)
    rstd = cp.empty(rows, dtype=np.float32)
    kernel = C.function(SOURCE, NAMES, f"{name}<{C.ctype(y.dtype)}>")
    args = (*inputs, C.opt(weight), C.opt(bias), y, mean, rstd)
    args += (np.int32(rows), np.int32(cols), np.float32(eps))
    kernel((min(rows, _MAX_GRID),), (C.row_threads(cols, 4, 512),), args)
    return mean, rstd


def layer_norm_forward(x, weight, bias, eps: float):
    """(y, mean, rstd): y in x's dtype, the statistics fp32 per row of the last axis."""
    cp = C.cupy_module()
    x = C.contiguous(x)
    y = cp.empty_like(x)
    w = None if weight is None else C.contiguous(weight)
    b = None if bias is None else C.contiguous(bias)
    mean, rstd = _forward("layernorm_forward", (x,), w, b, y, eps, x.shape[-1])
    return y, mean, rstd


def residual_layer_norm_forward(a, r, weight, bias, eps: float):
    """(s = a + r, layer_norm(s), mean, rstd) in one pass (llm.c's fused residual)."""
    cp = C.cupy_module()
    if a.shape != r.shape or a.dtype != r.dtype:
        raise ValueError(
            f"residual_layer_norm: a {a.shape} {a.dtype} and r {r.shape} {r.dtype} must match"
        )
    a, r = C.contiguous(a), C.contiguous(r)
    s, y = cp.empty_like(a), cp.empty_like(a)
    w = None if weight is None else C.contiguous(weight)
    b = None if bias is None else C.contiguous(bias)
    mean, rstd = _forward("residual_layernorm_forward", (a, r, s), w, b, y, eps, a.shape[-1])
    return s, y, mean, rstd


def layer_norm_backward(g, x, weight, mean, rstd, need_x=True, need_w=True, need_b=True):
    """(dx, dweight, dbias), each None when not needed; dweight / dbias in weight's dtype
    (summed in fp32 across rows). x and g are (rows, cols); mean and rstd fp32 (rows,)."""
    cp = C.cupy_module()
    x = C.contiguous(x)
    g = C.contiguous(C.cast(g, x.dtype))
    rows, cols = _rows(x)
    dx = cp.empty_like(x) if need_x else None
    if weight is None:
        need_w = False
    pdtype = x.dtype if weight is None else weight.dtype
    if (need_w or need_b) and cols > MAX_COLS_PARAM_GRAD:  # too wide for the shared sums
        dx, _, _ = layer_norm_backward(g, x, weight, mean, rstd, need_x, False, False)
        xhat = (C.to_f32(x) - mean[:, None]) * rstd[:, None]
        g32 = C.to_f32(g)
        dw = C.from_f32((g32 * xhat).sum(axis=0), pdtype) if need_w else None
        return dx, dw, C.from_f32(g32.sum(axis=0), pdtype) if need_b else None
    dw = cp.zeros(cols, dtype=np.float32) if need_w else None
    db = cp.zeros(cols, dtype=np.float32) if need_b else None
    smem = 2 * cols * 4 if (need_w or need_b) else 0
    threads = C.row_threads(cols, 4, 512)
    # parameter-gradient blocks each flush 2 * cols atomics: keep their number moderate
    grid = min(rows, 1024 if smem else _MAX_GRID)
    kernel = C.function(SOURCE, NAMES, f"layernorm_backward<{C.ctype(x.dtype)}>")
    w = None if weight is None else C.contiguous(weight)
    args = (g, x, C.opt(w), mean, rstd, C.opt(dx), C.opt(dw), C.opt(db))
    kernel((grid,), (threads,), (*args, np.int32(rows), np.int32(cols)), shared_mem=smem)
    if dw is not None:
        dw = C.from_f32(dw, pdtype)
    if db is not None:
        db = C.from_f32(db, pdtype)
    return dx, dw, db


def layer_norm_rows(x, weight, bias, d: int, eps: float):
    """LayerNormFn's kernel path: x (..., normalized dims of ``d`` elements in all) as rows;
    returns (y shaped like x, mean, rstd) or None when no kernel applies."""
    x2 = x.reshape(-1, d)
    w = None if weight is None else weight.reshape(-1)
    b = None if bias is None else bias.reshape(-1)
    if not supports(x2, w, b):
        return None
    y, mean, rstd = layer_norm_forward(x2, w, b, eps)
    return y.reshape(x.shape), mean, rstd


def layer_norm_rows_backward(g, x, weight, mean, rstd, d: int, needs: tuple):
    """LayerNormFn's kernel backward: (dx shaped like x, dw, db shaped like weight)."""
    w = None if weight is None else weight.reshape(-1)
    dx, dw, db = layer_norm_backward(g.reshape(-1, d), x.reshape(-1, d), w, mean, rstd, *needs)
    pshape = (d,) if weight is None else weight.shape
    return (
        None if dx is None else dx.reshape(x.shape),
        None if dw is None else dw.reshape(pshape),
        None if db is None else db.reshape(pshape),
    )
