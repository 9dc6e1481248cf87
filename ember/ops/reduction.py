"""Reductions: sum, mean, logsumexp, cumsum, all/any, count_nonzero (plus ``sum_to_shape``,
the one helper that reduces a broadcast gradient back to its input's shape, and the dim helpers
the other reduction modules share: ``reduction_axes``, ``keep_shape``, ``_expand_back``).

The rest of the family lives beside this file: ``reduction_minmax`` (max/min/arg*/amax/amin),
``reduction_prod`` (prod/cumprod) and ``reduction_stats`` (var/std/norm).
"""

from __future__ import annotations

import numpy as np

from ember.autograd import autocast_state as _amp
from ember.autograd.autocast_state import state as _autocast
from ember.autograd.function import Function, as_array
from ember.ops.dims import normalize_dims
from ember.ops.parallel import run_blocks, split
from ember.tensor import dtypes
from ember.tensor.backend import get_array_module
from ember.tensor.tensor import Tensor


def reduction_axes(dim, ndim: int, op: str):
    """``normalize_dims`` plus torch's conventions: ``dim=[]`` reduces every dim, and a valid
    dim (0 or -1) of a 0-d tensor reduces it as a whole (None = all dims)."""
    axes = normalize_dims(dim, ndim, op)
    if axes is not None and (ndim == 0 or axes == ()):
        return None
    return axes


def keep_shape(shape: tuple, axes) -> tuple:
    """The shape of a ``keepdim=True`` reduction of ``shape`` over ``axes`` (None = all)."""
    if axes is None:
        return (1,) * len(shape)
    return tuple(1 if i in axes else s for i, s in enumerate(shape))


def reduced_count(shape: tuple, axes) -> int:
    """How many elements each output of a reduction over ``axes`` sees."""
    n = 1
    for ax in range(len(shape)) if axes is None else axes:
        n *= shape[ax]
    return n


def _expand_back(g: Tensor, shape: tuple, axes, keepdim: bool) -> Tensor:
    """Broadcast a reduced gradient back over the reduced axes (differentiably)."""
    from ember.ops.shape import expand, reshape

    if not keepdim and axes is not None:
        kept = list(shape)
        for ax in axes:
            kept[ax] = 1
        g = reshape(g, tuple(kept))
    elif axes is None:
        g = reshape(g, (1,) * len(shape))
    return expand(g, shape)


# float16/bfloat16 sums and means accumulate in float32, as torch's do (ml_dtypes sums
# bfloat16 in bfloat16: 100000 x 0.1 summed to 32)
_HALF = (np.dtype(np.float16), np.dtype(dtypes.bfloat16.np))


class Sum(Function):
    def __init__(self, axes, keepdim: bool, dtype=None):
        self.axes, self.keepdim, self.dtype = axes, keepdim, dtype

    def forward(self, a):
        self.shape = a.shape
        self.src = a.dtype
        with np.errstate(over="ignore", invalid="ignore"):  # inf - inf: NaN, quietly (torch)
            if a.dtype in _HALF and (self.dtype is None or self.dtype == a.dtype):
                out = a.sum(axis=self.axes, keepdims=self.keepdim, dtype=np.float32)
                return out.astype(a.dtype)
            return a.sum(axis=self.axes, keepdims=self.keepdim, dtype=self.dtype)

    def backward(self, g):
        from ember.ops.conversion import cast_to

        g = _expand_back(g, self.shape, self.axes, self.keepdim)
        return cast_to(g, dtypes.from_numpy_dtype(self.src))


class Mean(Function):
    def __init__(self, axes, keepdim: bool):
        self.axes, self.keepdim = axes, keepdim

    def forward(self, a):
        self.shape = a.shape
        n = 1
        for ax in range(a.ndim) if self.axes is None else self.axes:
            n *= a.shape[ax]
        self.count = n
        if n == 0:  # torch: nan, without NumPy's "Mean of empty slice" warning
            with np.errstate(invalid="ignore"):
                return a.sum(axis=self.axes, keepdims=self.keepdim) / a.dtype.type(0)
        with np.errstate(over="ignore", invalid="ignore"):
            if a.dtype in _HALF:
                out = a.mean(axis=self.axes, keepdims=self.keepdim, dtype=np.float32)
                return out.astype(a.dtype)
            return a.mean(axis=self.axes, keepdims=self.keepdim, dtype=a.dtype)

    def backward(self, g):
        # divide the reduced gradient, then broadcast it (a stride-0 view, as Sum's): the
        # same values as dividing the full-size array, without writing it
        if self.count:
            g = g / self.count
        return _expand_back(g, self.shape, self.axes, self.keepdim)


