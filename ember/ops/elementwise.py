"""Binary arithmetic: add, sub, mul, div, pow and the Python operators, with broadcasting.

Backward formulas are written with Tensor ops so that they can be differentiated again, and
every broadcast gradient goes back to its input's shape through ``sum_to_shape``.
"""

from __future__ import annotations

import numpy as np

from ember.autograd import autocast_state as _amp
from ember.autograd.autocast_state import state as _autocast
from ember.autograd.function import Function, as_array
from ember.autograd.grad_mode import state
from ember.ops.promotion import binary_operands, is_scalar
from ember.ops.reduction import sum_to_shape
from ember.tensor.backend import get_array_module
from ember.tensor.tensor import Tensor


def _shape(x):
    return x.shape


class Add(Function):
    def forward(self, a, b):
        self.shapes = (_shape(a), _shape(b))
        return a + b

    def backward(self, g):
        ng = self.needs_input_grad
        sa, sb = self.shapes
        return (sum_to_shape(g, sa) if ng[0] else None, sum_to_shape(g, sb) if ng[1] else None)


class Sub(Function):
    def forward(self, a, b):
        self.shapes = (_shape(a), _shape(b))
        return a - b

    def backward(self, g):
        ng = self.needs_input_grad
        sa, sb = self.shapes
        return (sum_to_shape(g, sa) if ng[0] else None, sum_to_shape(-g, sb) if ng[1] else None)


class Mul(Function):
    def forward(self, a, b):
        ng = self.needs_input_grad
        self.shapes = (_shape(a), _shape(b))
        self.save_for_backward(b if ng[0] else None, a if ng[1] else None)
        return a * b

    def backward(self, g):
        b, a = self.saved_tensors
        sa, sb = self.shapes
        if not state.enabled:  # no create_graph: raw products, no Function per product
            gd = g.data
            with np.errstate(all="ignore"):
                return (
                    sum_to_shape(Tensor(as_array(gd * b.data)), sa) if b is not None else None,
                    sum_to_shape(Tensor(as_array(gd * a.data)), sb) if a is not None else None,
                )
        return (
            sum_to_shape(g * b, sa) if b is not None else None,
            sum_to_shape(g * a, sb) if a is not None else None,
        )


class Div(Function):
    def forward(self, a, b):
        ng = self.needs_input_grad
        self.shapes = (_shape(a), _shape(b))
        self.save_for_backward(a if ng[1] else None, b)
        return a / b

    def backward(self, g):
        a, b = self.saved_tensors
        sa, sb = self.shapes
        ng = self.needs_input_grad
        ga = sum_to_shape(g / b, sa) if ng[0] else None
        gb = sum_to_shape(-g * a / (b * b), sb) if ng[1] else None
        return ga, gb


class Neg(Function):
    def forward(self, a):
        return -a

    def backward(self, g):
        return -g


class Pow(Function):
    """``a ** b`` for any mix of tensors and scalars (the exponent gets ``out * log(a)``)."""

    def forward(self, a, b):
        ng = self.needs_input_grad
        self.shapes = (_shape(a), _shape(b))
        out = a**b
        self.save_for_backward(a, b, out if ng[1] else None)
        return out

    def backward(self, g):
        a, b, out = self.saved_tensors
        sa, sb = self.shapes
        ng = self.needs_input_grad
        ga = gb = None
        from ember.ops.select import where

        with np.errstate(all="ignore"):  # NaN exponents compare quietly (bfloat16 warns)
            zero = b.data == 0
            flat = (a.data == 0) & (b.data >= 0)
        if ng[0]:
            slope = b * a ** (b - 1)
            if get_array_module(zero).any(zero):  # x ** 0 has slope 0 everywhere (torch),
                slope = where(Tensor(as_array(zero)), 0.0, slope)  # not 0 * inf = nan at 0
            ga = sum_to_shape(g * slope, sa)
        if ng[1]:
            from ember.ops.unary import log

            # torch: 0 where the base is 0 and the exponent >= 0 (0 ** b is constant there),
            # nan for a negative base (log of it), out * log(a) elsewhere; ``a`` stays in the
            # graph, so the second derivative sees log(a)'s own slope
            safe = where(Tensor(as_array(flat)), 1.0, a) if flat.any() else a
            gb = sum_to_shape(g * out * log(safe), sb)
        return ga, gb


def _binary(fn: Function, a, b, op: str) -> Tensor:
    """Apply a broadcasting binary Function; a shape mismatch names the op and both shapes.
    Overflow, 0 / 0 and inf - inf give inf / nan quietly, as in torch (NumPy would warn)."""
    try:
        with np.errstate(all="ignore"):
            return fn.apply(a, b)
    except ValueError as exc:
        if "broadcast" not in str(exc):  # e.g. NumPy's integers to negative integer powers
            raise RuntimeError(f"{op}: {exc}") from None
        from ember.ops.pointwise import broadcast_error

        sa = getattr(getattr(a, "data", a), "shape", ())
        sb = getattr(getattr(b, "data", b), "shape", ())
        raise broadcast_error(op, sa, sb) from None


def add(input, other, *, alpha=1, out=None):
    """input + alpha * other."""
    if alpha != 1:
        other = mul(other, alpha)
    a, b = binary_operands(input, other, "add")
    return _binary(Add(), a, b, "add")


