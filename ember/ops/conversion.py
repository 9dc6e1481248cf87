"""Dtype and device conversion, clone and contiguous: ``to``, ``float()``, ``cuda()``..."""

from __future__ import annotations

from ember.autograd.function import Function
from ember.tensor import dtypes
from ember.tensor.backend import device_of, get_array_module, pin_array, to_backend
from ember.tensor.backend import is_pinned as _is_pinned
from ember.tensor.device import to_device
from ember.tensor.tensor import Tensor


class Cast(Function):
    def __init__(self, dtype: dtypes.dtype):
        self.dtype = dtype

    def forward(self, a):
        self.src = a.dtype
        return a.astype(self.dtype.np)

    def backward(self, g):
        return cast_to(g, dtypes.from_numpy_dtype(self.src))


class ToDevice(Function):
    def __init__(self, device, non_blocking: bool = False):
        self.device, self.non_blocking = device, non_blocking

    def forward(self, a):
        self.src = device_of(a)
        return to_backend(a, self.device, self.non_blocking)

    def backward(self, g):
        return ToDevice(self.src).apply(g)


class Clone(Function):
    def forward(self, a):
        return a.copy()

    def backward(self, g):
        return g


class Contiguous(Function):
    def forward(self, a):
        return get_array_module(a).ascontiguousarray(a)

    def backward(self, g):
        return g


def cast_to(t: Tensor, d) -> Tensor:
    d = dtypes.to_dtype(d)
    if t.data.dtype == d.np:
        return t
    return Cast(d).apply(t)


def clone(t: Tensor, *, memory_format=None) -> Tensor:
    return Clone().apply(t)


def contiguous(t: Tensor, memory_format=None) -> Tensor:
    if t.data.flags.c_contiguous:
        return t
    return Contiguous().apply(t)


def to(t: Tensor, *args, dtype=None, device=None, copy: bool = False, non_blocking=False):
    """``t.to(dtype)``, ``t.to(device)``, ``t.to(device, dtype)``, ``t.to(other_tensor)``."""
    for a in args:
        if isinstance(a, Tensor):
            dtype, device = a.dtype, a.device
        elif isinstance(a, dtypes.dtype) or a in (float, int, bool):
            dtype = a
        elif isinstance(a, str) and a.removeprefix("ember.").removeprefix("torch.") in (
            d.name for d in dtypes.ALL_DTYPES
        ):
            dtype = a
        else:
            device = a
    out = t
    if device is not None:
        dev, cur = to_device(device), device_of(t.data)
        if dev.type != cur.type or (dev.index or 0) != (cur.index or 0):  # "cuda" is cuda:0
            out = ToDevice(dev, non_blocking).apply(out)
    if dtype is not None:
        out = cast_to(out, dtype)
    if copy and out is t:
        out = clone(t)
    return out


def _caster(d):
    def method(self, memory_format=None):
        return cast_to(self, d)

    method.__name__ = d.name
    method.__doc__ = f"Cast to {d!r}."
    return method


def type_as(t: Tensor, other: Tensor) -> Tensor:
    return cast_to(t, other.dtype)


def cpu(t: Tensor) -> Tensor:
    return to(t, "cpu")


def cuda(t: Tensor, device=None, non_blocking: bool = False) -> Tensor:
    return to(t, "cuda" if device is None else to_device(device), non_blocking=non_blocking)


def pin_memory(t: Tensor, device=None) -> Tensor:
    """A copy in page-locked host memory (``non_blocking`` uploads from it are asynchronous);
    the tensor itself when it is pinned already, or when CUDA is unavailable."""
    if t.device.type != "cpu":
        raise RuntimeError(f"pin_memory: cannot pin a tensor on {t.device}, only a CPU one")
    arr = pin_array(t.data)
    if arr is t.data:
        return t
    out = Tensor(arr)
    if t.requires_grad:
        out.requires_grad_(True)
    return out


def is_pinned(t: Tensor, device=None) -> bool:
    return _is_pinned(t.data)


def _tensor_type(self, dtype=None, non_blocking=False):
    if dtype is None:
        return f"ember.{self.dtype.name}"
    return cast_to(self, dtype)


METHODS = {
    "to": to,
    "clone": clone,
    "contiguous": contiguous,
    "type_as": type_as,
    "cpu": cpu,
    "cuda": cuda,
    "pin_memory": pin_memory,
    "is_pinned": is_pinned,
    "type": _tensor_type,
    "float": _caster(dtypes.float32),
    "double": _caster(dtypes.float64),
    "half": _caster(dtypes.float16),
    "bfloat16": _caster(dtypes.bfloat16),
    "long": _caster(dtypes.int64),
    "int": _caster(dtypes.int32),
    "short": _caster(dtypes.int16),
    "char": _caster(dtypes.int8),
    "byte": _caster(dtypes.uint8),
    "bool": _caster(dtypes.bool_),
}
FUNCTIONS = {"clone": clone}
