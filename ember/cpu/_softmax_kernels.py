"""softmax and log_softmax over the rows of a float32 (m, n) array, forward and backward, a row
at a time: the row's max, exp and sum, then the normalised row, in a few passes over data that
stays in L1, where NumPy spends a pass over the whole block on each ufunc and broadcast.

Row sums are ``_rows``'s (reassociated; the exp polynomial is not: its rounding trick needs the
order). exp is ``_exp``'s inlined polynomial (``exp_neg``, within ~1 ulp; its argument ``x -
max`` is never positive), so the loops vectorise: libm's expf is a scalar call.

NaN: the max ignores NaN (``llvm.maxnum``, which vectorises where a compare-and-select does
not), but a NaN in a row still makes every output of that row NaN through the row's sum, as
NumPy's NaN max does; a row of -inf (fully masked) gives NaN, as in NumPy and torch.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from ember.cpu._exp import exp_neg
from ember.cpu._rows import row_dot, row_sum
from ember.cpu.compile import JIT_OPTIONS, jit

_NEG_INF = np.float32(-np.inf)


@intrinsic
def _maxnum(typingctx, a, b):
    """max of two float32, the one that is not NaN if one is (LLVM's ``maxnum``)."""
    sig = types.float32(types.float32, types.float32)

    def codegen(context, builder, signature, args):
        t = args[0].type
        fn = builder.module.declare_intrinsic("llvm.maxnum", [t], ir.FunctionType(t, [t, t]))
        return builder.call(fn, args)

    return sig, codegen


@jit(**JIT_OPTIONS)
def _row_max(a):
    """max(a) over a float32 row, NaN ignored (-inf for a row of NaN); 6x faster than
    ``if v > m`` here, which LLVM does not vectorise."""
    m = _NEG_INF
    for j in range(a.size):
        m = _maxnum(m, a[j])
    return m


@jit(inline="always", **JIT_OPTIONS)
def _exp_shifted(row, m, o):
    """o = exp(row - m), for m = max(row); returns sum(o)."""
    for j in range(row.size):
        o[j] = exp_neg(row[j] - m)
    return row_sum(o)


@jit("void(float32[:, ::1], float32[:, ::1], int64, int64)", **JIT_OPTIONS)
def softmax_forward(x, out, lo, hi):
    """Rows lo..hi: out = exp(x - max) / sum(exp(x - max))."""
    for i in range(lo, hi):
        row, o = x[i], out[i]
        s = _exp_shifted(row, _row_max(row), o)
        for j in range(row.size):
            o[j] = o[j] / s


@jit("void(float32[:, ::1], float32[:, ::1], int64, int64)", **JIT_OPTIONS)
def log_softmax_forward(x, out, lo, hi):
    """Rows lo..hi: out = (x - max) - log(sum(exp(x - max))) (``out`` holds the exps first)."""
    for i in range(lo, hi):
        row, o = x[i], out[i]
        m = _row_max(row)
        lse = np.log(_exp_shifted(row, m, o))
        for j in range(row.size):
            o[j] = (row[j] - m) - lse


@jit("void(float32[:, ::1], float32[:, ::1], float32[:, ::1], int64, int64)", **JIT_OPTIONS)
def softmax_backward(g, y, out, lo, hi):
    """Rows lo..hi: out = g y - y sum(g y), y the softmax."""
    for i in range(lo, hi):
        gr, yr, o = g[i], y[i], out[i]
        s = row_dot(gr, yr)
        for j in range(yr.size):
            o[j] = gr[j] * yr[j] - yr[j] * s


@jit("void(float32[:, ::1], float32[:, ::1], float32[:, ::1], int64, int64)", **JIT_OPTIONS)
def log_softmax_backward(g, y, out, lo, hi):
    """Rows lo..hi: out = g - exp(y) sum(g), y the log_softmax (never positive)."""
    for i in range(lo, hi):
        gr, yr, o = g[i], y[i], out[i]
        s = row_sum(gr)
        for j in range(yr.size):
            o[j] = gr[j] - exp_neg(yr[j]) * s
