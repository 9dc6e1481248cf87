"""Comparison and logic: eq/ne/lt/le/gt/ge and their operators, isnan/isinf/isfinite,
logical_and/or/xor/not, the bitwise operators (``& | ^ ~``), isclose, allclose and equal.

Outputs are bool (or integer for bitwise ops on integers) and never carry a gradient, so no
graph node is recorded: the result is a plain Tensor. Operands are promoted as torch does
before comparing (``int_tensor == 2.5`` compares in float). The comparison operators return
NotImplemented for operands that are not numbers, arrays or Tensors, so ``t == None`` is False
and ``t < None`` is Python's TypeError; ``Tensor.__hash__`` stays ``object.__hash__``.
"""

from __future__ import annotations

import numpy as np

from ember.autograd.function import as_array
from ember.ops.pointwise import broadcast_error, check_tensor, quiet
from ember.ops.promotion import binary_operands, is_scalar
from ember.tensor import dtypes
from ember.tensor.backend import get_array_module
from ember.tensor.tensor import Tensor


def _raw(v):
    return v.data if isinstance(v, Tensor) else v


def _xp(a, b):
    return get_array_module(a.data if isinstance(a, Tensor) else b.data)


def _apply(ufunc: str, op: str, a, b) -> Tensor:
    """``xp.<ufunc>(a, b)`` on promoted operands, with torch's broadcast error."""
    xp = _xp(a, b)
    try:
        with quiet():
            res = getattr(xp, ufunc)(_raw(a), _raw(b))
    except ValueError:
        raise broadcast_error(op, np.shape(_raw(a)), np.shape(_raw(b))) from None
    return Tensor(as_array(res))


def _comparison(name: str, ufunc: str):
    def op(input, other):
        a, b = binary_operands(input, other, name)
        return _apply(ufunc, name, a, b)

    op.__name__ = name
    op.__doc__ = f"Elementwise ``{ufunc}`` as a bool Tensor (broadcast, promoted as torch)."
    return op


eq = _comparison("eq", "equal")
ne = _comparison("ne", "not_equal")
lt = _comparison("lt", "less")
le = _comparison("le", "less_equal")
gt = _comparison("gt", "greater")
ge = _comparison("ge", "greater_equal")


def _comparable(other) -> bool:
    return (
        isinstance(other, (Tensor, np.ndarray))
        or is_scalar(other)
        or hasattr(other, "__cuda_array_interface__")
    )


def _operator(fn):
    """The ``==``-style method: NotImplemented for other types, so Python decides."""

    def method(self, other):
        if not _comparable(other):
            return NotImplemented
        return fn(self, other)

    method.__name__ = f"__{fn.__name__}__"
    return method


# ------------------------------------------------------------------- float predicates
def _predicate(name: str, float_fn, int_value: bool):
    def op(input):
        check_tensor(input, name)
        x = input.data
        xp = get_array_module(x)
        if x.dtype not in dtypes.FLOATING_NP:  # integers are always finite
            return Tensor(xp.full(x.shape, int_value, dtype=bool))
        return Tensor(as_array(float_fn(xp, x)))

    op.__name__ = name
    return op


isnan = _predicate("isnan", lambda xp, x: xp.isnan(x), False)
isinf = _predicate("isinf", lambda xp, x: xp.isinf(x), False)
isfinite = _predicate("isfinite", lambda xp, x: xp.isfinite(x), True)
isposinf = _predicate("isposinf", lambda xp, x: x == xp.inf, False)
isneginf = _predicate("isneginf", lambda xp, x: x == -xp.inf, False)


# ----------------------------------------------------------------------------- logic
def _logical_operand(v, op: str):
    if isinstance(v, Tensor):
        return v.data
    if isinstance(v, np.ndarray) or is_scalar(v) or hasattr(v, "__cuda_array_interface__"):
        return v
    raise TypeError(f"{op}(): argument 'other' must be Tensor, not {type(v).__name__}")


def _logical(name: str, ufunc: str):
    def op(input, other):
        check_tensor(input, name)
        b = _logical_operand(other, name)
        xp = get_array_module(input.data)
        try:
            res = getattr(xp, ufunc)(input.data, b)
        except ValueError:
            raise broadcast_error(name, input.data.shape, np.shape(b)) from None
        return Tensor(as_array(res))

    op.__name__ = name
    op.__doc__ = f"Elementwise ``{ufunc}`` of the truth values (any dtype in, bool out)."
    return op


logical_and = _logical("logical_and", "logical_and")
logical_or = _logical("logical_or", "logical_or")
logical_xor = _logical("logical_xor", "logical_xor")


def logical_not(input):
    check_tensor(input, "logical_not")
    return Tensor(as_array(get_array_module(input.data).logical_not(input.data)))


# --------------------------------------------------------------------------- bitwise
def _check_integral(t, op: str) -> None:
    if isinstance(t, Tensor) and t.data.dtype in dtypes.FLOATING_NP:
        raise NotImplementedError(
            f"{op}: not implemented for '{t.dtype.name}' (bool and integer tensors only)"
        )
    if isinstance(t, (float, np.floating)):
        raise NotImplementedError(f"{op}: not implemented for a float operand")


