"""Index-driven reads and writes along one dim: gather, scatter(_add), index_select, index_add,
index_fill, masked_fill, masked_select, take, take_along_dim, nonzero and one_hot.

Each read's backward is the matching scatter-add (and each scatter-add's backward is the
read), so gradients with repeated indices accumulate and double backward works.
"""

from __future__ import annotations

import numpy as np

from ember.autograd import autocast_state as _amp
from ember.autograd.autocast_state import state as _autocast
from ember.autograd.function import Function
from ember.ops import index_kernels as K
from ember.ops.dims import normalize_dim
from ember.ops.getitem import Index, IndexKey, IndexScatter
from ember.tensor import dtypes
from ember.tensor.backend import get_array_module
from ember.tensor.tensor import Tensor

_INT_INDEX = ("int32", "int64")


def _index(index, op: str, allowed=_INT_INDEX):
    """The raw array of an index tensor, with PyTorch's dtype check."""
    if not isinstance(index, Tensor):
        from ember.tensor.creation import as_tensor

        index = as_tensor(index)
    if index.data.dtype.name not in allowed:
        want = "int64" if allowed == ("int64",) else "int32 or int64"
        raise RuntimeError(f"{op}(): Expected dtype {want} for index, got {index.dtype}")
    return index.data


def _lead(shape: tuple) -> tuple:
    """Slices selecting the leading ``shape`` corner of a larger array."""
    return tuple(slice(0, s) for s in shape)


def _pad_to(g: Tensor, shape: tuple) -> Tensor:
    """``g`` placed in the leading corner of zeros of ``shape`` (differentiably)."""
    if tuple(g.data.shape) == tuple(shape):
        return g
    return IndexScatter(IndexKey(_lead(g.data.shape) + (Ellipsis,), "basic"), shape).apply(g)


# ------------------------------------------------------------------------ gather / scatter
def _check_dims(op: str, a_shape, dim: int, idx, src_shape=None) -> None:
    if idx.ndim != len(a_shape) and not (idx.ndim <= 1 and len(a_shape) <= 1):
        raise RuntimeError(
            f"{op}(): Index tensor must have the same number of dimensions as "
            f"input tensor (index {list(idx.shape)}, input {list(a_shape)})"
        )
    for d, s in enumerate(idx.shape):
        too_big = (d != dim and d < len(a_shape) and s > a_shape[d]) or (
            src_shape is not None and d < len(src_shape) and s > src_shape[d]
        )
        if too_big and src_shape is None:
            raise RuntimeError(
                f"{op}(): Size does not match at dimension {d} expected index {list(idx.shape)} "
                f"to be no larger than self {list(a_shape)} apart from dimension {dim}"
            )
        if too_big:
            raise RuntimeError(
                f"{op}(): Expected index {list(idx.shape)} to be no larger than self "
                f"{list(a_shape)} apart from dimension {dim} and to be no larger size than "
                f"src {list(src_shape)}"
            )
    size = a_shape[dim] if a_shape else 1
    K.check_bounds(idx, size, dim, negative=False, exc=RuntimeError, prefix=f"{op}(): ")


def _is_scalar(x) -> bool:
    return isinstance(x, (int, float, bool, np.generic))


def _coords(idx, dim: int, ndim: int):
    if ndim == 0:
        return ()
    return K.dim_coords(idx.reshape(idx.shape or (1,)) if idx.ndim == 0 else idx, dim)


class Gather(Function):
    def __init__(self, dim: int, idx):
        self.dim, self.idx = dim, idx

    def forward(self, a):
        self.shape = a.shape
        if a.ndim == 0:
            return get_array_module(a).broadcast_to(a, self.idx.shape).copy()
        return a[_coords(self.idx, self.dim, a.ndim)].reshape(self.idx.shape)

    def backward(self, g):
        return ScatterAdd(self.dim, self.idx, self.shape).apply(None, g)


