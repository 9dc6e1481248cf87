"""Products: prod and cumprod, with gradients that stay exact when the input holds zeros.

Without zeros the gradient is the cheap ``out / x``. With zeros it is the product of the *other*
elements, computed by exclusive cumulative products (no division). Both are written with Tensor
ops, so double backward works, zeros included (the zero path costs O(n^2) there).
"""

from __future__ import annotations

from ember.autograd import autocast_state as _amp
from ember.autograd.autocast_state import state as _autocast
from ember.autograd.function import Function, as_array
from ember.ops.dims import normalize_dims
from ember.ops.reduction import (
    CumSum,
    _expand_back,
    int_to_long,
    keep_shape,
    reduced_count,
    reduction_axes,
    single_dim,
)
from ember.ops.reduction import sum as _sum
from ember.ops.shape import permute, reshape, transpose
from ember.tensor.backend import get_array_module
from ember.tensor.tensor import Tensor


def _has_zero(t: Tensor) -> bool:
    return bool((t.data == 0).any())


def _eye_masks(t: Tensor, n: int):
    """The identity and its complement as constant Tensors of ``t``'s dtype."""
    xp = get_array_module(t.data)
    eye = xp.eye(n, dtype=t.data.dtype)
    return Tensor(eye), Tensor(1 - eye)


def _rows_without_self(t: Tensor, n: int):
    """(..., n) -> (..., n, n) whose row k is ``t`` with element k replaced by 1."""
    eye, off = _eye_masks(t, n)
    rows = reshape(t, tuple(t.data.shape[:-1]) + (1, n)) * off + eye
    return rows, off


class ProdOthers(Function):
    """For each element of the last axis, the product of all the others (zero-safe)."""

    def forward(self, a):
        xp = get_array_module(a)
        self.save_for_backward(a)
        if a.shape[-1] == 0:
            return a.copy()
        ones = xp.ones(a.shape[:-1] + (1,), a.dtype)
        left = xp.cumprod(xp.concatenate([ones, a[..., :-1]], axis=-1), axis=-1)
        right = xp.cumprod(xp.concatenate([ones, a[..., :0:-1]], axis=-1), axis=-1)[..., ::-1]
        return left * right

    def backward(self, h):
        (a,) = self.saved_tensors
        n = a.data.shape[-1]
        if n <= 1:
            return None  # the product of no others is the constant 1
        rows, off = _rows_without_self(a, n)
        r = ProdOthers().apply(rows)  # r[k, i] = prod over j != i, k (for i != k)
        hh = reshape(h, tuple(h.data.shape[:-1]) + (1, n))
        return _sum(r * off * hh, -1)


def _prod_others(a: Tensor, axes) -> Tensor:
    """ProdOthers over the reduced ``axes`` (moved last and flattened, then put back)."""
    nd = a.data.ndim
    red = tuple(range(nd)) if axes is None else axes
    perm = tuple(d for d in range(nd) if d not in red) + red
    moved = permute(a, perm) if perm != tuple(range(nd)) else a
    lead = tuple(a.data.shape[d] for d in perm[: nd - len(red)])
    p = ProdOthers().apply(reshape(moved, lead + (reduced_count(a.data.shape, axes),)))
    p = reshape(p, tuple(a.data.shape[d] for d in perm))
    if perm == tuple(range(nd)):
        return p
    inv = [0] * nd
    for i, d in enumerate(perm):
        inv[d] = i
    return permute(p, tuple(inv))


class Prod(Function):
    def __init__(self, axes, keepdim: bool):
        self.axes, self.keepdim = axes, keepdim

    def forward(self, a):
        self.shape = a.shape
        # as_array: NumPy gives a scalar for a full reduction, and backward reconnects the
        # saved output only if it is the very array returned
        out = as_array(a.prod(axis=self.axes, keepdims=self.keepdim))
        self.save_for_backward(a, out)
        return out

    def backward(self, g):
        a, out = self.saved_tensors
        g = _expand_back(g, self.shape, self.axes, self.keepdim)
        if not _has_zero(a):
            return g * (reshape(out, keep_shape(self.shape, self.axes)) / a)
        return g * _prod_others(a, self.axes)


def prod(input: Tensor, dim=None, keepdim: bool = False, *, dtype=None) -> Tensor:
    if _autocast.enabled and dtype is None:  # autocast multiplies in float32, as it sums
        return _amp.call(_amp.FP32, prod, input, dim, keepdim)
    if dim is None:
        axes = None
    else:
        single_dim(dim, "prod")
        axes = reduction_axes(dim, input.data.ndim, "prod")
    return Prod(axes, keepdim).apply(int_to_long(input, dtype))


class CumProd(Function):
    def __init__(self, axis: int):
        self.axis = axis

    def forward(self, a):
        xp = get_array_module(a)
        out = a.copy() if a.ndim == 0 else xp.cumprod(a, axis=self.axis)
        self.save_for_backward(a, out)
        return out

    def backward(self, g):
        a, out = self.saved_tensors
        if a.data.ndim == 0:
            return g
        if not _has_zero(a):
            return CumSum(self.axis, reverse=True).apply(g * out) / a
        return _cumprod_grad_with_zeros(g, a, self.axis)


def _cumprod_grad_with_zeros(g: Tensor, a: Tensor, axis: int) -> Tensor:
    """grad_k = sum over i >= k of g_i * prod over j <= i, j != k of x_j, built from the
    cumprod of the rows of x with x_k set to 1 (differentiable again)."""
    xp = get_array_module(a.data)
    n = a.data.shape[axis]
    at, gt = transpose(a, axis, -1), transpose(g, axis, -1)
    rows, _ = _rows_without_self(at, n)
    c = CumProd(rows.data.ndim - 1).apply(rows)  # c[k, i] = prod over j <= i, j != k
    upper = Tensor(xp.triu(xp.ones((n, n), dtype=a.data.dtype)))  # i >= k
    gg = reshape(gt, tuple(gt.data.shape[:-1]) + (1, n))
    return transpose(_sum(c * upper * gg, -1), axis, -1)


def cumprod(input: Tensor, dim: int, *, dtype=None) -> Tensor:
    if _autocast.enabled and dtype is None:
        return _amp.call(_amp.FP32, cumprod, input, dim)
    single_dim(dim, "cumprod")
    axis = normalize_dims(dim, input.data.ndim, "cumprod")[0]
    return CumProd(axis).apply(int_to_long(input, dtype))


METHODS = {"prod": prod, "cumprod": cumprod}
FUNCTIONS = {"prod": prod, "cumprod": cumprod}
