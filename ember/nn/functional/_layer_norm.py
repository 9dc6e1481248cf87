"""The fused layer norm Function: NumPy row blocks with the backward's sums as products, and the
CUDA kernel on CuPy arrays (the composite in tests/nn/norm_composites.py is the oracle)."""

from __future__ import annotations

import math

import numpy as np

from ember.autograd.function import Function
from ember.autograd.grad_mode import state
from ember.cpu import layernorm as cpu_ln
from ember.cuda import layernorm as cuda_ln
from ember.cuda.compile import kernels_enabled
from ember.nn.functional._norm_common import (
    _cast,
    _norm_backward_graph,
    _rowdot,
    col_op,
    eps_of,
)
from ember.ops.parallel import run_blocks
from ember.ops.pointwise import quiet, to_float32
from ember.tensor.backend import get_array_module
from ember.tensor.tensor import Tensor


class LayerNormFn(Function):
    """y = (x - mean) * rstd * w + b over the trailing ``d`` elements of each row."""

    def __init__(self, normalized_shape: tuple, eps: float):
        self.normalized_shape, self.eps = normalized_shape, eps
        self.d = math.prod(normalized_shape)

    def name(self) -> str:
        return "NativeLayerNormBackward"

    def forward(self, x, weight, bias):
        xp = get_array_module(x)
        self.fused = xp is not np and kernels_enabled()  # ember/cuda/layernorm.cu on CuPy
        if self.fused and (got := cuda_ln.layer_norm_rows(x, weight, bias, self.d, self.eps)):
            self.save_for_backward(x, weight, None, got[1], got[2])
            return got[0]
        self.fused = False
        x2 = to_float32(x).reshape(-1, self.d)
        wd = x2.dtype
        self.w_dtype = None if weight is None else weight.dtype
        self.b_dtype = None if bias is None else bias.dtype
        if xp is np and wd == np.float32 and x2.size:
            with quiet():
                out, xhat, mean, rstd = _ln_forward_np(
                    x2,
                    None if weight is None else _cast(weight, wd).reshape(-1),
                    None if bias is None else _cast(bias, wd).reshape(-1),
                    self.eps,
                )
            # xhat is None when the output is xhat (no weight, no bias) or the fused loops
            # ran (their backward recomputes xhat from x, mean and rstd)
            self.save_for_backward(x, weight, xhat, mean, rstd)
            return _cast(out.reshape(x.shape), x.dtype)
        with quiet():
            mean = xp.einsum("ij->i", x2)
            mean /= self.d
            xhat = x2 - mean[:, None]
            rstd = _rowdot(xp, xhat, xhat)
            rstd /= self.d
            rstd += eps_of(self.eps, wd)
            xp.sqrt(rstd, out=rstd)
            xp.reciprocal(rstd, out=rstd)
            xhat *= rstd[:, None]
            if weight is None and bias is None:
                # the output is xhat itself: backward recomputes xhat from x, mean and rstd
                self.save_for_backward(x, None, None, mean, rstd)
                return _cast(xhat.reshape(x.shape), x.dtype)
            out = xhat * _cast(weight, wd).reshape(-1) if weight is not None else xhat + 0
            if bias is not None:
                out += _cast(bias, wd).reshape(-1)
        self.save_for_backward(x, weight, xhat, None, rstd)
        return _cast(out.reshape(x.shape), x.dtype)

    def backward(self, g):
        x, w, xhat, mean, rstd = self.saved_tensors
        if state.enabled:  # create_graph: the same formula, recorded
            k = len(self.normalized_shape)
            axes = tuple(range(x.data.ndim - k, x.data.ndim))
            ns = self.normalized_shape
            return _norm_backward_graph(
                g, x, w, axes, ns, ns, self.eps, None, self.needs_input_grad
            )
        xp = get_array_module(x.data)
        need_x, need_w, need_b = self.needs_input_grad
        if self.fused and kernels_enabled():
            w_arr = None if w is None else w.data
            got = cuda_ln.layer_norm_rows_backward(
                g.data, x.data, w_arr, mean.data, rstd.data, self.d, self.needs_input_grad
            )
            return tuple(None if a is None else Tensor(a) for a in got)
        g2 = to_float32(g.data).reshape(-1, self.d)
        rstd = rstd.data
        if xp is np and g2.dtype == np.float32 and rstd.dtype == np.float32 and g2.size:
            with quiet():
                dx, dw, db = _ln_backward_np(
                    np.ascontiguousarray(g2),
                    to_float32(x.data).reshape(-1, self.d),
                    None if xhat is None else xhat.data,
                    None if mean is None else mean.data,
                    rstd,
                    None if w is None else _cast(w.data, np.float32).reshape(-1),
                    need_x,
                    need_w,
                    need_b,
                )
            return (
                None if dx is None else Tensor(_cast(dx.reshape(x.data.shape), x.data.dtype)),
                None
                if dw is None
                else Tensor(_cast(dw, self.w_dtype).reshape(self.normalized_shape)),
                None
                if db is None
                else Tensor(_cast(db, self.b_dtype).reshape(self.normalized_shape)),
            )
        with quiet():
            if xhat is None:
                xhat = to_float32(x.data).reshape(-1, self.d) - mean.data[:, None]
                xhat *= rstd[:, None]
            else:
                xhat = xhat.data
            dx = dw = db = None
            if need_w:
                dw = Tensor(
                    _cast(xp.einsum("ij,ij->j", g2, xhat), self.w_dtype).reshape(
                        self.normalized_shape
                    )
                )
            if need_b:
                db = Tensor(
                    _cast(xp.einsum("ij->j", g2), self.b_dtype).reshape(self.normalized_shape)
                )
            if need_x:
                dxhat = g2 * _cast(w.data, g2.dtype).reshape(-1) if w is not None else g2
                s1 = xp.einsum("ij->i", dxhat)
                s1 /= self.d
                s2 = _rowdot(xp, dxhat, xhat)
                s2 /= -self.d
                out = xhat * s2[:, None]
                out += dxhat
                out -= s1[:, None]
                out *= rstd[:, None]
                dx = Tensor(_cast(out.reshape(x.data.shape), x.data.dtype))
        return dx, dw, db


