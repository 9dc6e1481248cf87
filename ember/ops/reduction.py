"""Reductions: sum and mean (plus ``sum_to_shape``, the one helper that reduces a broadcast
gradient back to its input's shape)."""

from __future__ import annotations

from ember.autograd.function import Function
from ember.ops.dims import normalize_dims
from ember.tensor import dtypes
from ember.tensor.backend import get_array_module
from ember.tensor.tensor import Tensor


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


class Sum(Function):
    def __init__(self, axes, keepdim: bool, dtype=None):
        self.axes, self.keepdim, self.dtype = axes, keepdim, dtype

    def forward(self, a):
        self.shape = a.shape
        self.src = a.dtype
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
        for ax in (range(a.ndim) if self.axes is None else self.axes):
            n *= a.shape[ax]
        self.count = n
        return a.mean(axis=self.axes, keepdims=self.keepdim, dtype=a.dtype)

    def backward(self, g):
        g = _expand_back(g, self.shape, self.axes, self.keepdim)
        return g / self.count if self.count else g


def _sum_dtype(t: Tensor, dtype):
    if dtype is not None:
        return dtypes.to_dtype(dtype).np
    if t.data.dtype.kind in "biu":
        return dtypes.int64.np  # torch sums integers and bools as int64
    return None


def sum(input: Tensor, dim=None, keepdim: bool = False, *, dtype=None):  # noqa: A001
    axes = normalize_dims(dim, input.data.ndim, "sum")
    if axes == () and dim is not None:
        axes = None  # torch: sum(dim=[]) reduces everything
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
    axes = normalize_dims(dim, input.data.ndim, "mean")
    if axes == () and dim is not None:
        axes = None
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


def _xp(t: Tensor):
    return get_array_module(t.data)


METHODS = {"sum": sum, "mean": mean, "sum_to_size": lambda self, *size: sum_to_shape(
    self, tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list)) else size)}
FUNCTIONS = {"sum": sum, "mean": mean}