class ScatterAdd(Function):
    """``a.clone()`` (zeros when ``a`` is None) with ``src`` added at ``index`` along dim."""

    def __init__(self, dim: int, idx, shape: tuple):
        self.dim, self.idx, self.shape = dim, idx, shape

    def forward(self, a, src):
        xp = get_array_module(src)
        out = xp.zeros(self.shape, dtype=src.dtype) if a is None else a.copy()
        self.src_shape = src.shape
        if out.ndim == 0:
            out += src.reshape(-1).sum() if src.size else 0
            return out
        idx = self.idx.reshape(1) if self.idx.ndim == 0 else self.idx
        vals = src.reshape(src.shape or (1,))[_lead(idx.shape)]
        K.add_coords(out, _coords(idx, self.dim, out.ndim), vals)
        return out

    def backward(self, g):
        ng = self.needs_input_grad
        gs = None
        if ng[1]:
            gs = _pad_to(Gather(self.dim, self.idx).apply(g), self.src_shape)
        return (g if ng[0] else None), gs


class Scatter(Function):
    """``a.clone()`` with ``src`` (a tensor or a scalar) written at ``index`` along dim."""

    def __init__(self, dim: int, idx):
        self.dim, self.idx = dim, idx

    def forward(self, a, src):
        out = a.copy()
        self.src_shape = None if _is_scalar(src) else src.shape
        if out.ndim == 0:
            if self.idx.size:
                out[...] = src.reshape(-1)[0] if self.src_shape else src
            return out
        vals = src[_lead(self.idx.shape)] if self.src_shape is not None else src
        out[_coords(self.idx, self.dim, out.ndim)] = vals
        return out

    def backward(self, g):
        ng = self.needs_input_grad
        ga = Scatter(self.dim, self.idx).apply(g, 0) if ng[0] else None
        gs = None
        if ng[1]:
            gs = _pad_to(Gather(self.dim, self.idx).apply(g), self.src_shape)
        return ga, gs


class ScatterMultiply(Function):
    """scatter(reduce='multiply'): forward only, as in PyTorch."""

    def __init__(self, dim: int, idx):
        self.dim, self.idx = dim, idx

    def forward(self, a, src):
        xp = get_array_module(a)
        out = a.copy()
        vals = src if _is_scalar(src) else src[_lead(self.idx.shape)]
        xp.multiply.at(out, _coords(self.idx, self.dim, out.ndim), vals)
        return out

    def backward(self, g):
        raise RuntimeError("scatter: the derivative for reduce='multiply' is not implemented")


def gather(input: Tensor, dim: int, index, *, sparse_grad: bool = False) -> Tensor:
    dim = normalize_dim(dim, input.data.ndim, "gather")
    idx = _index(index, "gather")
    _check_dims("gather", input.data.shape, dim, idx)
    return Gather(dim, idx).apply(input)


def _src_operand(input: Tensor, src, op: str):
    """A Tensor source cast to the input's dtype, or a scalar value."""
    if isinstance(src, Tensor):
        if src.data.dtype != input.data.dtype:
            from ember.ops.conversion import cast_to

            src = cast_to(src, input.dtype)
        return src
    return input.data.dtype.type(src)


def scatter(input: Tensor, dim: int, index, src=None, *, value=None, reduce=None) -> Tensor:
    """``scatter(dim, index, src)`` or ``scatter(dim, index, value=v)``; ``reduce`` is
    'add' or 'multiply' as in PyTorch."""
    if src is None:
        if value is None:
            raise TypeError("scatter(): expected a src tensor or a value")
        src = value
    dim = normalize_dim(dim, input.data.ndim, "scatter")
    idx = _index(index, "scatter", ("int64",))
    src_shape = src.data.shape if isinstance(src, Tensor) else None
    _check_dims("scatter", input.data.shape, dim, idx, src_shape)
    src = _src_operand(input, src, "scatter")
    if reduce is None:
        return Scatter(dim, idx).apply(input, src)
    if reduce == "add":
        if not isinstance(src, Tensor):
            xp = get_array_module(input.data)
            src = Tensor(xp.full(idx.shape, src, dtype=input.data.dtype))
        return ScatterAdd(dim, idx, input.data.shape).apply(input, src)
    if reduce == "multiply":
        return ScatterMultiply(dim, idx).apply(input, src)
    raise RuntimeError(f"scatter(): reduce argument must be either add or multiply, got {reduce!r}")