def _sum_dtype(t: Tensor, dtype):
    if dtype is not None:
        return dtypes.to_dtype(dtype).np
    if t.data.dtype.kind in "biu":
        return dtypes.int64.np  # torch sums integers and bools as int64
    return None


def sum(input: Tensor, dim=None, keepdim: bool = False, *, dtype=None):  # noqa: A001
    if _autocast.enabled and dtype is None:  # autocast sums in float32 (torch's policy)
        return _amp.call(_amp.FP32, sum, input, dim, keepdim)
    axes = reduction_axes(dim, input.data.ndim, "sum")  # sum(dim=[]) reduces everything
    return Sum(axes, keepdim, _sum_dtype(input, dtype)).apply(input)


def mean(input: Tensor, dim=None, keepdim: bool = False, *, dtype=None):
    if dtype is not None:
        from ember.ops.conversion import cast_to

        input = cast_to(input, dtype)
    if input.data.dtype not in dtypes.FLOATING_NP:
        raise RuntimeError(
            f"mean(): could not infer output dtype. Input dtype must be either a floating point "
            f"or complex dtype. Got: {input.dtype}"
        )
    axes = reduction_axes(dim, input.data.ndim, "mean")
    return Mean(axes, keepdim).apply(input)


def sum_to_shape(g: Tensor, shape: tuple) -> Tensor:
    """Reduce a broadcast gradient ``g`` back to ``shape`` (sum over the broadcast dims)."""
    gshape = g.data.shape
    if gshape == shape:
        return g
    from ember.ops.shape import reshape

    lead = len(gshape) - len(shape)
    axes = tuple(range(lead)) + tuple(
        i + lead for i, s in enumerate(shape) if s == 1 and gshape[i + lead] != 1
    )
    out = Sum(axes, True).apply(g) if axes else g
    return reshape(out, shape) if out.data.shape != shape else out


_HALF = frozenset((dtypes.float16.np, dtypes.bfloat16.np))


def _squeeze_axes(arr, axes):
    """Drop the kept (size-1) reduced axes of a keepdim result."""
    return arr.reshape(()) if axes is None else arr.squeeze(axis=axes)


class LogSumExp(Function):
    """log(sum(exp(x))) around the max, so inputs near +-1000 stay finite (halves in float32)."""

    def __init__(self, axes, keepdim: bool):
        self.axes, self.keepdim = axes, keepdim

    def forward(self, a):
        xp = get_array_module(a)
        axes = self.axes
        self.shape = a.shape
        work = a.astype(np.float32) if a.dtype in _HALF else a
        if reduced_count(a.shape, axes) == 0:  # no identity for max: the sum is 0, log is -inf
            out = xp.full(keep_shape(a.shape, axes), -np.inf, dtype=work.dtype)
        else:
            m = work.max(axis=axes, keepdims=True)
            m = xp.where(xp.isinf(m), xp.zeros((), m.dtype), m)  # all -inf (or +inf) rows
            with np.errstate(divide="ignore", over="ignore", invalid="ignore"):  # log(0) = -inf
                out = xp.log(xp.exp(work - m).sum(axis=axes, keepdims=True)) + m
        if not self.keepdim:
            out = _squeeze_axes(out, axes)
        out = as_array(out.astype(a.dtype, copy=False))  # saved outputs must be arrays
        self.save_for_backward(a, out)
        return out

    def backward(self, g):
        from ember.ops.unary import exp

        x, out = self.saved_tensors
        g = _expand_back(g, self.shape, self.axes, self.keepdim)
        out = _expand_back(out, self.shape, self.axes, self.keepdim)
        return g * exp(x - out)


def logsumexp(input: Tensor, dim, keepdim: bool = False) -> Tensor:
    if _autocast.enabled:
        return _amp.call(_amp.FP32, logsumexp, input, dim, keepdim)
    if input.data.dtype not in dtypes.FLOATING_NP:  # torch: integers give the default float
        from ember.ops.conversion import cast_to

        input = cast_to(input, dtypes.get_default_dtype())
    return LogSumExp(reduction_axes(dim, input.data.ndim, "logsumexp"), keepdim).apply(input)


# np.cumsum is a sequential loop per line: 7 ms along the last axis of (32, 128, 512) float32,
# 20 ms along axis 1 (it walks the line across memory). The same additions in the same order,
# arranged better: lines along the last axis in row blocks on the CPU threads; any other axis
# as one vectorised add per step (out[j] = out[j - 1] + a[j] over the whole slab): 2.4 ms.
_CUMSUM_MIN = 1 << 16
_SLAB_MIN = 256  # elements per step below which the per-step Python call costs too much


