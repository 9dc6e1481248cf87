"""Shape ops that return views where NumPy can: reshape/view, expand, permute, transpose."""

from __future__ import annotations

from ember.autograd.function import Function
from ember.ops.dims import normalize_dim
from ember.tensor.tensor import Tensor


def _size_args(op: str, shape) -> tuple:
    """Accept ``f(2, 3)``, ``f((2, 3))`` and ``f([2, 3])``."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    try:
        return tuple(int(s) for s in shape)
    except TypeError:
        raise TypeError(f"{op}: shape must be ints, got {shape!r}") from None


def infer_shape(op: str, numel: int, shape: tuple, src_shape: tuple) -> tuple:
    """Resolve one -1, and check that the element count matches (a clear error if not)."""
    unknown = [i for i, s in enumerate(shape) if s == -1]
    if len(unknown) > 1:
        raise RuntimeError(f"{op}: only one dimension can be inferred, got shape {list(shape)}")
    known = 1
    for s in shape:
        if s != -1:
            if s < 0:
                raise RuntimeError(f"{op}: invalid shape dimension {s} in {list(shape)}")
            known *= s
    if unknown:
        if known == 0 or numel % known:
            raise RuntimeError(
                f"{op}: shape '{list(shape)}' is invalid for input of size {numel} "
                f"(input shape {tuple(src_shape)})")
        shape = tuple(numel // known if s == -1 else s for s in shape)
    elif known != numel:
        raise RuntimeError(
            f"{op}: shape '{list(shape)}' is invalid for input of size {numel} "
            f"(input shape {tuple(src_shape)})")
    return shape


class Reshape(Function):
    is_view = True

    def __init__(self, shape: tuple):
        self.shape = shape

    def forward(self, a):
        self.src = a.shape
        return a.reshape(self.shape)

    def backward(self, g):
        return reshape(g, self.src)


class Expand(Function):
    is_view = True

    def __init__(self, shape: tuple):
        self.shape = shape

    def forward(self, a):
        from ember.tensor.backend import get_array_module

        self.src = a.shape
        return get_array_module(a).broadcast_to(a, self.shape)

    def backward(self, g):
        from ember.ops.reduction import sum_to_shape

        return sum_to_shape(g, self.src)


class Permute(Function):
    is_view = True

    def __init__(self, dims: tuple):
        self.dims = dims

    def forward(self, a):
        return a.transpose(self.dims)

    def backward(self, g):
        inv = [0] * len(self.dims)
        for i, d in enumerate(self.dims):
            inv[d] = i
        return Permute(tuple(inv)).apply(g)


def reshape(input: Tensor, *shape) -> Tensor:
    shape = infer_shape("reshape", input.data.size, _size_args("reshape", shape),
                        input.data.shape)
    return Reshape(shape).apply(input)


def view(input: Tensor, *shape) -> Tensor:
    from ember.tensor import dtypes

    if len(shape) == 1 and (isinstance(shape[0], dtypes.dtype)):
        raise NotImplementedError("view(dtype) is not supported; use .to(dtype)")
    shape = infer_shape("view", input.data.size, _size_args("view", shape), input.data.shape)
    if not input.data.flags.c_contiguous and input.data.size > 1:
        try:
            input.data.view().shape = shape  # NumPy says whether a view is possible
        except AttributeError:
            raise RuntimeError(
                "view size is not compatible with input tensor's size and stride (at least one "
                "dimension spans across two contiguous subspaces). Use .reshape(...) instead."
            ) from None
    return Reshape(shape).apply(input)


def expand(input: Tensor, *sizes) -> Tensor:
    sizes = _size_args("expand", sizes)
    nd = input.data.ndim
    if len(sizes) < nd:
        raise RuntimeError(
            f"expand: the number of sizes provided ({len(sizes)}) must be greater or equal to "
            f"the number of dimensions in the tensor ({nd})")
    lead = len(sizes) - nd
    shape = []
    for i, s in enumerate(sizes):
        if i < lead:
            if s < 0:
                raise RuntimeError(f"expand: -1 is not allowed in a leading, non-existing "
                                   f"dimension {i}")
            shape.append(s)
            continue
        cur = input.data.shape[i - lead]
        if s == -1:
            s = cur
        if cur != s and cur != 1:
            raise RuntimeError(
                f"expand: the expanded size of the tensor ({s}) must match the existing size "
                f"({cur}) at non-singleton dimension {i}.  Target sizes: {list(sizes)}.  Tensor "
                f"sizes: {list(input.data.shape)}")
        shape.append(s)
    shape = tuple(shape)
    if shape == input.data.shape:
        return input
    return Expand(shape).apply(input)


def expand_as(input: Tensor, other: Tensor) -> Tensor:
    return expand(input, other.data.shape)


def broadcast_to(input: Tensor, shape) -> Tensor:
    return expand(input, tuple(shape))


def permute(input: Tensor, *dims) -> Tensor:
    dims = _size_args("permute", dims)
    nd = input.data.ndim
    if len(dims) != nd:
        raise RuntimeError(
            f"permute: number of dims don't match in permute: got {len(dims)} dims for a tensor "
            f"with ndim {nd}")
    dims = tuple(normalize_dim(d, nd, "permute") for d in dims)
    if len(set(dims)) != nd:
        raise RuntimeError(f"permute: repeated dim in {list(dims)}")
    return Permute(dims).apply(input)


def transpose(input: Tensor, dim0: int, dim1: int) -> Tensor:
    nd = input.data.ndim
    if nd == 0:
        return input
    d0, d1 = normalize_dim(dim0, nd, "transpose"), normalize_dim(dim1, nd, "transpose")
    if d0 == d1:
        return input
    perm = list(range(nd))
    perm[d0], perm[d1] = perm[d1], perm[d0]
    return Permute(tuple(perm)).apply(input)


def t(input: Tensor) -> Tensor:
    if input.data.ndim > 2:
        raise RuntimeError(f"t() expects a tensor with <= 2 dimensions, but self is "
                           f"{input.data.ndim}D")
    return transpose(input, 0, 1) if input.data.ndim == 2 else input


def _T(self) -> Tensor:  # noqa: N802
    nd = self.data.ndim
    return Permute(tuple(range(nd - 1, -1, -1))).apply(self) if nd >= 2 else self


def _mT(self) -> Tensor:  # noqa: N802
    if self.data.ndim < 2:
        raise RuntimeError("mT: tensor.mT is only supported on matrices or batches of matrices. "
                           f"Got {self.data.ndim}-D tensor.")
    return transpose(self, -2, -1)


METHODS = {
    "reshape": reshape, "view": view, "expand": expand, "expand_as": expand_as,
    "broadcast_to": broadcast_to, "permute": permute, "transpose": transpose, "t": t,
    "swapaxes": transpose, "swapdims": transpose,
}
PROPERTIES = {"T": _T, "mT": _mT}
FUNCTIONS = {
    "reshape": reshape, "broadcast_to": broadcast_to, "permute": permute,
    "transpose": transpose, "t": t, "swapaxes": transpose, "swapdims": transpose,
}
