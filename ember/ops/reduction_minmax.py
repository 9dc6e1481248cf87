"""Extremes: max/min (a value, or values and indices along a dim), argmax/argmin, amax/amin and
aminmax.

Two gradient rules, as in torch: a reduction that returns indices (``max(x, dim)``) sends the
gradient to the selected index; one that does not (``amax``, ``max(x)``) splits it evenly among
the tied elements. Both are the incoming gradient times a constant mask, so they differentiate
again for free.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from ember.autograd.function import Function, as_array
from ember.ops.dims import normalize_dim
from ember.ops.reduction import _expand_back, keep_shape, reduction_axes, single_dim
from ember.tensor.backend import get_array_module
from ember.tensor.tensor import Tensor


def _return_type(name: str, fields: tuple):
    """A namedtuple like torch.return_types.<name>: unpacks, and has named fields."""
    cls = namedtuple(name, fields)
    cls.__module__ = "ember.return_types"
    return cls


max_result = _return_type("max", ("values", "indices"))
min_result = _return_type("min", ("values", "indices"))
aminmax_result = _return_type("aminmax", ("min", "max"))


def _check_nonempty(input: Tensor, axes, op: str, no_dim_error=RuntimeError) -> None:
    """max/min have no identity: an empty reduction is an error that names the op."""
    if axes is None:
        if input.data.size == 0:
            raise no_dim_error(
                f"{op}(): Expected reduction dim to be specified for input.numel() == 0. "
                "Specify the reduction dim with the 'dim' argument."
            )
        return
    for ax in axes:
        if input.data.shape[ax] == 0:
            raise IndexError(f"{op}(): Expected reduction dim {ax} to have non-zero size.")


class Extremum(Function):
    """amax/amin, and max()/min() without a dim: the gradient is split evenly among ties
    (``nan_ties``: a NaN result counts the NaN inputs as its ties, as torch's max() does)."""

    def __init__(self, largest: bool, axes, keepdim: bool, nan_ties: bool = False):
        self.largest, self.axes, self.keepdim, self.nan_ties = largest, axes, keepdim, nan_ties

    def name(self) -> str:
        return ("Max" if self.largest else "Min") + "Backward"

    def forward(self, a):
        self.shape = a.shape
        out = as_array((a.max if self.largest else a.min)(axis=self.axes, keepdims=self.keepdim))
        self.save_for_backward(a, out)
        return out

    def backward(self, g):
        a, out = self.saved_tensors
        xp = get_array_module(a.data)
        x = a.data
        v = out.data.reshape(keep_shape(self.shape, self.axes))
        mask = x == v
        if self.nan_ties and bool(xp.isnan(v).any()):
            mask |= xp.isnan(x) & xp.isnan(v)
        with np.errstate(divide="ignore", invalid="ignore"):
            count = mask.sum(axis=self.axes, keepdims=True).astype(x.dtype)
            weight = mask.astype(x.dtype) / count
        return _expand_back(g, self.shape, self.axes, self.keepdim) * Tensor(weight)


class ExtremumDim(Function):
    """max/min along one dim: (values, int64 indices); the gradient goes to the index."""

    def __init__(self, largest: bool, axis: int, keepdim: bool):
        self.largest, self.axis, self.keepdim = largest, axis, keepdim

    def name(self) -> str:
        return ("Max" if self.largest else "Min") + "Backward"

    def forward(self, a):
        xp = get_array_module(a)
        self.shape, self.dtype = a.shape, a.dtype
        work = a.reshape(1) if a.ndim == 0 else a
        idx = (xp.argmax if self.largest else xp.argmin)(work, axis=self.axis)
        idx = xp.expand_dims(idx, self.axis)
        vals = xp.take_along_axis(work, idx, axis=self.axis)
        self.idx = idx
        if a.ndim == 0:
            vals, idx = vals.reshape(()), idx.reshape(())
        elif not self.keepdim:
            vals, idx = vals.squeeze(self.axis), idx.squeeze(self.axis)
        idx = idx.astype(np.int64, copy=False)
        self.mark_non_differentiable(idx)
        return vals, idx

    def backward(self, g, _gi):
        xp = get_array_module(g.data)
        nd = len(self.shape)
        work_shape = self.shape if nd else (1,)
        ar = xp.arange(work_shape[self.axis]).reshape(
            tuple(-1 if d == self.axis else 1 for d in range(len(work_shape)))
        )
        onehot = (ar == self.idx).astype(self.dtype).reshape(self.shape)
        axes = (self.axis,) if nd else None
        return _expand_back(g, self.shape, axes, self.keepdim) * Tensor(onehot)


def _extreme(input: Tensor, dim, keepdim: bool, other, largest: bool):
    op = "max" if largest else "min"
    if other is None and isinstance(dim, Tensor):
        other = dim
    if other is not None:  # torch.max(a, b) is the elementwise maximum
        from ember.ops import unary

        return (unary.maximum if largest else unary.minimum)(input, other)
    if dim is None:
        _check_nonempty(input, None, op)
        return Extremum(largest, None, False, nan_ties=True).apply(input)
    single_dim(dim, op)
    nd = input.data.ndim
    axis = normalize_dim(dim, nd, op)
    _check_nonempty(input, (axis,) if nd else None, op)
    vals, idx = ExtremumDim(largest, axis, keepdim).apply(input)
    return (max_result if largest else min_result)(vals, idx)


def max(input: Tensor, dim=None, keepdim: bool = False, *, other=None):  # noqa: A001
    """max(x): the largest value; max(x, dim): (values, indices); max(x, y): elementwise."""
    return _extreme(input, dim, keepdim, other, True)


def min(input: Tensor, dim=None, keepdim: bool = False, *, other=None):  # noqa: A001
    """min(x): the smallest value; min(x, dim): (values, indices); min(x, y): elementwise."""
    return _extreme(input, dim, keepdim, other, False)


def _arg_extreme(input: Tensor, dim, keepdim: bool, largest: bool) -> Tensor:
    op = "argmax" if largest else "argmin"
    if input.data.dtype == np.bool_:
        raise RuntimeError(f"{op}(): does not support bool input")
    xp = get_array_module(input.data)
    fn = xp.argmax if largest else xp.argmin
    nd = input.data.ndim
    if dim is None:  # the flat index
        _check_nonempty(input, None, op, no_dim_error=IndexError)
        idx = as_array(fn(input.data))
        if keepdim:
            idx = idx.reshape((1,) * nd)
    else:
        single_dim(dim, op)
        axis = normalize_dim(dim, nd, op)
        _check_nonempty(input, (axis,) if nd else None, op)
        if nd == 0:
            idx = xp.zeros((), np.int64)
        else:
            idx = fn(input.data, axis=axis)
            if keepdim:
                idx = xp.expand_dims(idx, axis)
    return Tensor(as_array(idx).astype(np.int64, copy=False))


def argmax(input: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    return _arg_extreme(input, dim, keepdim, True)


def argmin(input: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    return _arg_extreme(input, dim, keepdim, False)


def _amax_amin(input: Tensor, dim, keepdim: bool, largest: bool) -> Tensor:
    op = "amax" if largest else "amin"
    axes = reduction_axes(dim, input.data.ndim, op)  # dim=() reduces every dim
    _check_nonempty(input, axes, op)
    return Extremum(largest, axes, keepdim).apply(input)


def amax(input: Tensor, dim=(), keepdim: bool = False) -> Tensor:
    return _amax_amin(input, dim, keepdim, True)


def amin(input: Tensor, dim=(), keepdim: bool = False) -> Tensor:
    return _amax_amin(input, dim, keepdim, False)


def aminmax(input: Tensor, *, dim=None, keepdim: bool = False):
    """(min, max) in one call; each gradient is split among ties, as amin/amax."""
    if dim is not None:
        single_dim(dim, "aminmax")
    axes = reduction_axes(dim, input.data.ndim, "aminmax")
    _check_nonempty(input, axes, "aminmax")
    return aminmax_result(
        Extremum(False, axes, keepdim).apply(input), Extremum(True, axes, keepdim).apply(input)
    )


METHODS = {
    "max": max,
    "min": min,
    "argmax": argmax,
    "argmin": argmin,
    "amax": amax,
    "amin": amin,
    "aminmax": aminmax,
}
FUNCTIONS = dict(METHODS)
