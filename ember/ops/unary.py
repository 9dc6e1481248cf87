"""Unary math (exp, log, sqrt, trig, erf, abs, sign, rounding) and the family's registry.

This module is the ``unary`` op family: it also collects the activations (``activation.py``:
relu, sigmoid, tanh, gelu, silu, softplus) and the selecting ops (``select.py``: clamp,
minimum/maximum, where, lerp...) so they are all installed from one place and importable as
``ember.ops.unary.<name>``.

Integer and bool inputs to the float functions (exp, log, sqrt, sin, erf...) become the
default float dtype, as in torch. Backward formulas are Tensor ops on the saved input or
output, so every op here can be differentiated twice.
"""

from __future__ import annotations

import math

from ember.autograd import autocast_state as _amp
from ember.autograd.autocast_state import state as _autocast
from ember.ops import activation, select
from ember.ops.parallel import ufunc_blocks
from ember.ops.pointwise import (
    Elementwise,
    check_tensor,
    elementwise,
    float_only,
    floating,
    scale_grad,
    zeros_grad,
)
from ember.ops.special import erf_array
from ember.tensor.backend import get_array_module
from ember.tensor.dtypes import FLOATING_NP as _FLOATS
from ember.tensor.tensor import Tensor

_LN2 = math.log(2.0)
_LN10 = math.log(10.0)
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


def sign_array(x):
    """torch's sign: -1, 0 or 1, and 0 for NaN (NumPy's sign gives NaN)."""
    xp = get_array_module(x)
    if x.dtype.kind == "b":
        return x.copy()
    if x.dtype.kind in "iu":
        return xp.sign(x)
    out = (x > 0).astype(x.dtype)
    out -= x < 0
    return out


def _rsqrt(xp, x):
    out = xp.sqrt(x)
    return xp.reciprocal(out, out=out) if out.ndim else xp.reciprocal(out)


def _inv_sqrt_one_minus_sq(x):
    return (1 - x * x) ** -0.5


# name, forward (xp, x), backward (g, saved), what is saved
_SPECS = {
    "exp": ("Exp", lambda xp, x: ufunc_blocks(xp.exp, x), lambda g, out: g * out, "output"),
    "exp2": ("Exp2", lambda xp, x: xp.exp2(x), lambda g, out: g * out * _LN2, "output"),
    "expm1": ("Expm1", lambda xp, x: xp.expm1(x), lambda g, out: g * (out + 1), "output"),
    "log": ("Log", lambda xp, x: xp.log(x), lambda g, x: g / x, "input"),
    "log1p": ("Log1p", lambda xp, x: xp.log1p(x), lambda g, x: g / (x + 1), "input"),
    "log2": ("Log2", lambda xp, x: xp.log2(x), lambda g, x: g / (x * _LN2), "input"),
    "log10": ("Log10", lambda xp, x: xp.log10(x), lambda g, x: g / (x * _LN10), "input"),
    "sqrt": ("Sqrt", lambda xp, x: xp.sqrt(x), lambda g, out: g / (out * 2), "output"),
    "rsqrt": ("Rsqrt", _rsqrt, lambda g, out: g * (out * out * out) * -0.5, "output"),
    "reciprocal": (
        "Reciprocal",
        lambda xp, x: xp.reciprocal(x),
        lambda g, out: -(g * (out * out)),
        "output",
    ),
    "sin": ("Sin", lambda xp, x: xp.sin(x), lambda g, x: g * cos(x), "input"),
    "cos": ("Cos", lambda xp, x: xp.cos(x), lambda g, x: -(g * sin(x)), "input"),
    "tan": ("Tan", lambda xp, x: xp.tan(x), lambda g, out: g * (out * out + 1), "output"),
    "sinh": ("Sinh", lambda xp, x: xp.sinh(x), lambda g, x: g * cosh(x), "input"),
    "cosh": ("Cosh", lambda xp, x: xp.cosh(x), lambda g, x: g * sinh(x), "input"),
    "asin": (
        "Asin",
        lambda xp, x: xp.arcsin(x),
        lambda g, x: g * _inv_sqrt_one_minus_sq(x),
        "input",
    ),
    "acos": (
        "Acos",
        lambda xp, x: xp.arccos(x),
        lambda g, x: -(g * _inv_sqrt_one_minus_sq(x)),
        "input",
    ),
    "atan": ("Atan", lambda xp, x: xp.arctan(x), lambda g, x: g / (x * x + 1), "input"),
    "erf": (
        "Erf",
        lambda xp, x: erf_array(x),
        lambda g, x: g * exp(-(x * x)) * _TWO_OVER_SQRT_PI,
        "input",
    ),
}
_CLASSES = {
    name: elementwise(cls, fwd, bwd, saves) for name, (cls, fwd, bwd, saves) in _SPECS.items()
}


# torch's autocast float32 list among these ops
_AUTOCAST_FP32 = frozenset(
    ("exp", "expm1", "log", "log1p", "log2", "log10", "rsqrt", "reciprocal")
    + ("tan", "sinh", "cosh", "asin", "acos")
)


def _float_op(name: str):
    cls = _CLASSES[name]
    fp32 = name in _AUTOCAST_FP32

    def op(input):
        if fp32 and _autocast.enabled:
            return _amp.call(_amp.FP32, op, input)
        return cls().apply(floating(input, name))

    op.__name__ = name
    op.__doc__ = f"Elementwise {name}; integer inputs give the default float dtype."
    return op


