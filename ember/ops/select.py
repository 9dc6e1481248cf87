"""Ops that pick or blend between values elementwise: clamp/clip, minimum/maximum, fmin/fmax,
where, lerp, logaddexp and nan_to_num.

Their gradients follow torch's rules exactly where a choice exists: clamp passes the gradient
at the boundaries (``min <= x <= max``), a tie in maximum/minimum splits it half and half,
fmax/fmin give a tie to the first operand. The masks are computed once in forward (only when
a gradient is needed) and applied with ``scale_grad``, which double backward differentiates.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from ember.autograd.function import Function, as_array
from ember.ops.pointwise import broadcast_error, check_tensor, const, quiet, scale_grad, select
from ember.ops.promotion import as_tensor_operand, binary_operands, cast, is_scalar
from ember.ops.reduction import sum_to_shape
from ember.tensor import dtypes
from ember.tensor.backend import get_array_module
from ember.tensor.tensor import Tensor


def _shape(v):
    return getattr(v, "shape", ())


def _tensor_or_scalar(v, op: str):
    if v is None or isinstance(v, Tensor) or is_scalar(v):
        return v
    return as_tensor_operand(v, op)


def promote(values, op: str):
    """Cast Tensors and type scalars to the dtype torch gives ``values`` together (None kept)."""
    values = [_tensor_or_scalar(v, op) for v in values]
    dims, zero, scalars = [], [], []
    for v in values:
        if isinstance(v, Tensor):
            (dims if v.data.ndim else zero).append(v.dtype)
        elif v is not None:
            scalars.append(v)
    rd = dtypes.result_type(dims, zero, scalars)
    return rd, [
        v if v is None else cast(v, rd) if isinstance(v, Tensor) else rd.np.type(v) for v in values
    ]


def _arr(v):
    return v.data if isinstance(v, Tensor) else v


# ----------------------------------------------------------------------------- clamp
class Clamp(Function):
    def forward(self, x, lo, hi):
        xp = get_array_module(x)
        try:
            out = _clamp(xp, x, lo, hi)
        except ValueError:
            raise broadcast_error(
                "clamp", *(_shape(v) for v in (x, lo, hi) if v is not None)
            ) from None
        ng = self.needs_input_grad
        self.shapes = [_shape(v) for v in (x, lo, hi)]
        self.masks = [None, None, None]
        if ng[0]:  # x passes its gradient on [min, max], boundaries included
            m = None if lo is None else x >= lo
            if hi is not None:
                m = x <= hi if m is None else m & (x <= hi)
            self.masks[0] = m
        if ng[1]:
            self.masks[1] = x < lo if hi is None else (x < lo) & (lo < hi)
        if ng[2]:  # with min > max the result is max everywhere
            self.masks[2] = x > hi if lo is None else (x > hi) | (hi < lo)
        return as_array(out)

    def backward(self, g):
        return tuple(
            None if m is None else sum_to_shape(scale_grad(g, m), s)
            for m, s in zip(self.masks, self.shapes)
        )


def _clamp(xp, x, lo, hi):
    """min(max(x, lo), hi); NaN in x stays NaN, and min > max gives max (as torch)."""
    if (
        x.dtype.kind == "f"
        and x.dtype.itemsize >= 4
        and getattr(lo, "ndim", 0) == 0
        and (getattr(hi, "ndim", 0) == 0)
    ):  # clip has a fast path: 3x faster than max + min
        return xp.clip(
            x, const(x, -np.inf) if lo is None else lo, const(x, np.inf) if hi is None else hi
        )
    out = x if lo is None else xp.maximum(x, lo)
    if hi is not None:
        inplace = out is not x and out.ndim > 0 and hi.ndim == 0
        out = xp.minimum(out, hi, out=out) if inplace else xp.minimum(out, hi)
    return out


def clamp(input, min=None, max=None):  # noqa: A002 - torch names
    """Limit ``input`` to [min, max]; either bound may be None, a number or a Tensor."""
    check_tensor(input, "clamp")
    if min is None and max is None:
        raise RuntimeError("clamp: At least one of 'min' or 'max' must not be None")
    _, (x, lo, hi) = promote([input, min, max], "clamp")
    return Clamp().apply(x, lo, hi)


def clamp_min(input, min):  # noqa: A002
    return clamp(input, min=min)


def clamp_max(input, max):  # noqa: A002
    return clamp(input, max=max)


# ------------------------------------------------------------------ maximum / minimum
class MinMax(Function):
    """maximum/minimum (NaN propagates; ties split the gradient) and fmax/fmin (NaN is
    ignored; ties go to the first operand)."""

    def __init__(self, kind: str):
        self.kind = kind

    def name(self) -> str:
        return f"{self.kind.capitalize()}Backward"

    def forward(self, a, b):
        xp = get_array_module(b if isinstance(a, np.generic) else a)
        try:
            out = getattr(xp, self.kind)(a, b)
        except ValueError:
            raise broadcast_error(self.kind, _shape(a), _shape(b)) from None
        self.shapes = (_shape(a), _shape(b))
        ng = self.needs_input_grad
        self.w = (None, None)
        if ng[0] or ng[1]:
            self.w = self._weights(xp, a, b, out.dtype)
        return as_array(out)

    def _weights(self, xp, a, b, dtype):
        kind = self.kind
        if kind in ("fmax", "fmin"):
            first = ((a >= b) if kind == "fmax" else (a <= b)) | xp.isnan(b)
            return first, ~first
        lt, gt = a < b, a > b
        if kind == "minimum":
            lt, gt = gt, lt
        half = (a == b).astype(dtype)
        half *= const(half, 0.5)
        wa = (~lt).astype(dtype)
        wa -= half
        wb = (~gt).astype(dtype)
        wb -= half
        return wa, wb

    def backward(self, g):
        ng = self.needs_input_grad
        return tuple(
            sum_to_shape(scale_grad(g, w), s) if need else None
            for w, s, need in zip(self.w, self.shapes, ng)
        )


def _minmax(kind: str):
    def op(input, other):
        a, b = binary_operands(input, other, kind)
        return MinMax(kind).apply(a, b)

    op.__name__ = kind
    op.__doc__ = f"Elementwise {kind} of two tensors (broadcast, promoted as torch)."
    return op


maximum = _minmax("maximum")
minimum = _minmax("minimum")
fmax = _minmax("fmax")
fmin = _minmax("fmin")


# ----------------------------------------------------------------------------- where
class Where(Function):
    def forward(self, cond, a, b):
        try:
            out = select(cond, a, b)
        except ValueError:
            raise broadcast_error("where", _shape(cond), _shape(a), _shape(b)) from None
        self.shapes = (_shape(a), _shape(b))
        self.save_for_backward(cond)
        return as_array(out)

    def backward(self, g):
        (cond,) = self.saved_tensors
        ng = self.needs_input_grad
        sa, sb = self.shapes
        return (
            None,
            sum_to_shape(scale_grad(g, cond.data), sa) if ng[1] else None,
            sum_to_shape(scale_grad(g, ~cond.data), sb) if ng[2] else None,
        )


def where(condition, input=None, other=None):
    """``input`` where ``condition`` else ``other`` (Tensors or numbers, broadcast and
    promoted as torch). ``where(condition)`` alone is ``nonzero(as_tuple=True)``."""
    if not isinstance(condition, Tensor):
        condition = as_tensor_operand(condition, "where")
    if condition.data.dtype.kind != "b":
        raise RuntimeError(
            "where: expected condition to be a boolean tensor, but got a tensor "
            f"with dtype {condition.dtype.name}"
        )
    if input is None and other is None:
        xp = get_array_module(condition.data)
        return tuple(Tensor(i.astype(dtypes.int64.np)) for i in xp.nonzero(condition.data))
    if input is None or other is None:
        raise TypeError("where: expected both input and other, or neither")
    _, (a, b) = promote([input, other], "where")
    return Where().apply(condition, a, b)


def _where_method(self, condition, other):
    return where(condition, self, other)


# ------------------------------------------------------------------------------ lerp
class Lerp(Function):
    def forward(self, s, e, w):
        try:
            d = e - s
            if isinstance(w, float):  # torch's two-sided formula: exact at both ends
                out = s + const(d, w) * d if -0.5 < w < 0.5 else e - d * const(d, 1.0 - w)
            else:
                out = s + w * d
        except ValueError:
            raise broadcast_error("lerp", _shape(s), _shape(e), _shape(w)) from None
        self.shapes = (_shape(s), _shape(e), _shape(w))
        self.save_for_backward(s, e, w if not isinstance(w, float) else None)
        self.w = w
        return as_array(out)

    def backward(self, g):
        s, e, w = self.saved_tensors
        w = self.w if w is None else w
        ng = self.needs_input_grad
        ss, se, sw = self.shapes
        return (
            sum_to_shape(g * (1 - w), ss) if ng[0] else None,
            sum_to_shape(g * w, se) if ng[1] else None,
            sum_to_shape(g * (e - s), sw) if ng[2] else None,
        )


def lerp(input, end, weight):
    """input + weight * (end - input); ``weight`` is a number or a Tensor."""
    check_tensor(input, "lerp")
    end = check_tensor(end, "lerp")
    if input.data.dtype not in dtypes.FLOATING_NP:
        raise RuntimeError(f"lerp: not implemented for '{input.dtype.name}'")
    for name, v in (("end", end), ("weight", weight)):
        if isinstance(v, Tensor) and v.dtype is not input.dtype:
            raise RuntimeError(
                f"lerp: expected dtype {input.dtype.name} for `{name}` but got dtype {v.dtype.name}"
            )
    if not isinstance(weight, Tensor):
        weight = float(weight)
    return Lerp().apply(input, end, weight)


# ------------------------------------------------------------------------- logaddexp
class LogAddExp(Function):
    def forward(self, a, b):
        xp = get_array_module(a)
        try:
            with quiet():
                out = xp.logaddexp(a, b)
        except ValueError:
            raise broadcast_error("logaddexp", a.shape, b.shape) from None
        self.save_for_backward(a, b)
        return as_array(out)

    def backward(self, g):
        from ember.ops.activation import sigmoid

        a, b = self.saved_tensors
        ng = self.needs_input_grad
        return (
            sum_to_shape(g * sigmoid(a - b), a.shape) if ng[0] else None,
            sum_to_shape(g * sigmoid(b - a), b.shape) if ng[1] else None,
        )


def logaddexp(input, other):
    """log(exp(input) + exp(other)) without overflow."""
    a, b = binary_operands(input, other, "logaddexp", float_only=True)
    a = a if isinstance(a, Tensor) else Tensor(get_array_module(b.data).asarray(a))
    b = b if isinstance(b, Tensor) else Tensor(get_array_module(a.data).asarray(b))
    return LogAddExp().apply(a, b)


# ------------------------------------------------------------------------ nan_to_num
class NanToNum(Function):
    def __init__(self, nan, posinf, neginf):
        self.values = (nan, posinf, neginf)

    def forward(self, x):
        xp = get_array_module(x)
        nan, posinf, neginf = self.values
        info = ml_dtypes.finfo(x.dtype)
        out = x.copy()
        finite = xp.isfinite(x)
        if not finite.all():
            xp.copyto(out, const(x, nan), where=xp.isnan(x))
            xp.copyto(out, const(x, info.max if posinf is None else posinf), where=x == xp.inf)
            xp.copyto(out, const(x, info.min if neginf is None else neginf), where=x == -xp.inf)
        self.finite = finite
        return out

    def backward(self, g):
        return scale_grad(g, self.finite)


def nan_to_num(input, nan=0.0, posinf=None, neginf=None):
    """NaN -> ``nan``, +-inf -> ``posinf``/``neginf`` (default: the dtype's largest values)."""
    check_tensor(input, "nan_to_num")
    if input.data.dtype not in dtypes.FLOATING_NP:
        return Tensor(input.data.copy())
    return NanToNum(nan, posinf, neginf).apply(input)


FUNCTIONS = {
    "clamp": clamp,
    "clip": clamp,
    "clamp_min": clamp_min,
    "clamp_max": clamp_max,
    "maximum": maximum,
    "minimum": minimum,
    "fmax": fmax,
    "fmin": fmin,
    "where": where,
    "lerp": lerp,
    "logaddexp": logaddexp,
    "nan_to_num": nan_to_num,
}
METHODS = {**FUNCTIONS, "where": _where_method}
INPLACE = ("clamp", "clip", "clamp_min", "clamp_max", "lerp", "nan_to_num")
