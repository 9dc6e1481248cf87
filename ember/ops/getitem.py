"""``tensor[key]`` and ``tensor[key] = value`` with PyTorch's (NumPy's) indexing rules.

A key is parsed once into an :class:`IndexKey`: the NumPy index to apply plus what kind of
index it is, which decides both the forward and how the backward puts gradients back:

- ``basic``: ints, slices (any step), None, Ellipsis. The result is a view; backward assigns.
- ``rows``: one integer array on dim 0 (``x[idx]``, ``x[idx, :]``). Backward scatter-adds
  whole rows with the sorted fast path (repeated indices accumulate).
- ``mask``: one boolean mask among basic items. Positions are unique, so backward assigns.
- ``general``: anything else (several arrays, broadcasting, arrays after slices). Backward
  scatter-adds with ``add.at``.

The backward of indexing is itself a Function whose backward indexes again, so double
backward works.
"""

from __future__ import annotations

import operator
import warnings

import numpy as np

from ember.autograd.function import Function
from ember.ops import index_kernels as K
from ember.tensor.backend import device_of, get_array_module, to_backend
from ember.tensor.tensor import Tensor, writable

_BAD_INDEX = (
    "only integers, slices (`:`), ellipsis (`...`), None and long or byte Variables "
    "are valid indices (got {})"
)


class IndexKey:
    """A parsed index: ``np_key`` (what NumPy applies), ``kind``, for ``rows`` the array, and
    ``pre``: a basic index applied before ``np_key`` (ints mixed with arrays), or None."""

    __slots__ = ("np_key", "kind", "rows", "pre")

    def __init__(self, np_key: tuple, kind: str, rows=None, pre=None):
        self.np_key, self.kind, self.rows, self.pre = np_key, kind, rows, pre

    def target(self, a):
        """The array that ``np_key`` indexes: ``a`` itself or the view ``a[pre]``."""
        return a if self.pre is None else a[self.pre]


def _index_array(k, data):
    """A NumPy/CuPy array (on ``data``'s device) from a Tensor, array, list or tuple index."""
    if isinstance(k, Tensor):
        arr = k.data
    elif isinstance(k, (list, tuple)) and len(k) == 0:
        arr = np.zeros(0, dtype=np.int64)  # x[[]] selects nothing (not a float array)
    elif isinstance(k, (list, tuple, range)):
        arr = np.asarray(k)
    else:
        arr = k
    if get_array_module(arr) is not get_array_module(data):
        arr = to_backend(arr, device_of(data))
    kind = arr.dtype.kind
    if kind == "b":
        return arr
    if arr.dtype == np.uint8:
        warnings.warn(
            "indexing with dtype uint8 is deprecated, please use a dtype bool instead.",
            UserWarning,
            stacklevel=4,
        )
        return arr.astype(bool)
    if kind not in "iu":
        raise IndexError("tensors used as indices must be long, int, byte or bool tensors")
    return int(arr) if arr.ndim == 0 else arr


def _is_int(k) -> bool:
    return isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_))