def scatter_add(input: Tensor, dim: int, index, src: Tensor) -> Tensor:
    if _autocast.enabled:  # on torch's autocast promote list: both in the wider dtype
        return _amp.call(_amp.PROMOTE, scatter_add, input, dim, index, src)
    dim = normalize_dim(dim, input.data.ndim, "scatter_add")
    idx = _index(index, "scatter_add", ("int64",))
    _check_dims("scatter_add", input.data.shape, dim, idx, src.data.shape)
    src = _src_operand(input, src, "scatter_add")
    return ScatterAdd(dim, idx, input.data.shape).apply(input, src)


def take_along_dim(input: Tensor, indices, dim=None) -> Tensor:
    from ember.ops.shape import expand, reshape

    idx = _index(indices, "take_along_dim", ("int64",))
    if dim is None:
        flat = reshape(input, -1)
        K.check_bounds(
            idx, flat.data.size, 0, negative=False, exc=RuntimeError, prefix="take_along_dim(): "
        )
        return Gather(0, idx.reshape(-1)).apply(flat)
    nd = input.data.ndim
    dim = normalize_dim(dim, nd, "take_along_dim")
    if idx.ndim != nd:
        raise RuntimeError(
            f"take_along_dim(): input and indices should have the same number of dimensions, "
            f"but got {nd} dimensions for input, and {idx.ndim} dimensions for indices"
        )
    xp = get_array_module(idx)
    a_shape, i_shape = list(input.data.shape), list(idx.shape)
    a_shape[dim] = i_shape[dim] = 1
    try:
        common = list(xp.broadcast_shapes(tuple(a_shape), tuple(i_shape)))
    except ValueError:
        raise RuntimeError(
            f"take_along_dim(): input {list(input.data.shape)} and indices "
            f"{list(idx.shape)} are not broadcastable apart from dimension "
            f"{dim}"
        ) from None
    common[dim] = input.data.shape[dim]
    x = expand(input, tuple(common))
    common[dim] = idx.shape[dim]
    idx = xp.broadcast_to(idx, tuple(common))
    K.check_bounds(
        idx,
        input.data.shape[dim],
        dim,
        negative=False,
        exc=RuntimeError,
        prefix="take_along_dim(): ",
    )
    return Gather(dim, idx).apply(x)


# -------------------------------------------------------------------------- along one dim
def _moved(a, dim: int):
    """A contiguous copy of ``a`` with ``dim`` moved to the front (no copy for dim 0)."""
    xp = get_array_module(a)
    return a if dim == 0 else xp.ascontiguousarray(xp.moveaxis(a, dim, 0))


class IndexSelect(Function):
    def __init__(self, dim: int, idx):
        self.dim, self.idx = dim, idx

    def forward(self, a):
        self.shape = a.shape
        xp = get_array_module(a)
        return xp.take(a, self.idx, axis=self.dim)

    def backward(self, g):
        return IndexAdd(self.dim, self.idx, self.shape).apply(None, g)


