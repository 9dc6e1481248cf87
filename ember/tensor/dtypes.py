"""Ember dtypes and PyTorch's type-promotion rules.

An Ember dtype is a thin named wrapper around a NumPy dtype (bfloat16 comes from ml_dtypes), so
that the public surface prints ``ember.float32`` and promotion can follow PyTorch rather than
NumPy: an int tensor plus a Python float is float32, never float64.
"""

from __future__ import annotations

import builtins

import ml_dtypes
import numpy as np


class dtype:  # noqa: N801 - mirrors torch.dtype
    """A tensor element type. Compare with ``is`` or ``==``; each dtype is a singleton."""

    __slots__ = ("name", "np", "is_floating_point", "is_signed", "itemsize", "category")

    def __init__(self, name: str, np_type, category: int, is_signed: bool):
        self.name = name
        self.np = np.dtype(np_type)
        self.category = category  # 0 bool, 1 integer, 2 floating: PyTorch's promotion categories
        self.is_floating_point = category == 2
        self.is_signed = is_signed
        self.itemsize = self.np.itemsize

    def __repr__(self) -> str:
        return f"ember.{self.name}"

    def __reduce__(self):  # copy/deepcopy return the singleton
        return (_by_name, (self.name,))

    @property
    def is_complex(self) -> bool:
        return False


bool_ = dtype("bool", np.bool_, 0, False)
uint8 = dtype("uint8", np.uint8, 1, False)
int8 = dtype("int8", np.int8, 1, True)
int16 = dtype("int16", np.int16, 1, True)
int32 = dtype("int32", np.int32, 1, True)
int64 = dtype("int64", np.int64, 1, True)
float16 = dtype("float16", np.float16, 2, True)
bfloat16 = dtype("bfloat16", ml_dtypes.bfloat16, 2, True)
float32 = dtype("float32", np.float32, 2, True)
float64 = dtype("float64", np.float64, 2, True)

half, float, double = float16, float32, float64  # noqa: A001 - torch aliases
short, int, long = int16, int32, int64  # noqa: A001

ALL_DTYPES = (bool_, uint8, int8, int16, int32, int64, float16, bfloat16, float32, float64)
FLOATING_NP = frozenset(d.np for d in ALL_DTYPES if d.is_floating_point)

_BY_NP = {d.np: d for d in ALL_DTYPES}
_BY_NAME = {d.name: d for d in ALL_DTYPES}
_BY_NAME.update(half=float16, float=float32, double=float64, short=int16, int=int32, long=int64)

_default_float = float32


def _by_name(name: str) -> dtype:
    return _BY_NAME[name]


def get_default_dtype() -> dtype:
    return _default_float


def set_default_dtype(d) -> None:
    global _default_float
    d = to_dtype(d)
    if not d.is_floating_point:
        raise TypeError(f"set_default_dtype: only floating-point types are allowed, got {d}")
    _default_float = d


def from_numpy_dtype(np_dtype) -> dtype:
    """The Ember dtype of a NumPy dtype; NumPy types Ember lacks are a TypeError."""
    try:
        return _BY_NP[np_dtype]
    except KeyError:
        try:
            return _BY_NP[np.dtype(np_dtype)]
        except (KeyError, TypeError):
            raise TypeError(
                f"unsupported array dtype {np_dtype!r}: Ember supports "
                f"{', '.join(d.name for d in ALL_DTYPES)}"
            ) from None


def to_dtype(d) -> dtype:
    """Accept an Ember dtype, a NumPy dtype or type, a name, or a Python type."""
    if type(d) is dtype:
        return d
    if d is builtins.float:
        return float64
    if d is builtins.int:
        return int64
    if d is builtins.bool:
        return bool_
    if isinstance(d, str):
        name = d.removeprefix("ember.").removeprefix("torch.")
        if name in _BY_NAME:
            return _BY_NAME[name]
        raise TypeError(f"unknown dtype {d!r}")
    return from_numpy_dtype(d)


def promote_types(a: dtype, b: dtype) -> dtype:
    """PyTorch's promote_types: the higher category wins; within a category the wider type."""
    if a is b:
        return a
    if a.category != b.category:
        return a if a.category > b.category else b
    if a.category == 2:
        if {a, b} == {float16, bfloat16}:
            return float32
        return a if a.itemsize >= b.itemsize else b
    return from_numpy_dtype(np.promote_types(a.np, b.np))


def scalar_category(value) -> int:
    t = type(value)
    if t is builtins.bool or t is np.bool_:
        return 0
    if t is builtins.int or isinstance(value, np.integer):
        return 1
    if t is builtins.float or isinstance(value, np.floating):
        return 2
    raise TypeError(f"unsupported scalar type {t.__name__}")


def default_dtype_for_category(category: int) -> dtype:
    return (bool_, int64, _default_float)[category]


def result_type(dims: list, zero_dims: list, scalars: list) -> dtype:
    """Promote as PyTorch does: dimensioned tensors, then 0-d tensors, then Python scalars.

    A lower-priority group only decides the dtype when its category is higher than every
    higher-priority group's (an int tensor plus 2.5 is the default float, float16 plus a
    float64 0-d tensor stays float16).
    """
    groups = []
    for members in (dims, zero_dims):
        if members:
            out = members[0]
            for d in members[1:]:
                out = promote_types(out, d)
            groups.append(out)
    best = None
    for g in groups:
        if best is None or g.category > best.category:
            best = g
    if scalars:
        cat = max(scalar_category(s) for s in scalars)
        if best is None or cat > best.category:
            best = default_dtype_for_category(cat)
    if best is None:
        raise TypeError("result_type: no operands")
    return best