def parse_key(data, key) -> IndexKey:
    """Check ``key`` against an array's shape (PyTorch's errors) and classify it."""
    if not isinstance(key, tuple):
        key = (key,)
    if len(key) <= data.ndim and all(type(k) is int or type(k) is slice for k in key):
        fast = _plain_basic(data.shape, key)  # the common x[0], x[:, 1:3]: no full parse
        if fast is not None:
            return fast
    items = []
    for k in key:
        if k is None or k is Ellipsis or isinstance(k, (bool, np.bool_, slice)):
            if isinstance(k, slice) and k.step is not None and operator.index(k.step) == 0:
                raise ValueError("slice step cannot be zero")
            items.append(bool(k) if isinstance(k, np.bool_) else k)
        elif _is_int(k):
            items.append(int(k))
        elif (
            isinstance(k, Tensor)
            and k.data.ndim == 0
            and k.data.dtype.kind in "iu"
            and (k.data.dtype != np.uint8)
        ):
            items.append(int(k.item()))  # a 0-d integer tensor acts as an int (a view)
        elif (
            isinstance(k, (Tensor, list, tuple, range))
            or hasattr(k, "__array_interface__")
            or (hasattr(k, "__cuda_array_interface__"))
        ):
            items.append(_index_array(k, data))
        elif isinstance(k, (float, np.floating)):
            raise IndexError(_BAD_INDEX.format(type(k).__name__))
        else:
            try:
                items.append(operator.index(k))
            except TypeError:
                raise IndexError(_BAD_INDEX.format(type(k).__name__)) from None

    def width(k) -> int:
        if k is None or k is Ellipsis or isinstance(k, bool):
            return 0
        if isinstance(k, (int, slice)):
            return 1
        return k.ndim if k.dtype.kind == "b" else 1

    n_ell = sum(1 for k in items if k is Ellipsis)
    if n_ell > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    used = sum(width(k) for k in items)
    shape = data.shape
    if used > data.ndim:
        if data.ndim == 0:
            raise IndexError(
                "invalid index of a 0-dim tensor. Use `tensor.item()` in Python "
                "or `tensor.item<T>()` in C++ to convert a 0-dim tensor to a "
                "number"
            )
        raise IndexError(f"too many indices for tensor of dimension {data.ndim}")

    dim = 0
    arrays = []
    for k in items:
        if k is Ellipsis:
            dim += data.ndim - used
        elif isinstance(k, bool):
            arrays.append(k)
        elif isinstance(k, int):
            size = shape[dim]
            if not -size <= k < size:
                raise IndexError(f"index {k} is out of bounds for dimension {dim} with size {size}")
            dim += 1
        elif isinstance(k, slice):
            dim += 1
        elif k is None:
            pass
        elif k.dtype.kind == "b":
            for j, s in enumerate(k.shape):
                if s != shape[dim + j]:
                    raise IndexError(
                        f"The shape of the mask {list(k.shape)} at index {j} does not match "
                        f"the shape of the indexed tensor {list(shape)} at index {dim + j}"
                    )
            arrays.append(k)
            dim += k.ndim
        else:
            K.check_bounds(k, shape[dim], dim, negative=True)
            arrays.append(k)
            dim += 1

    if not arrays:
        np_key = tuple(items) if n_ell else tuple(items) + (Ellipsis,)
        return IndexKey(np_key, "basic")
    pre = None
    if any(isinstance(k, int) and not isinstance(k, bool) for k in items):
        pre, items = _split_ints(items)
    np_key = tuple(items)
    if len(arrays) == 1:
        k = arrays[0]
        if isinstance(k, bool) or k.dtype.kind == "b":
            return IndexKey(np_key, "mask", pre=pre)
        if items[0] is k and all(i is Ellipsis or i == slice(None) for i in items[1:]):
            return IndexKey(np_key, "rows", k, pre)
    return IndexKey(np_key, "general", pre=pre)


def _plain_basic(shape: tuple, key: tuple):
    """An IndexKey for ints and slices that are in range, else None (the full parse then
    raises the proper error)."""
    for size, k in zip(shape, key):
        if type(k) is int:
            if not -size <= k < size:
                return None
        elif k.step == 0:
            return None
    return IndexKey(key + (Ellipsis,), "basic")


def _split_ints(items: list) -> tuple:
    """Ints next to index arrays: NumPy would treat them as arrays too (moving the result
    dims to the front when a slice separates them); PyTorch selects them first. So apply
    the ints (with the slices and Nones) as a basic view, then the arrays on that view."""
    pre, post = [], []
    for k in items:
        if isinstance(k, bool):
            post.append(k)
        elif isinstance(k, int):
            pre.append(k)
        elif k is Ellipsis:
            pre.append(k)
            post.append(k)
        elif k is None or isinstance(k, slice):
            pre.append(k)
            post.append(slice(None))
        else:
            pre.extend([slice(None)] * (k.ndim if k.dtype.kind == "b" else 1))
            post.append(k)
    if not any(k is Ellipsis for k in pre):
        pre.append(Ellipsis)
    return tuple(pre), post


class _Index(Function):
    def __init__(self, key: IndexKey):
        self.key = key

    def forward(self, a):
        self.shape = a.shape
        return self.key.target(a)[self.key.np_key]

    def backward(self, g):
        return IndexScatter(self.key, self.shape).apply(g)


class Slice(_Index):
    """Basic indexing: the result is a view of the input."""

    is_view = True


class Index(_Index):
    """Advanced indexing (integer arrays, masks): the result is a copy."""


