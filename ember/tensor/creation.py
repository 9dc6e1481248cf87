"""Creation functions: tensor, as_tensor, from_numpy, zeros/ones/full/empty (+ _like),
arange, linspace, eye. Each takes ``dtype=``, ``device=`` and ``requires_grad=``."""

from __future__ import annotations

import math

import numpy as np

from ember.tensor import dtypes
from ember.tensor.backend import to_backend, xp_for
from ember.tensor.device import default_or, to_device
from ember.tensor.tensor import Tensor


def size_args(size) -> tuple:
    """``f(2, 3)``, ``f((2, 3))``, ``f([2, 3])`` and ``f(ember.Size)`` all mean shape (2, 3)."""
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = size[0]
    out = []
    for s in size:
        if isinstance(s, Tensor):
            s = int(s)
        if not isinstance(s, (int, np.integer)):
            raise TypeError(
                f"size must be a sequence of ints, got {type(s).__name__} in {tuple(size)!r}"
            )
        if s < 0:
            raise RuntimeError(f"Trying to create tensor with negative dimension {s}: {list(size)}")
        out.append(int(s))
    return tuple(out)


def finish(arr, device, requires_grad: bool) -> Tensor:
    """Move to the device, and set requires_grad (floating point only, as in PyTorch)."""
    device = default_or(device)
    if device is not None:
        arr = to_backend(arr, to_device(device))
    t = Tensor(arr)
    if requires_grad:
        t.requires_grad_(True)
    return t


def _infer_array(data) -> np.ndarray:
    """PyTorch's dtype inference for Python data: bool, int64, or the default float."""
    if isinstance(data, Tensor):
        return data.data
    if isinstance(data, np.ndarray) or _is_device_array(data):
        return data
    if isinstance(data, (list, tuple)) and any(isinstance(x, Tensor) for x in _flat(data)):
        data = _tensors_to_values(data)
    arr = np.array(data)
    if arr.dtype == object:
        raise TypeError(
            f"tensor: could not infer dtype of {type(data).__name__} "
            "(ragged nested sequences or unsupported element types)"
        )
    if arr.dtype.kind == "f":
        if isinstance(data, np.generic):
            return arr
        return arr.astype(dtypes.get_default_dtype().np)
    if arr.dtype.kind in "iu":
        if isinstance(data, np.generic):
            return arr
        return arr.astype(np.int64)
    if arr.dtype.kind == "b":
        return arr
    if arr.dtype.kind == "U":
        raise TypeError("tensor: strings are not supported")
    return arr


def _is_device_array(data) -> bool:
    """A CuPy array (it must never go through ``np.array``: CuPy refuses the implicit copy)."""
    return not isinstance(data, np.ndarray) and hasattr(data, "__cuda_array_interface__")


def _flat(data):
    for x in data:
        if isinstance(x, (list, tuple)):
            yield from _flat(x)
        else:
            yield x


def _tensors_to_values(data):
    if isinstance(data, Tensor):
        return data.tolist() if data.data.ndim else data.item()
    if isinstance(data, (list, tuple)):
        return [_tensors_to_values(x) for x in data]
    return data


def tensor(data, *, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """A new tensor that copies ``data`` (a list, a number, an array or a tensor)."""
    is_array = isinstance(data, (Tensor, np.ndarray)) or _is_device_array(data)
    if dtype is not None and not is_array:
        try:  # straight to the requested dtype: no detour through the default float
            arr = np.array(
                data, dtype=np.float64 if dtypes.to_dtype(dtype).is_floating_point else None
            )
        except (TypeError, ValueError):
            arr = _infer_array(data)
        if arr.dtype == object:
            arr = _infer_array(data)
    else:
        arr = _infer_array(data)
    if is_array:
        arr = arr.copy()
    if dtype is not None:
        arr = arr.astype(dtypes.to_dtype(dtype).np, copy=False)
    else:
        dtypes.from_numpy_dtype(arr.dtype)  # unsupported dtypes fail here, clearly
    if device is None and isinstance(data, Tensor):
        device = data.device
    return finish(arr, device, requires_grad)


def as_tensor(data, dtype=None, device=None) -> Tensor:
    """Like ``tensor`` but shares memory with ``data`` when dtype and device already match."""
    if isinstance(data, Tensor):
        out = data
        if dtype is not None or device is not None:
            out = data.to(device=device, dtype=dtype)
        return out
    arr = data if isinstance(data, np.ndarray) or _is_device_array(data) else _infer_array(data)
    if dtype is not None:
        arr = arr.astype(dtypes.to_dtype(dtype).np, copy=False)
    dtypes.from_numpy_dtype(arr.dtype)
    return finish(arr, device, False)


def from_numpy(arr: np.ndarray) -> Tensor:
    """A tensor that shares memory with the NumPy array (modifying one modifies the other)."""
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"from_numpy: expected np.ndarray (got {type(arr).__name__})")
    dtypes.from_numpy_dtype(arr.dtype)
    return Tensor(arr)