def _bitwise(name: str, ufunc: str):
    def op(input, other):
        a, b = binary_operands(input, other, name)
        _check_integral(a, name)
        _check_integral(b, name)
        return _apply(ufunc, name, a, b)

    op.__name__ = name
    op.__doc__ = f"Elementwise ``{ufunc}`` of bool or integer tensors."
    return op


bitwise_and = _bitwise("bitwise_and", "bitwise_and")
bitwise_or = _bitwise("bitwise_or", "bitwise_or")
bitwise_xor = _bitwise("bitwise_xor", "bitwise_xor")


def bitwise_not(input):
    """``~x``: logical not for bool, two's complement for integers."""
    check_tensor(input, "bitwise_not")
    _check_integral(input, "bitwise_not")
    return Tensor(as_array(get_array_module(input.data).invert(input.data)))


def _reflected(fn):
    def method(self, other):
        if not _comparable(other):
            return NotImplemented
        return fn(other, self)

    return method


def _in_place(name: str):
    def method(self, other):
        return getattr(self, name + "_")(other)

    return method


# ---------------------------------------------------------------------- closeness
def isclose(input, other, rtol: float = 1e-05, atol: float = 1e-08, equal_nan: bool = False):
    """|input - other| <= atol + rtol * |other|, elementwise (inf equals inf)."""
    check_tensor(input, "isclose")
    check_tensor(other, "isclose")
    if input.dtype is not other.dtype:
        raise RuntimeError(f"isclose: {input.dtype.name} did not match {other.dtype.name}")
    if rtol < 0 or atol < 0:
        raise RuntimeError(
            f"isclose: rtol and atol must be greater than or equal to zero, but "
            f"got rtol={rtol} and atol={atol}"
        )
    a, b = input.data, other.data
    xp = get_array_module(a)
    try:
        close = xp.equal(a, b)
    except ValueError:
        raise broadcast_error("isclose", a.shape, b.shape) from None
    if equal_nan and a.dtype in dtypes.FLOATING_NP:
        close |= xp.isnan(a) & xp.isnan(b)
    if rtol or atol:
        if a.dtype not in dtypes.FLOATING_NP:
            a = a.astype(dtypes.get_default_dtype().np)
            b = b.astype(a.dtype)
        with quiet():
            allowed = xp.abs(b * b.dtype.type(rtol))
            allowed += b.dtype.type(atol)
            actual = xp.abs(a - b)
            close |= xp.isfinite(actual) & (actual <= allowed)
    return Tensor(as_array(close))


def allclose(
    input, other, rtol: float = 1e-05, atol: float = 1e-08, equal_nan: bool = False
) -> bool:
    return bool(isclose(input, other, rtol, atol, equal_nan).data.all())


def equal(input, other) -> bool:
    """True when both have the same shape and the same values (torch.equal)."""
    check_tensor(input, "equal")
    check_tensor(other, "equal")
    if tuple(input.data.shape) != tuple(other.data.shape):
        return False
    a, b = binary_operands(input, other, "equal")
    return bool(get_array_module(a.data).array_equal(a.data, b.data))


FUNCTIONS = {
    "eq": eq,
    "ne": ne,
    "lt": lt,
    "le": le,
    "gt": gt,
    "ge": ge,
    "not_equal": ne,
    "less": lt,
    "less_equal": le,
    "greater": gt,
    "greater_equal": ge,
    "isnan": isnan,
    "isinf": isinf,
    "isfinite": isfinite,
    "isposinf": isposinf,
    "isneginf": isneginf,
    "logical_and": logical_and,
    "logical_or": logical_or,
    "logical_xor": logical_xor,
    "logical_not": logical_not,
    "bitwise_and": bitwise_and,
    "bitwise_or": bitwise_or,
    "bitwise_xor": bitwise_xor,
    "bitwise_not": bitwise_not,
    "isclose": isclose,
    "allclose": allclose,
    "equal": equal,
}
METHODS = {
    **FUNCTIONS,
    "__eq__": _operator(eq),
    "__ne__": _operator(ne),
    "__lt__": _operator(lt),
    "__le__": _operator(le),
    "__gt__": _operator(gt),
    "__ge__": _operator(ge),
    "__and__": _operator(bitwise_and),
    "__or__": _operator(bitwise_or),
    "__xor__": _operator(bitwise_xor),
    "__rand__": _reflected(bitwise_and),
    "__ror__": _reflected(bitwise_or),
    "__rxor__": _reflected(bitwise_xor),
    "__invert__": bitwise_not,
    "__iand__": _in_place("bitwise_and"),
    "__ior__": _in_place("bitwise_or"),
    "__ixor__": _in_place("bitwise_xor"),
}
INPLACE = (
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "logical_and",
    "logical_or",
    "logical_xor",
    "logical_not",
    "bitwise_and",
    "bitwise_or",
    "bitwise_xor",
    "bitwise_not",
)