exp = _float_op("exp")
exp2 = _float_op("exp2")
expm1 = _float_op("expm1")
log = _float_op("log")
log1p = _float_op("log1p")
log2 = _float_op("log2")
log10 = _float_op("log10")
sqrt = _float_op("sqrt")
rsqrt = _float_op("rsqrt")
reciprocal = _float_op("reciprocal")
sin = _float_op("sin")
cos = _float_op("cos")
tan = _float_op("tan")
sinh = _float_op("sinh")
cosh = _float_op("cosh")
asin = _float_op("asin")
acos = _float_op("acos")
atan = _float_op("atan")
erf = _float_op("erf")


# ------------------------------------------------------------ ops that keep integer dtypes
Square = elementwise("Square", lambda xp, x: x * x, lambda g, x: g * (x * 2), "input")
Abs = elementwise(
    "Abs", lambda xp, x: xp.abs(x), lambda g, x: scale_grad(g, sign_array(x.data)), "input"
)
Sign = elementwise("Sign", lambda xp, x: sign_array(x), lambda g, _: zeros_grad(g), None)
Floor = elementwise("Floor", lambda xp, x: xp.floor(x), lambda g, _: zeros_grad(g), None)
Ceil = elementwise("Ceil", lambda xp, x: xp.ceil(x), lambda g, _: zeros_grad(g), None)
Trunc = elementwise("Trunc", lambda xp, x: xp.trunc(x), lambda g, _: zeros_grad(g), None)
Frac = elementwise("Frac", lambda xp, x: x - xp.trunc(x), lambda g, _: g, None)


class Round(Elementwise):
    saves = None

    def __init__(self, decimals: int = 0):
        self.decimals = decimals

    def fn(self, xp, x):  # half to even, as torch
        return xp.round(x, self.decimals) if self.decimals else xp.rint(x)

    @staticmethod
    def grad(g, _):
        return zeros_grad(g)


def _no_bool(input, op: str) -> Tensor:
    check_tensor(input, op)
    if input.data.dtype.kind == "b":
        raise RuntimeError(f"{op}: not implemented for 'bool'")
    return input


def _copy(input) -> Tensor:
    return Tensor(input.data.copy())


def square(input):
    """x * x; bool gives int64 (as torch)."""
    check_tensor(input, "square")
    if input.data.dtype.kind == "b":
        from ember.ops.conversion import cast_to

        input = cast_to(input, "int64")
    return Square().apply(input)


def abs(input):  # noqa: A001 - torch name
    return Abs().apply(_no_bool(input, "abs"))


def sign(input):
    """-1, 0 or +1 (0 for NaN); its gradient is zero."""
    check_tensor(input, "sign")
    if input.data.dtype not in _FLOATS:
        return Tensor(sign_array(input.data))
    return Sign().apply(input)


def _rounding(name: str, cls):
    def op(input):
        if _no_bool(input, name).data.dtype not in _FLOATS:
            return _copy(input)  # integers are already whole: a copy, as torch
        return cls().apply(input)

    op.__name__ = name
    op.__doc__ = f"Elementwise {name}; the gradient is zero (piecewise constant)."
    return op


floor = _rounding("floor", Floor)
ceil = _rounding("ceil", Ceil)
trunc = _rounding("trunc", Trunc)


def round(input, *, decimals: int = 0):  # noqa: A001 - torch name
    """Round half to even; ``decimals`` rounds to that many decimal places."""
    if _no_bool(input, "round").data.dtype not in _FLOATS:
        return _copy(input)
    return Round(decimals).apply(input)


def frac(input):
    """x - trunc(x); floating inputs only (as torch); the gradient passes straight through."""
    return Frac().apply(float_only(input, "frac"))


def positive(input):
    return input


_OWN = {
    "exp": exp,
    "exp2": exp2,
    "expm1": expm1,
    "log": log,
    "log1p": log1p,
    "log2": log2,
    "log10": log10,
    "sqrt": sqrt,
    "rsqrt": rsqrt,
    "reciprocal": reciprocal,
    "sin": sin,
    "cos": cos,
    "tan": tan,
    "sinh": sinh,
    "cosh": cosh,
    "asin": asin,
    "arcsin": asin,
    "acos": acos,
    "arccos": acos,
    "atan": atan,
    "arctan": atan,
    "erf": erf,
    "square": square,
    "abs": abs,
    "absolute": abs,
    "sign": sign,
    "floor": floor,
    "ceil": ceil,
    "trunc": trunc,
    "fix": trunc,
    "round": round,
    "frac": frac,
    "positive": positive,
}
_OWN_INPLACE = (
    "exp",
    "exp2",
    "expm1",
    "log",
    "log1p",
    "log2",
    "log10",
    "sqrt",
    "rsqrt",
    "reciprocal",
    "sin",
    "cos",
    "tan",
    "sinh",
    "cosh",
    "asin",
    "arcsin",
    "acos",
    "arccos",
    "atan",
    "arctan",
    "erf",
    "square",
    "abs",
    "absolute",
    "sign",
    "floor",
    "ceil",
    "trunc",
    "fix",
    "round",
    "frac",
)

METHODS = {**_OWN, **activation.METHODS, **select.METHODS}
FUNCTIONS = {**_OWN, **activation.FUNCTIONS, **select.FUNCTIONS}
INPLACE = _OWN_INPLACE + activation.INPLACE + select.INPLACE


def _inplace_function(name: str):
    def op(input, *args, **kwargs):
        return getattr(input, name + "_")(*args, **kwargs)

    op.__name__ = name + "_"
    op.__doc__ = f"``{name}`` in place (``torch.{name}_``)."
    return op


# torch.exp_, torch.relu_, torch.clamp_...: the in-place functions call the methods
FUNCTIONS.update({name + "_": _inplace_function(name) for name in INPLACE})

# the activation and select ops are importable from here too (ember.ops.unary.relu ...)
globals().update(
    {k: v for k, v in {**activation.FUNCTIONS, **select.FUNCTIONS}.items() if k not in globals()}
)
