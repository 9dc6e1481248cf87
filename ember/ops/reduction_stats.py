"""Statistics and norms: var/std (with ``correction`` or the legacy ``unbiased``), var_mean,
std_mean, and norm (vector p-norms; ``'fro'``).

Forward runs on arrays (float16/bfloat16 accumulate in float32, as torch's opmath does);
backward follows torch's formulas with Tensor ops, so double backward works. Where torch masks a
0/0 (std or a norm at zero), the mask is a constant Tensor, which keeps the formula
differentiable.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from ember.autograd import autocast_state as _amp
from ember.autograd.autocast_state import state as _autocast
from ember.autograd.function import Function, as_array
from ember.ops.reduction import _HALF, keep_shape, reduced_count, reduction_axes
from ember.ops.reduction import mean as _mean
from ember.ops.shape import reshape
from ember.tensor import dtypes
from ember.tensor.backend import get_array_module
from ember.tensor.tensor import Tensor


def _unsqueeze(t: Tensor, shape: tuple, axes, keepdim: bool) -> Tensor:
    """A reduced result with its reduced dims back as size 1 (broadcasts against the input)."""
    if keepdim:
        return t
    return reshape(t, keep_shape(shape, axes))


def _work(a):
    """Halves accumulate in float32."""
    return a.astype(np.float32) if a.dtype in _HALF else a


def _correction(unbiased, correction, op: str):
    if unbiased is not None and correction is not None:
        raise RuntimeError(f"{op}(): cannot specify both unbiased and correction")
    if correction is not None:
        return correction
    return 1 if unbiased is None or unbiased else 0


def _variance(a, axes, keepdim: bool, correction):
    xp = get_array_module(a)
    w = _work(a)
    n = reduced_count(a.shape, axes)
    dof = n - correction
    if dof <= 0:
        warnings.warn(
            "var(): degrees of freedom is <= 0. Correction should be strictly less "
            "than the reduction factor (input numel divided by output numel).",
            UserWarning,
            stacklevel=4,
        )
    if n == 0:  # nan, as torch (and without NumPy's empty-slice warnings)
        return w.sum(axis=axes, keepdims=keepdim) * w.dtype.type(np.nan), dof
    with np.errstate(divide="ignore", invalid="ignore"):
        d = w - w.mean(axis=axes, keepdims=True)
        out = (d * d).sum(axis=axes, keepdims=keepdim) / xp.asarray(
            dof if dof > 0 else 0, dtype=w.dtype
        )
    return out, dof


class Var(Function):
    def __init__(self, axes, keepdim: bool, correction):
        self.axes, self.keepdim, self.correction = axes, keepdim, correction

    def forward(self, a):
        self.shape = a.shape
        out, self.dof = _variance(a, self.axes, self.keepdim, self.correction)
        self.save_for_backward(a)
        return out.astype(a.dtype, copy=False)

    def backward(self, g):
        (x,) = self.saved_tensors
        return _var_backward(
            _unsqueeze(g, self.shape, self.axes, self.keepdim), x, self.axes, self.dof
        )


def _var_backward(g: Tensor, x: Tensor, axes, dof) -> Tensor:
    """torch: (2 / dof) * grad * (x - mean(x)); dof <= 0 gives inf, as in torch."""
    scale = 2.0 / dof if dof > 0 else math.inf
    with np.errstate(invalid="ignore"):  # inf * 0 = nan where dof <= 0, as torch
        return (g * scale) * (x - _mean(x, axes, keepdim=True))


class Std(Function):
    def __init__(self, axes, keepdim: bool, correction):
        self.axes, self.keepdim, self.correction = axes, keepdim, correction

    def forward(self, a):
        xp = get_array_module(a)
        self.shape = a.shape
        var, self.dof = _variance(a, self.axes, self.keepdim, self.correction)
        out = as_array(xp.sqrt(var).astype(a.dtype, copy=False))
        self.save_for_backward(a, out)
        return out

    def backward(self, g):
        x, out = self.saved_tensors
        g = _unsqueeze(g, self.shape, self.axes, self.keepdim)
        out = _unsqueeze(out, self.shape, self.axes, self.keepdim)
        zero = out.data == 0
        if bool(zero.any()):  # torch masks grad / (2 * std) to 0 where std is 0
            dt = out.data.dtype
            gs = g / (out * 2 + Tensor(zero.astype(dt))) * Tensor((~zero).astype(dt))
        else:
            gs = g / (out * 2)
        return _var_backward(gs, x, self.axes, self.dof)


def _var_args(input: Tensor, dim, unbiased, keepdim, correction, op: str):
    if isinstance(dim, bool):  # torch.var(x, True): the legacy unbiased flag
        dim, unbiased = None, dim
    if input.data.dtype not in dtypes.FLOATING_NP:
        raise RuntimeError(
            f"{op}(): std and var only support floating point and complex dtypes, got {input.dtype}"
        )
    axes = reduction_axes(dim, input.data.ndim, op)
    return axes, keepdim, _correction(unbiased, correction, op)


def var(input: Tensor, dim=None, unbiased=None, keepdim: bool = False, *, correction=None):
    return Var(*_var_args(input, dim, unbiased, keepdim, correction, "var")).apply(input)


def std(input: Tensor, dim=None, unbiased=None, keepdim: bool = False, *, correction=None):
    return Std(*_var_args(input, dim, unbiased, keepdim, correction, "std")).apply(input)


def var_mean(input: Tensor, dim=None, unbiased=None, keepdim: bool = False, *, correction=None):
    """(var, mean), as torch.var_mean."""
    axes, keepdim, c = _var_args(input, dim, unbiased, keepdim, correction, "var_mean")
    return Var(axes, keepdim, c).apply(input), _mean(input, axes, keepdim)


def std_mean(input: Tensor, dim=None, unbiased=None, keepdim: bool = False, *, correction=None):
    """(std, mean), as torch.std_mean."""
    axes, keepdim, c = _var_args(input, dim, unbiased, keepdim, correction, "std_mean")
    return Std(axes, keepdim, c).apply(input), _mean(input, axes, keepdim)


class VectorNorm(Function):
    """The p-norm of the elements over ``axes``: p = 0 (count), 1, 2, +-inf or any other."""

    def __init__(self, p: float, axes, keepdim: bool):
        self.p, self.axes, self.keepdim = p, axes, keepdim

    def forward(self, a):
        xp = get_array_module(a)
        p, axes, kd = self.p, self.axes, self.keepdim
        self.shape = a.shape
        w = _work(a)
        if p == 2:
            out = xp.sqrt((w * w).sum(axis=axes, keepdims=kd))
        elif p == 1:
            out = xp.abs(w).sum(axis=axes, keepdims=kd)
        elif p == math.inf:
            out = xp.abs(w).max(axis=axes, keepdims=kd)
        elif p == -math.inf:
            out = xp.abs(w).min(axis=axes, keepdims=kd)
        elif p == 0:
            out = (w != 0).sum(axis=axes, keepdims=kd, dtype=w.dtype)
        else:
            with np.errstate(divide="ignore", over="ignore"):
                out = (xp.abs(w) ** p).sum(axis=axes, keepdims=kd) ** (1.0 / p)
        out = as_array(out.astype(a.dtype, copy=False))  # the saved output must be the array
        self.save_for_backward(a, out)
        return out

    def backward(self, g):
        x, out = self.saved_tensors
        p = self.p
        if p == 0:
            return None  # a count: no gradient (torch leaves it undefined)
        xp = get_array_module(x.data)
        dt = x.data.dtype
        g = _unsqueeze(g, self.shape, self.axes, self.keepdim)
        norm = _unsqueeze(out, self.shape, self.axes, self.keepdim)
        sgn = Tensor(xp.sign(x.data))  # constant: d sign / dx = 0
        if p == 1:
            return g * sgn
        if p == 2:
            return g * _masked_div(x, norm, norm.data == 0)
        if math.isinf(p):  # amax(abs(x)): split among ties, NaNs included
            ax = xp.abs(x.data)
            mask = (ax == norm.data) | xp.isnan(ax)
            count = mask.sum(axis=self.axes, keepdims=True).astype(dt)
            return sgn * ((g / Tensor(count)) * Tensor(mask.astype(dt)))
        zero = x.data == 0
        absx = x * sgn
        if p < 1:  # |x|^(p-1) blows up at 0: torch masks it there
            scaled = sgn * _masked_pow(absx, p - 1, zero)
            return scaled * g * norm ** (1 - p)
        scaled = sgn * absx ** (p - 1) if p < 2 else x * absx ** (p - 2)
        return scaled * _masked_div(g, norm ** (p - 1), norm.data == 0)


def _masked_div(a: Tensor, b: Tensor, zero) -> Tensor:
    """a / b, set to 0 where ``zero`` (b == 0), differentiably."""
    if not bool(zero.any()):
        return a / b
    dt = b.data.dtype
    return a / (b + Tensor(zero.astype(dt))) * Tensor((~zero).astype(dt))


def _masked_pow(a: Tensor, e: float, zero) -> Tensor:
    """a ** e, set to 0 where ``zero`` (a == 0), differentiably."""
    if not bool(zero.any()):
        return a**e
    dt = a.data.dtype
    return (a + Tensor(zero.astype(dt))) ** e * Tensor((~zero).astype(dt))


def vector_norm(
    input: Tensor,
    ord=2,
    dim=None,
    keepdim: bool = False,
    *,
    dtype=None,
    op: str = "linalg.vector_norm",
) -> Tensor:
    if input.data.dtype not in dtypes.FLOATING_NP:
        raise RuntimeError(
            f"{op}: Expected a floating point or complex tensor as input. Got {input.dtype}"
        )
    if dtype is not None:
        from ember.ops.conversion import cast_to

        input = cast_to(input, dtype)
    p = float(ord)
    axes = reduction_axes(dim, input.data.ndim, op)
    if math.isinf(p) and reduced_count(input.data.shape, axes) == 0:
        raise RuntimeError(
            f"{op}: cannot compute the {ord} norm on an empty tensor because the operation "
            "does not have an identity"
        )
    return VectorNorm(p, axes, keepdim).apply(input)


def norm(input: Tensor, p="fro", dim=None, keepdim: bool = False, dtype=None) -> Tensor:
    """torch.norm: a numeric p (None = 2) or 'fro' over <= 2 dims is a vector norm over dim."""
    if _autocast.enabled and dtype is None:  # on torch's autocast float32 list
        return _amp.call(_amp.FP32, norm, input, p, dim, keepdim)
    if isinstance(p, str):
        if p != "fro":
            raise NotImplementedError(f"norm: p={p!r} is not supported (only numbers and 'fro')")
        if dim is not None and not isinstance(dim, int) and len(dim) > 2:
            raise RuntimeError(f"norm: the 'fro' norm takes at most 2 dims, got {tuple(dim)}")
        p = 2
    return vector_norm(input, 2 if p is None else p, dim, keepdim, dtype=dtype, op="norm")


METHODS = {"var": var, "std": std, "norm": norm}
FUNCTIONS = {"var": var, "std": std, "var_mean": var_mean, "std_mean": std_mean, "norm": norm}
