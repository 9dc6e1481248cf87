"""Helpers shared by the fused normalisation Functions (batch, layer, group norm and
SyncBatchNorm): dtype casts, row/channel dot products, and the closed-form backward in Tensor ops
that create_graph records."""

from __future__ import annotations

import numpy as np

from ember.ops.reduction import sum_to_shape
from ember.ops.shape import reshape
from ember.ops.unary import rsqrt
from ember.tensor.tensor import Tensor


def _shape(t) -> tuple:
    return tuple(t.data.shape)


def _cast(arr, dtype):
    return arr if arr.dtype == dtype else arr.astype(dtype)


# NumPy broadcasts a (d,) vector over (m, d) rows one short inner loop per row: at d = 128
# that costs ~1.7x a plain pass (57 vs 33 us for (2048, 128)). Seen as (m / k, k d) rows
# against the vector tiled k times, the loops are long again (36 us).
_TILE = 8192  # elements per tiled row


def col_op(ufunc, a, v, out) -> None:
    """``ufunc(a, v, out=out)`` for C-contiguous (m, d) ``a`` and ``out`` and a (d,) ``v``."""
    m, d = a.shape
    k = max(1, min(m, _TILE // max(d, 1)))
    while m % k:
        k //= 2
    if k == 1 or not (a.flags.c_contiguous and out.flags.c_contiguous):
        ufunc(a, v, out=out)
        return
    tiled = np.tile(v, k)
    ufunc(a.reshape(m // k, k * d), tiled, out=out.reshape(m // k, k * d))


# --------------------------------------------------------------- Tensor-op backward
def _norm_backward_graph(g, x, w, axes, view, pshape, eps, stats, needs):
    """The closed-form normalisation backward in Tensor ops, recorded under create_graph.

    ``axes``: the dims the statistics reduce over; ``view``: the shape the weight broadcasts
    as, ``pshape`` its own shape; ``stats``: None (batch statistics, recomputed from ``x``)
    or constant (mean, rstd) arrays shaped to broadcast against ``x`` (eval-mode batch norm).
    """
    if stats is None:
        mean = x.mean(axes, keepdim=True)
        xc = x - mean
        rstd = rsqrt((xc * xc).mean(axes, keepdim=True) + eps)
    else:
        xc = x - Tensor(stats[0])
        rstd = Tensor(stats[1])
    xhat = xc * rstd
    wv = None if w is None else reshape(w, view)
    dxhat = g if wv is None else g * wv
    dx = dw = db = None
    if needs[0]:
        if stats is None:
            dx = (
                dxhat
                - dxhat.mean(axes, keepdim=True)
                - xhat * (dxhat * xhat).mean(axes, keepdim=True)
            ) * rstd
        else:
            dx = dxhat * rstd
    if len(needs) > 1 and needs[1]:
        dw = reshape(sum_to_shape(g * xhat, view), pshape)
    if len(needs) > 2 and needs[2]:
        db = reshape(sum_to_shape(g, view), pshape)
    return dx, dw, db


def _rowdot(xp, a, b):
    """sum(a * b) over the last axis, with no full-size temporary. Long rows go through a
    batched matmul (one dot per row, about twice as fast as einsum), short ones einsum."""
    n = a.shape[-1]
    if n >= 64:
        return xp.matmul(a.reshape(-1, 1, n), b.reshape(-1, n, 1)).reshape(a.shape[:-1])
    return xp.einsum("...l,...l->...", a, b)


def _channel_sum(xp, a):
    """Per-channel sum of an (N, C, L) array: L-long float32 partial sums, then over N."""
    return xp.einsum("ncl->nc", a).sum(axis=0)


def _channel_dot(xp, a, b):
    return _rowdot(xp, a, b).sum(axis=0)


def _row(xp, v, length: int):
    """Per-channel values ``v`` (C,) as one (C * length,) row: each repeated ``length``
    times, to broadcast against the (N, C * length) view."""
    return v if length == 1 else xp.repeat(v, length)


def eps_of(eps: float, dtype):
    """``eps`` as a scalar of the work dtype (no float64 promotion of float32 arrays)."""
    return np.dtype(dtype).type(eps)