class IndexScatter(Function):
    """Zeros of the indexed tensor's shape with ``g`` put back at the key (summing repeats)."""

    def __init__(self, key: IndexKey, shape: tuple):
        self.key, self.shape = key, shape

    def forward(self, g):
        xp = get_array_module(g)
        out = xp.zeros(self.shape, dtype=g.dtype)
        key = self.key
        dst = key.target(out)
        if key.kind in ("basic", "mask"):
            dst[key.np_key] = g
        elif key.kind == "rows":
            rows = K.wrap_negative(key.rows, dst.shape[0])
            K.add_rows(dst, rows.reshape(-1), g.reshape((rows.size,) + dst.shape[1:]))
        else:
            K.add_at(dst, key.np_key, g)
        return out

    def backward(self, gg):
        return index_with_key(gg, self.key)


def index_with_key(t: Tensor, key: IndexKey) -> Tensor:
    return (Slice(key) if key.kind == "basic" else Index(key)).apply(t)


def getitem(self: Tensor, key) -> Tensor:
    return index_with_key(self, parse_key(self.data, key))


# --------------------------------------------------------------------------- setitem
class IndexPut(Function):
    """``out = a.clone(); out[key] = v``: the overwritten part of ``a`` gets zero gradient and
    ``v`` gets the gradient of every position it was written to."""

    def __init__(self, key: IndexKey):
        self.key = key

    def forward(self, a, v):
        self.vshape = getattr(v, "shape", ())
        out = a.copy()
        assign(out, self.key, v)
        return out

    def backward(self, g):
        ng = self.needs_input_grad
        ga = IndexPut(self.key).apply(g, 0) if ng[0] else None
        gv = None
        if ng[1]:
            from ember.ops.reduction import sum_to_shape
            from ember.ops.shape import reshape

            gv = index_with_key(g, self.key)
            extra = len(self.vshape) - gv.data.ndim
            if extra > 0:  # a value with leading size-1 dims beyond the target's rank
                gv = reshape(gv, (1,) * extra + tuple(gv.data.shape))
            gv = sum_to_shape(gv, tuple(self.vshape))
        return ga, gv


def assign(out, key: IndexKey, v) -> None:
    """``out[key] = v`` with PyTorch's errors for a value that does not broadcast."""
    try:
        key.target(out)[key.np_key] = v
    except ValueError as exc:
        if not writable(out):
            raise RuntimeError(
                "setitem: unsupported operation: the tensor's memory is shared by several "
                "elements (it is an expanded view); clone() it before writing in place"
            ) from None
        target = key.target(out)[key.np_key].shape
        vshape = getattr(v, "shape", ())
        raise RuntimeError(
            f"shape mismatch: value tensor of shape {list(vshape)} cannot be "
            f"broadcast to indexing result of shape {list(target)}"
        ) from exc


def setitem(self: Tensor, key, value) -> None:
    from ember.ops.inplace import _recording, apply_inplace

    key = parse_key(self.data, key)
    xp = get_array_module(self.data)
    if not isinstance(value, Tensor) and not isinstance(value, (int, float, bool, np.generic)):
        value = Tensor(
            to_backend(
                np.asarray(value) if isinstance(value, (list, tuple)) else value, self.device
            )
        )
    if isinstance(value, Tensor) and type(value.data) is not type(self.data):
        if value.data.ndim:
            raise RuntimeError(f"setitem: expected the value on {self.device}, got {value.device}")
        value = value.item()
    if not _recording(self, (value,)):
        v = value.data if isinstance(value, Tensor) else value
        assign(self.data, key, v)
        self._vc[0] += 1
        return
    if not isinstance(value, Tensor):
        value = Tensor(xp.asarray(value, dtype=self.data.dtype))
    elif value.data.dtype != self.data.dtype:
        from ember.ops.conversion import cast_to

        value = cast_to(value, self.dtype)
    apply_inplace(self, lambda t, v: IndexPut(key).apply(t, v), value, op="setitem")


def iterate(self: Tensor):
    """Iterate over dim 0, each row a view (as ``tensor.unbind(0)``)."""
    if self.data.ndim == 0:
        raise TypeError("iteration over a 0-d tensor")
    return iter(
        [Slice(IndexKey((i, Ellipsis), "basic")).apply(self) for i in range(self.data.shape[0])]
    )