class IndexAdd(Function):
    """``a.clone()`` (zeros when ``a`` is None) with ``alpha * src`` rows added at ``index``."""

    def __init__(self, dim: int, idx, shape: tuple, alpha=1):
        self.dim, self.idx, self.shape, self.alpha = dim, idx, shape, alpha

    def forward(self, a, src):
        xp = get_array_module(src)
        dim = self.dim
        moved_shape = (self.shape[dim],) + self.shape[:dim] + self.shape[dim + 1 :]
        out = xp.zeros(moved_shape, dtype=src.dtype) if a is None else _moved(a, dim).copy()
        vals = xp.moveaxis(src, dim, 0) if dim else src
        if self.alpha != 1:
            vals = vals * src.dtype.type(self.alpha)
        K.add_rows(
            out,
            K.wrap_negative(self.idx.reshape(-1), self.shape[dim]),
            vals.reshape((self.idx.size,) + moved_shape[1:]),
        )
        return out if dim == 0 else xp.ascontiguousarray(xp.moveaxis(out, 0, dim))

    def backward(self, g):
        ng = self.needs_input_grad
        gs = None
        if ng[1]:
            gs = IndexSelect(self.dim, self.idx).apply(g)
            if self.alpha != 1:
                gs = gs * self.alpha
        return (g if ng[0] else None), gs


class IndexFill(Function):
    def __init__(self, dim: int, idx):
        self.dim, self.idx = dim, idx

    def forward(self, a, value):
        out = a.copy()
        out[(slice(None),) * self.dim + (self.idx,)] = value
        return out

    def backward(self, g):
        from ember.ops.reduction import sum

        ng = self.needs_input_grad
        ga = IndexFill(self.dim, self.idx).apply(g, 0) if ng[0] else None
        gv = None
        if ng[1]:
            xp = get_array_module(self.idx)
            gv = sum(IndexSelect(self.dim, xp.unique(self.idx)).apply(g))
        return ga, gv


def _vector_index(index, op: str, size: int, dim: int):
    idx = _index(index, op)
    if idx.ndim > 1:
        raise IndexError(f"{op}(): Index is supposed to be a vector, got shape {list(idx.shape)}")
    K.check_bounds(idx, size, dim, negative=False, prefix=f"{op}(): ")
    return idx.reshape(-1)


def index_select(input: Tensor, dim: int, index) -> Tensor:
    nd = input.data.ndim
    dim = normalize_dim(dim, nd, "index_select")
    if nd == 0:
        from ember.ops.shape import reshape

        return reshape(index_select(reshape(input, 1), 0, index), ())
    idx = _vector_index(index, "index_select", input.data.shape[dim], dim)
    return IndexSelect(dim, idx).apply(input)


def index_add(input: Tensor, dim: int, index, source: Tensor, *, alpha=1) -> Tensor:
    nd = input.data.ndim
    dim = normalize_dim(dim, nd, "index_add")
    idx = _vector_index(index, "index_add", input.data.shape[dim] if nd else 1, dim)
    want = list(input.data.shape)
    if nd:
        want[dim] = idx.size
    if list(source.data.shape) != want:
        raise RuntimeError(
            f"index_add(): source {list(source.data.shape)} does not match "
            f"self {list(input.data.shape)} with {idx.size} indices along "
            f"dimension {dim} (expected {want})"
        )
    source = _src_operand(input, source, "index_add")
    return IndexAdd(dim, idx, input.data.shape, alpha).apply(input, source)


def index_fill(input: Tensor, dim: int, index, value) -> Tensor:
    dim = normalize_dim(dim, input.data.ndim, "index_fill")
    idx = _vector_index(index, "index_fill", input.data.shape[dim], dim)
    value = _scalar_value(input, value, "index_fill")
    return IndexFill(dim, idx).apply(input, value)


# ------------------------------------------------------------------------------ masks
def _scalar_value(input: Tensor, value, op: str):
    """A fill value: a Python number (cast to the input's dtype) or a 0-d tensor."""
    if isinstance(value, Tensor):
        if value.data.ndim:
            raise RuntimeError(
                f"{op}_ only supports a 0-dimensional value tensor, but got "
                f"tensor with {value.data.ndim} dimension(s)."
            )
        if value.requires_grad:
            return _src_operand(input, value, op)
        value = value.item()
    return input.data.dtype.type(value)


