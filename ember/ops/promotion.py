"""Operand preparation for elementwise ops: PyTorch promotion, scalars, and device checks."""

from __future__ import annotations

import numbers

import numpy as np

from ember.tensor import dtypes
from ember.tensor.tensor import Tensor

_SCALARS = (bool, int, float, np.bool_, np.integer, np.floating)


def is_scalar(x) -> bool:
    return isinstance(x, _SCALARS)


def as_tensor_operand(x, op: str) -> Tensor:
    """Turn an operand that is not a Python scalar (an ndarray, a list) into a Tensor."""
    if isinstance(x, Tensor):
        return x
    if isinstance(x, np.ndarray):
        return Tensor(x)
    if isinstance(x, (list, tuple)):
        from ember.tensor.creation import tensor

        return tensor(x)
    if hasattr(x, "__cuda_array_interface__"):
        return Tensor(x)
    raise TypeError(f"{op}: unsupported operand type {type(x).__name__}")


def check_same_device(a: Tensor, b: Tensor, op: str) -> None:
    """Raise the clear error for tensors on two devices (a CPU 0-d tensor may join any)."""
    ta = type(a.data)
    if ta is type(b.data) and ta is np.ndarray:
        return
    da, db = a.device, b.device
    if da == db or (da.type == "cpu" and not a.data.ndim) or (db.type == "cpu" and not b.data.ndim):
        return
    raise RuntimeError(f"{op}: expected all tensors on the same device, got {da} and {db}")


def same_device(a: Tensor, b: Tensor, op: str) -> tuple[Tensor, Tensor]:
    """The pair on one device: a CPU 0-d tensor moves to the other's device, as PyTorch
    lets CPU scalars mix with CUDA tensors; any other mix is an error."""
    if type(a.data) is type(b.data) and a.device == b.device:
        return a, b
    check_same_device(a, b, op)
    from ember.ops.conversion import to

    if a.device.type == "cpu" and not a.data.ndim:
        return to(a, b.device), b
    return a, to(b, a.device)


def cast(t: Tensor, d: dtypes.dtype) -> Tensor:
    if t.data.dtype == d.np:
        return t
    from ember.ops.conversion import Cast

    return Cast(d).apply(t)


def binary_operands(a, b, op: str, float_only: bool = False):
    """Promote ``a`` and ``b`` to one dtype, as PyTorch does.

    Returns the pair with every Tensor cast to the result dtype and every Python scalar turned
    into a NumPy scalar of that dtype (so NumPy keeps the dtype, bfloat16 included). With
    ``float_only`` (true division, pow with a float exponent), an integer result becomes the
    default float dtype.
    """
    ta = isinstance(a, Tensor)
    tb = isinstance(b, Tensor)
    if ta and tb:
        if a.data.dtype == b.data.dtype and not (
            float_only and a.data.dtype not in dtypes.FLOATING_NP
        ):
            if type(a.data) is not type(b.data):
                a, b = same_device(a, b, op)
            return a, b
        if type(a.data) is not type(b.data):
            a, b = same_device(a, b, op)
        da, db = a.dtype, b.dtype
        dims, zero = [], []
        (dims if a.data.ndim else zero).append(da)
        (dims if b.data.ndim else zero).append(db)
        rd = dtypes.result_type(dims, zero, [])
        if float_only and not rd.is_floating_point:
            rd = dtypes.get_default_dtype()
        return cast(a, rd), cast(b, rd)
    if ta:
        if not is_scalar(b):
            return binary_operands(a, as_tensor_operand(b, op), op, float_only)
        rd = _with_scalar(a, b, float_only)
        return cast(a, rd), rd.np.type(b)
    if tb:
        if not is_scalar(a):
            return binary_operands(as_tensor_operand(a, op), b, op, float_only)
        rd = _with_scalar(b, a, float_only)
        return rd.np.type(a), cast(b, rd)
    raise TypeError(f"{op}: at least one operand must be a Tensor")


def _with_scalar(t: Tensor, s, float_only: bool) -> dtypes.dtype:
    d = dtypes.from_numpy_dtype(t.data.dtype)
    cat = dtypes.scalar_category(s)
    if cat > d.category:
        d = dtypes.default_dtype_for_category(cat)
    if float_only and not d.is_floating_point:
        d = dtypes.get_default_dtype()
    return d


def is_number(x) -> bool:
    return isinstance(x, numbers.Number)