def _fill(shape, value, dtype, device, requires_grad, fill_kind: str) -> Tensor:
    d = dtypes.get_default_dtype() if dtype is None else dtypes.to_dtype(dtype)
    dev = to_device(default_or(device))
    xp = xp_for(dev)
    make = {"zeros": xp.zeros, "ones": xp.ones, "empty": xp.empty}.get(fill_kind)
    if dev.type == "cpu":
        arr = make(shape, d.np) if make else xp.full(shape, value, d.np)
    else:
        with xp.cuda.Device(dev.index or 0):  # on that GPU, whichever is current
            arr = make(shape, d.np) if make else xp.full(shape, value, d.np)
    t = Tensor(arr)
    if requires_grad:
        t.requires_grad_(True)
    return t


def zeros(*size, dtype=None, device=None, requires_grad=False) -> Tensor:
    return _fill(size_args(size), 0, dtype, device, requires_grad, "zeros")


def ones(*size, dtype=None, device=None, requires_grad=False) -> Tensor:
    return _fill(size_args(size), 1, dtype, device, requires_grad, "ones")


def empty(*size, dtype=None, device=None, requires_grad=False) -> Tensor:
    return _fill(size_args(size), 0, dtype, device, requires_grad, "empty")


def full(size, fill_value, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    if isinstance(fill_value, Tensor):
        fill_value = fill_value.item()
    if dtype is None:
        dtype = dtypes.default_dtype_for_category(dtypes.scalar_category(fill_value))
    return _fill(
        size_args((size,)) if not isinstance(size, int) else (size,),
        fill_value,
        dtype,
        device,
        requires_grad,
        "full",
    )


def _like(t: Tensor, dtype, device):
    return (t.dtype if dtype is None else dtype), (t.device if device is None else device)


def zeros_like(t: Tensor, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    d, dev = _like(t, dtype, device)
    return _fill(t.data.shape, 0, d, dev, requires_grad, "zeros")


def ones_like(t: Tensor, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    d, dev = _like(t, dtype, device)
    return _fill(t.data.shape, 1, d, dev, requires_grad, "ones")


def empty_like(t: Tensor, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    d, dev = _like(t, dtype, device)
    return _fill(t.data.shape, 0, d, dev, requires_grad, "empty")


def full_like(t: Tensor, fill_value, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    d, dev = _like(t, dtype, device)
    return _fill(t.data.shape, fill_value, d, dev, requires_grad, "full")


def arange(start, end=None, step=1, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    """[start, end) in steps; the dtype is int64 for ints and the default float otherwise."""
    if end is None:
        start, end = 0, start
    vals = [v.item() if isinstance(v, Tensor) else v for v in (start, end, step)]
    start, end, step = vals
    if step == 0:
        raise RuntimeError("arange: step must be nonzero")
    if (end - start) * step < 0:
        raise RuntimeError(
            f"arange: upper bound and larger bound inconsistent with step sign "
            f"(start={start}, end={end}, step={step})"
        )
    if dtype is None:
        is_int = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in vals)
        dtype = dtypes.int64 if is_int else dtypes.get_default_dtype()
    d = dtypes.to_dtype(dtype)
    n = max(int(math.ceil((end - start) / step)), 0)
    arr = (
        (np.arange(n, dtype=np.float64) * step + start).astype(d.np)
        if d.is_floating_point
        else np.arange(start, start + n * step, step)[:n].astype(d.np)
    )
    return finish(arr, device, requires_grad)


def linspace(start, end, steps: int, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    d = dtypes.get_default_dtype() if dtype is None else dtypes.to_dtype(dtype)
    if steps < 0:
        raise RuntimeError(f"linspace: number of steps must be non-negative, got {steps}")
    arr = np.linspace(start, end, int(steps)).astype(d.np)
    return finish(arr, device, requires_grad)


def logspace(
    start, end, steps: int, base: float = 10.0, *, dtype=None, device=None, requires_grad=False
) -> Tensor:
    d = dtypes.get_default_dtype() if dtype is None else dtypes.to_dtype(dtype)
    arr = np.logspace(start, end, int(steps), base=base).astype(d.np)
    return finish(arr, device, requires_grad)


def eye(n: int, m: int | None = None, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    d = dtypes.get_default_dtype() if dtype is None else dtypes.to_dtype(dtype)
    arr = np.eye(n, n if m is None else m, dtype=d.np)
    return finish(arr, device, requires_grad)