def _mask(mask, op: str):
    if not isinstance(mask, Tensor):
        from ember.tensor.creation import as_tensor

        mask = as_tensor(mask)
    if mask.data.dtype.kind != "b":
        raise RuntimeError(
            f"{op} only supports boolean masks, but got mask with dtype {mask.dtype.name}"
        )
    return mask.data


class MaskedFill(Function):
    def __init__(self, mask):
        self.mask = mask

    def forward(self, a, value):
        xp = get_array_module(a)
        self.shape = a.shape
        return xp.where(self.mask, value, a)

    def backward(self, g):
        from ember.ops.reduction import sum, sum_to_shape

        ng = self.needs_input_grad
        ga = sum_to_shape(MaskedFill(self.mask).apply(g, 0), self.shape) if ng[0] else None
        gv = sum(MaskedFill(~self.mask).apply(g, 0)) if ng[1] else None
        return ga, gv


def masked_fill(input: Tensor, mask, value) -> Tensor:
    m = _mask(mask, "masked_fill_")
    xp = get_array_module(input.data)
    try:
        xp.broadcast_shapes(m.shape, input.data.shape)
    except ValueError:
        raise RuntimeError(
            f"masked_fill: the mask of shape {list(m.shape)} does not broadcast "
            f"to the input of shape {list(input.data.shape)}"
        ) from None
    return MaskedFill(m).apply(input, _scalar_value(input, value, "masked_fill"))


def masked_select(input: Tensor, mask) -> Tensor:
    from ember.ops.shape import expand

    m = _mask(mask, "masked_select:")
    xp = get_array_module(input.data)
    try:
        shape = xp.broadcast_shapes(m.shape, input.data.shape)
    except ValueError:
        raise RuntimeError(
            f"masked_select: the mask of shape {list(m.shape)} does not "
            f"broadcast to the input of shape {list(input.data.shape)}"
        ) from None
    x = expand(input, shape)
    m = xp.broadcast_to(m, shape)
    return Index(IndexKey((m,), "mask")).apply(x)


def take(input: Tensor, index) -> Tensor:
    from ember.ops.shape import reshape

    idx = _index(index, "take", ("int64",))
    n = input.data.size
    lo, hi = K.bounds(idx)
    if idx.size and (hi >= n or lo < -n):
        bad = hi if hi >= n else lo
        raise IndexError(
            f"take(): out of range: tried to access index {bad} on a tensor of {n} elements."
        )
    return Index(IndexKey((idx,), "rows", idx)).apply(reshape(input, -1))


# ---------------------------------------------------------------- non-differentiable
def nonzero(input: Tensor, *, as_tuple: bool = False):
    xp = get_array_module(input.data)
    data = input.data
    if as_tuple:
        found = xp.nonzero(data.reshape(1) if data.ndim == 0 else data)
        return tuple(Tensor(i.astype(xp.int64, copy=False)) for i in found)
    if data.ndim == 0:
        return Tensor(xp.zeros((int(bool(data)), 0), dtype=xp.int64))
    return Tensor(xp.stack(xp.nonzero(data), axis=1).astype(xp.int64, copy=False))


def argwhere(input: Tensor) -> Tensor:
    return nonzero(input)


def one_hot(tensor: Tensor, num_classes: int = -1) -> Tensor:
    """``(..., num_classes)`` int64: 1 at each index's class (torch.nn.functional.one_hot)."""
    if tensor.data.dtype != dtypes.int64.np:
        raise RuntimeError("one_hot is only applicable to index tensor of type LongTensor.")
    xp = get_array_module(tensor.data)
    lo, hi = K.bounds(tensor.data)
    if num_classes == -1:
        if tensor.data.size == 0:
            raise RuntimeError("Can not infer total number of classes from empty tensor.")
        num_classes = hi + 1
    if tensor.data.size and lo < 0:
        raise RuntimeError("Class values must be non-negative.")
    if tensor.data.size and hi >= num_classes:
        raise RuntimeError("Class values must be smaller than num_classes.")
    out = tensor.data[..., None] == xp.arange(num_classes)
    return Tensor(out.astype(xp.int64))