def _cumsum_np(a, axis: int, reverse: bool):
    out = np.empty(a.shape, np.cumsum(a.reshape(-1)[:0]).dtype)  # np.cumsum's result dtype
    if axis == a.ndim - 1:
        n = a.shape[-1]
        src, dst = a.reshape(-1, n), out.reshape(-1, n)
        step = slice(None, None, -1) if reverse else slice(None)

        def block(lo, hi):
            np.cumsum(src[lo:hi, step], axis=1, out=dst[lo:hi, step])

        rows = src.shape[0]
        run_blocks(block, rows, split(rows, max(1, (1 << 15) // max(n, 1))))
        return out
    if a.size // a.shape[axis] < _SLAB_MIN:
        flip = (lambda x: np.flip(x, axis)) if reverse else (lambda x: x)
        return flip(np.cumsum(flip(a), axis=axis, dtype=out.dtype))
    lead = (slice(None),) * axis
    order = range(a.shape[axis] - 1, -1, -1) if reverse else range(a.shape[axis])
    prev = None
    for j in order:
        cur = lead + (j,)
        if prev is None:
            out[cur] = a[cur]
        else:
            np.add(out[prev], a[cur], out=out[cur])
        prev = cur
    return out


class CumSum(Function):
    """Cumulative sum along one axis; ``reverse`` sums from the end (that is its gradient)."""

    def __init__(self, axis: int, reverse: bool = False):
        self.axis, self.reverse = axis, reverse

    def forward(self, a):
        xp = get_array_module(a)
        if a.ndim == 0:
            return a.copy()
        if xp is np and a.size >= _CUMSUM_MIN:
            return _cumsum_np(a, self.axis, self.reverse)
        if self.reverse:
            return xp.flip(xp.cumsum(xp.flip(a, self.axis), axis=self.axis), self.axis)
        return xp.cumsum(a, axis=self.axis)

    def backward(self, g):
        return CumSum(self.axis, not self.reverse).apply(g)


def int_to_long(input: Tensor, dtype) -> Tensor:
    """torch's cumulative and product ops: an explicit dtype casts first, and integer or bool
    inputs accumulate in int64."""
    from ember.ops.conversion import cast_to

    if dtype is not None:
        return cast_to(input, dtype)
    if input.data.dtype.kind in "biu":
        return cast_to(input, dtypes.int64)
    return input


def single_dim(dim, op: str) -> None:
    """max, prod, cumsum...: torch takes one int dim there, not a tuple."""
    if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool):
        raise TypeError(f"{op}(): argument 'dim' must be int, not {type(dim).__name__}")


def cumsum(input: Tensor, dim: int, *, dtype=None) -> Tensor:
    if _autocast.enabled and dtype is None:
        return _amp.call(_amp.FP32, cumsum, input, dim)
    single_dim(dim, "cumsum")
    axis = normalize_dims(dim, input.data.ndim, "cumsum")[0]
    return CumSum(axis).apply(int_to_long(input, dtype))


def _logical(input: Tensor, dim, keepdim: bool, op: str) -> Tensor:
    xp = get_array_module(input.data)
    axes = reduction_axes(dim, input.data.ndim, op)
    out = (xp.all if op == "all" else xp.any)(input.data, axis=axes, keepdims=keepdim)
    out = as_array(out)
    if input.data.dtype == np.uint8:  # torch keeps uint8 for uint8 inputs
        out = out.astype(np.uint8)
    return Tensor(out)


def all(input: Tensor, dim=None, keepdim: bool = False) -> Tensor:  # noqa: A001
    return _logical(input, dim, keepdim, "all")


def any(input: Tensor, dim=None, keepdim: bool = False) -> Tensor:  # noqa: A001
    return _logical(input, dim, keepdim, "any")


def count_nonzero(input: Tensor, dim=None) -> Tensor:
    xp = get_array_module(input.data)
    axes = reduction_axes(dim, input.data.ndim, "count_nonzero")
    out = xp.count_nonzero(input.data, axis=axes)
    return Tensor(as_array(out).astype(np.int64, copy=False))


def _sum_to_size(self, *size):
    size = tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list)) else size
    return sum_to_shape(self, size)


METHODS = {
    "sum": sum,
    "mean": mean,
    "sum_to_size": _sum_to_size,
    "logsumexp": logsumexp,
    "cumsum": cumsum,
    "all": all,
    "any": any,
    "count_nonzero": count_nonzero,
}
FUNCTIONS = {
    "sum": sum,
    "mean": mean,
    "logsumexp": logsumexp,
    "cumsum": cumsum,
    "all": all,
    "any": any,
    "count_nonzero": count_nonzero,
}