# The NumPy float32 path: row sums as matrix-vector products (BLAS: 3x faster than a NumPy
# reduction over short rows) and the backward's two row sums from one product:
# sum(dxhat) = g @ w and sum(dxhat * xhat) = (g * xhat) @ w, with g * xhat also giving dw.
# Written over row blocks of at most _LN_BLOCK elements (1 MB) on the CPU threads
# (ember.ops.parallel): an array up to that size is one block on the calling thread (the
# GPT's (2048, 128): splitting it measured slower, 0.86 vs 0.74 ms f+b), a larger one keeps
# its temporaries in cache and shares the blocks: (4096, 512) f+b 6.9 -> 3.9 ms, (16384, 128)
# 7.5 -> 4.8 ms, where one block of everything spilled every pass to memory.
LN_THREADS = None  # the default thread count
_LN_BLOCK = 1 << 18


def _ln_rows(m: int, d: int) -> int:
    return max(1, min(m, _LN_BLOCK // max(d, 1)))


def _ln_forward_np(x2, w, b, eps):
    """(out, xhat or None, mean, rstd) of a float32 (m, d) array; xhat is None without weight
    and bias (out is xhat) and after ember/cpu's loop (its backward recomputes xhat)."""
    m, d = x2.shape
    out = np.empty((m, d), np.float32)
    mean, rstd = np.empty(m, np.float32), np.empty(m, np.float32)
    e = np.float32(eps)
    fused = cpu_ln.row_kernels()
    if fused is not None:  # ember/cpu: a row at a time, ~1.6x faster than the blocks below
        x2 = np.ascontiguousarray(x2)
        wv = np.ones(d, np.float32) if w is None else np.ascontiguousarray(w)
        bv = np.zeros(d, np.float32) if b is None else np.ascontiguousarray(b)
        run_blocks(
            lambda lo, hi: fused[0](x2, wv, bv, e, out, mean, rstd, lo, hi),
            m, _ln_rows(m, d), LN_THREADS,
        )  # fmt: skip
        return out, None, mean, rstd
    affine = w is not None or b is not None
    xhat = np.empty_like(x2) if affine else out
    ones = np.ones(d, np.float32)

    def kernel(lo, hi):
        xb, hb = x2[lo:hi], xhat[lo:hi]
        mu = mean[lo:hi]
        np.matmul(xb, ones, out=mu)
        mu /= d
        np.subtract(xb, mu[:, None], out=hb)
        r = rstd[lo:hi]
        r[...] = _rowdot(np, hb, hb)
        r /= d
        r += e
        np.sqrt(r, out=r)
        np.reciprocal(r, out=r)
        hb *= r[:, None]
        if w is not None:
            ob = out[lo:hi]
            col_op(np.multiply, hb, w, ob)
            if b is not None:
                col_op(np.add, ob, b, ob)
        elif b is not None:
            col_op(np.add, hb, b, out[lo:hi])

    run_blocks(kernel, m, _ln_rows(m, d), LN_THREADS)
    return out, (xhat if affine else None), mean, rstd


def _ln_backward_np(g2, x2, xhat, mean, rstd, w, need_x, need_w, need_b):
    """(dx, dw, db) of the float32 layer norm from g2, xhat (or x2 and mean) and rstd.
    dw and db are summed per row block, then over the blocks."""
    fused = cpu_ln.row_kernels()
    if fused is not None and mean is not None:  # ember/cpu (mean is saved by its forward)
        return _ln_backward_fused(fused[1], g2, x2, mean, rstd, w, need_x, need_w, need_b)
    m, d = g2.shape
    rows = _ln_rows(m, d)
    nblocks = -(-m // rows)
    dwp = np.empty((nblocks, d), np.float32) if need_w else None
    dbp = np.empty((nblocks, d), np.float32) if need_b else None
    dx = np.empty_like(g2) if need_x else None
    ones_m = np.ones(rows, np.float32)
    wv = np.ones(d, np.float32) if w is None else w

    def kernel(lo, hi):
        i = lo // rows
        gb, r = g2[lo:hi], rstd[lo:hi]
        if xhat is None:
            hb = np.subtract(x2[lo:hi], mean[lo:hi, None])
            hb *= r[:, None]
        else:
            hb = xhat[lo:hi]
        if need_b:
            np.matmul(ones_m[: hi - lo], gb, out=dbp[i])
        if not (need_w or need_x):
            return
        prod = gb * hb
        if need_w:
            np.matmul(ones_m[: hi - lo], prod, out=dwp[i])
        if not need_x:
            return
        s1 = gb @ wv  # sum(dxhat)
        s1 /= d
        s2 = prod @ wv  # sum(dxhat * xhat)
        s2 /= -d
        np.multiply(hb, s2[:, None], out=prod)
        prod -= s1[:, None]
        ob = dx[lo:hi]
        if w is None:
            np.add(prod, gb, out=ob)
        else:
            col_op(np.multiply, gb, w, ob)
            ob += prod
        ob *= r[:, None]

    run_blocks(kernel, m, rows, LN_THREADS)
    return (dx, None if dwp is None else dwp.sum(axis=0), None if dbp is None else dbp.sum(axis=0))


def _ln_backward_fused(kernel, g2, x2, mean, rstd, w, need_x, need_w, need_b):
    """(dx, dw, db) from ember/cpu's row loop, over the same row blocks as the NumPy path."""
    m, d = g2.shape
    rows = _ln_rows(m, d)
    nblocks = -(-m // rows)
    x2 = np.ascontiguousarray(x2)
    wv = np.ones(d, np.float32) if w is None else np.ascontiguousarray(w)
    dx = np.empty_like(g2) if need_x else np.empty((1, d), np.float32)
    dwp = np.zeros((nblocks, d) if need_w else (1, d), np.float64)
    dbp = np.zeros((nblocks, d) if need_b else (1, d), np.float64)

    def block(lo, hi):
        i = lo // rows
        dw_i, db_i = dwp[i if need_w else 0], dbp[i if need_b else 0]
        kernel(g2, x2, mean, rstd, wv, dx, dw_i, db_i, need_x, need_w, need_b, lo, hi)

    run_blocks(block, m, rows, LN_THREADS)
    return (
        dx if need_x else None,
        dwp.sum(axis=0).astype(np.float32) if need_w else None,
        dbp.sum(axis=0).astype(np.float32) if need_b else None,
    )