def sub(input, other, *, alpha=1, out=None):
    if alpha != 1:
        other = mul(other, alpha)
    a, b = binary_operands(input, other, "sub")
    return _binary(Sub(), a, b, "sub")


def mul(input, other, *, out=None):
    a, b = binary_operands(input, other, "mul")
    return _binary(Mul(), a, b, "mul")


def div(input, other, *, rounding_mode=None, out=None):
    """True division (an integer result becomes float); 'trunc' and 'floor' round it."""
    if rounding_mode is None:
        a, b = binary_operands(input, other, "div", float_only=True)
        return _binary(Div(), a, b, "div")
    a, b = binary_operands(input, other, "div")
    xa = a.data if isinstance(a, Tensor) else a
    xb = b.data if isinstance(b, Tensor) else b
    xp = get_array_module(xa if isinstance(a, Tensor) else xb)
    if not _is_float(xa, xb):  # integers by zero: NumPy warns (torch raises), left as is
        return Tensor(xp.asarray(_rounded_div(xp, xa, xb, rounding_mode)))
    with np.errstate(all="ignore"):
        return Tensor(xp.asarray(_rounded_div(xp, xa, xb, rounding_mode)))


def _rounded_div(xp, xa, xb, rounding_mode):
    if rounding_mode == "floor":
        res = xp.floor_divide(xa, xb) if not _is_float(xa, xb) else xp.floor(xa / xb)
    elif rounding_mode == "trunc":
        res = (
            xp.trunc(xa / xb).astype((xa / xb).dtype)
            if _is_float(xa, xb)
            else (xp.trunc(xa / xb).astype(xp.result_type(xa, xb)))
        )
    else:
        raise ValueError(
            f"div: rounding_mode must be None, 'trunc' or 'floor', got {rounding_mode!r}"
        )
    return res


def _is_float(xa, xb) -> bool:
    return (
        getattr(xa, "dtype", None) is not None
        and xa.dtype.kind not in "iub"
        or (getattr(xb, "dtype", None) is not None and xb.dtype.kind not in "iub")
    )


def neg(input):
    if input.data.dtype.kind == "b":
        raise RuntimeError(
            "neg: negation, the `-` operator, on a bool tensor is not supported. "
            "Use logical_not() instead."
        )
    return Neg().apply(input)


def pow(input, exponent):  # noqa: A001 - torch name
    if _autocast.enabled:  # on torch's autocast float32 list
        return _amp.call(_amp.FP32, pow, input, exponent)
    a, b = binary_operands(input, exponent, "pow")
    if isinstance(a, Tensor) and is_scalar(exponent) and a.data.dtype.kind in "iu" and b < 0:
        raise RuntimeError("pow: Integers to negative integer powers are not allowed.")
    return _binary(Pow(), a, b, "pow")


def true_divide(input, other):
    return div(input, other)


def floor_divide(input, other):
    return div(input, other, rounding_mode="floor")


def remainder(input, other):
    """Python-style modulus (the sign of the divisor); its gradient is that of a - floor(a/b)*b."""
    q = div(input, other, rounding_mode="floor")
    return sub(input, mul(q, other))


def _inplace_operator(name: str):
    """``x += y`` is ``x.add_(y)``: the tensor itself changes, as in PyTorch."""

    def method(self, other):
        return getattr(self, name)(other)

    method.__name__ = f"__i{name[:-1]}__"
    return method


def _r(fn):
    def reflected(self, other):
        return fn(other, self)

    return reflected


METHODS = {
    "add": add,
    "sub": sub,
    "subtract": sub,
    "mul": mul,
    "multiply": mul,
    "div": div,
    "divide": div,
    "true_divide": true_divide,
    "floor_divide": floor_divide,
    "remainder": remainder,
    "neg": neg,
    "negative": neg,
    "pow": pow,
    "__add__": add,
    "__radd__": _r(add),
    "__sub__": sub,
    "__rsub__": _r(sub),
    "__mul__": mul,
    "__rmul__": _r(mul),
    "__truediv__": div,
    "__rtruediv__": _r(div),
    "__floordiv__": floor_divide,
    "__rfloordiv__": _r(floor_divide),
    "__mod__": remainder,
    "__rmod__": _r(remainder),
    "__pow__": pow,
    "__rpow__": _r(pow),
    "__neg__": neg,
    "__pos__": lambda self: self,
    "__iadd__": _inplace_operator("add_"),
    "__isub__": _inplace_operator("sub_"),
    "__imul__": _inplace_operator("mul_"),
    "__itruediv__": _inplace_operator("div_"),
    "__ifloordiv__": _inplace_operator("floor_divide_"),
    "__imod__": _inplace_operator("remainder_"),
    "__ipow__": _inplace_operator("pow_"),
}
FUNCTIONS = {
    "add": add,
    "sub": sub,
    "subtract": sub,
    "mul": mul,
    "multiply": mul,
    "div": div,
    "divide": div,
    "true_divide": true_divide,
    "floor_divide": floor_divide,
    "remainder": remainder,
    "neg": neg,
    "negative": neg,
    "pow": pow,
}
INPLACE = ("add", "sub", "mul", "div", "pow", "neg", "remainder", "floor_divide")
