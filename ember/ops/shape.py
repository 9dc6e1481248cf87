"""Shape ops: views where NumPy gives views (reshape, expand, permute, squeeze, narrow,
diagonal...) and the copying rearrangements flip, roll and tril/triu (repeat/tile are in join.py).

A view's Function has ``is_view = True`` so the result shares its base's version counter;
backward formulas use Tensor ops, so every op here is differentiable twice.
"""

from __future__ import annotations

import numpy as np

from ember.autograd.function import Function
from ember.ops.dims import normalize_dim, normalize_dims
from ember.tensor.backend import get_array_module
from ember.tensor.tensor import Tensor


def size_args(op: str, shape) -> tuple:
    """Accept ``f(2, 3)``, ``f((2, 3))`` and ``f([2, 3])``."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    try:
        return tuple(int(s) for s in shape)
    except TypeError:
        raise TypeError(f"{op}: shape must be ints, got {shape!r}") from None


def _dims_arg(dims) -> tuple:
    return (dims,) if isinstance(dims, int) else tuple(dims)


def insert_dim(dim: int, ndim: int, op: str) -> int:
    """A dim for a new axis (unsqueeze, stack): range [-ndim-1, ndim]."""
    if not -ndim - 1 <= dim <= ndim:
        raise IndexError(
            f"{op}: Dimension out of range (expected to be in range of "
            f"[{-ndim - 1}, {ndim}], but got {dim}) for a tensor with ndim {ndim}"
        )
    return dim % (ndim + 1)


def axis_index(axis: int, index) -> tuple:
    """The basic index that applies ``index`` (a slice or int) along ``axis`` only."""
    return (slice(None),) * axis + (index, Ellipsis)


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
                f"(input shape {tuple(src_shape)})"
            )
        shape = tuple(numel // known if s == -1 else s for s in shape)
    elif known != numel:
        raise RuntimeError(
            f"{op}: shape '{list(shape)}' is invalid for input of size {numel} "
            f"(input shape {tuple(src_shape)})"
        )
    return shape


# ----------------------------------------------------------------------------- Functions
class Reshape(Function):
    is_view = True

    def __init__(self, shape: tuple):
        self.shape = shape

    def forward(self, a):
        self.src = a.shape
        out = a.reshape(self.shape)
        # NumPy copies when the strides do not allow a view; a copy is not a view (as torch)
        if not a.flags.c_contiguous and a.size and not get_array_module(a).may_share_memory(a, out):
            self.is_view = False
        return out

    def backward(self, g):
        return reshape(g, self.src)


class Squeeze(Reshape):
    pass


class Unsqueeze(Reshape):
    pass


class Expand(Function):
    is_view = True

    def __init__(self, shape: tuple):
        self.shape = shape

    def forward(self, a):
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


class Slice(Function):
    """A basic-slicing view (narrow); backward puts the gradient into zeros of the input."""

    is_view = True

    def __init__(self, index: tuple):
        self.index = index

    def forward(self, a):
        self.src = a.shape
        return a[self.index]

    def backward(self, g):
        return ConstantPad(self.src, self.index).apply(g)


class ConstantPad(Function):
    """``out = full(shape, value); out[dst] = a[src]``: constant padding (negative pads crop
    through ``src``) and the adjoint of Slice. Its backward is the same op the other way."""

    def __init__(self, shape: tuple, dst: tuple, src: tuple | None = None, value=0):
        self.shape, self.dst, self.src, self.value = shape, dst, src, value

    def forward(self, a):
        xp = get_array_module(a)
        self.in_shape = a.shape
        out = (
            xp.full(self.shape, self.value, dtype=a.dtype)
            if self.value
            else xp.zeros(self.shape, dtype=a.dtype)
        )
        out[self.dst] = a if self.src is None else a[self.src]
        return out

    def backward(self, g):
        if self.src is None:
            return Slice(self.dst).apply(g)
        return ConstantPad(self.in_shape, self.src, self.dst).apply(g)

    def name(self) -> str:
        return "ConstantPadNdBackward"


def _diag_view(a, offset: int, d1: int, d2: int):
    """A writable view of a diagonal (NumPy's ``diagonal`` is read-only); the diagonal is the
    last axis, as in torch."""
    d = a.diagonal(offset, d1, d2)
    if type(a) is not np.ndarray or d.flags.writeable or not a.flags.writeable:
        return d
    shifted = a[
        axis_index(d2, slice(offset, None)) if offset >= 0 else axis_index(d1, slice(-offset, None))
    ]
    return np.lib.stride_tricks.as_strided(shifted, d.shape, d.strides)


class Diagonal(Function):
    is_view = True

    def __init__(self, offset: int, d1: int, d2: int, copy: bool = False):
        self.offset, self.d1, self.d2, self.copy = offset, d1, d2, copy

    def forward(self, a):
        self.src = a.shape
        if self.copy:
            self.is_view = False
            return a.diagonal(self.offset, self.d1, self.d2).copy()
        return _diag_view(a, self.offset, self.d1, self.d2)

    def backward(self, g):
        return DiagonalScatter(self.src, self.offset, self.d1, self.d2).apply(g)


class DiagonalScatter(Function):
    """Zeros of ``shape`` with ``a`` on a diagonal: diag_embed, and Diagonal's adjoint."""

    def __init__(self, shape: tuple, offset: int, d1: int, d2: int):
        self.shape, self.offset, self.d1, self.d2 = shape, offset, d1, d2

    def forward(self, a):
        out = get_array_module(a).zeros(self.shape, dtype=a.dtype)
        _diag_view(out, self.offset, self.d1, self.d2)[...] = a
        return out

    def backward(self, g):
        return Diagonal(self.offset, self.d1, self.d2).apply(g)


class Flip(Function):
    def __init__(self, axes: tuple):
        self.axes = axes

    def forward(self, a):
        idx = [slice(None)] * a.ndim
        for ax in self.axes:
            idx[ax] = slice(None, None, -1)
        return a[tuple(idx)].copy()  # torch's flip is a copy, not a view

    def backward(self, g):
        return Flip(self.axes).apply(g)


class Roll(Function):
    def __init__(self, shifts: tuple, axes: tuple | None):
        self.shifts, self.axes = shifts, axes

    def forward(self, a):
        return get_array_module(a).roll(a, self.shifts, self.axes)

    def backward(self, g):
        return Roll(tuple(-s for s in self.shifts), self.axes).apply(g)


class Tri(Function):
    """tril (``upper=False``) and triu: keep one triangle of the last two dims."""

    def __init__(self, k: int, upper: bool):
        self.k, self.upper = k, upper

    def forward(self, a):
        xp = get_array_module(a)
        return xp.triu(a, self.k) if self.upper else xp.tril(a, self.k)

    def backward(self, g):
        return Tri(self.k, self.upper).apply(g)

    def name(self) -> str:
        return "TriuBackward" if self.upper else "TrilBackward"


# ------------------------------------------------------------------------ view ops
def reshape(input: Tensor, *shape) -> Tensor:
    shape = infer_shape("reshape", input.data.size, size_args("reshape", shape), input.data.shape)
    return Reshape(shape).apply(input)


def view(input: Tensor, *shape) -> Tensor:
    from ember.tensor import dtypes

    if len(shape) == 1 and (isinstance(shape[0], dtypes.dtype)):
        raise NotImplementedError("view(dtype) is not supported; use .to(dtype)")
    shape = infer_shape("view", input.data.size, size_args("view", shape), input.data.shape)
    if not input.data.flags.c_contiguous and input.data.size > 1:
        try:
            input.data.view().shape = shape  # NumPy says whether a view is possible
        except AttributeError:
            raise RuntimeError(
                "view size is not compatible with input tensor's size and stride (at least one "
                "dimension spans across two contiguous subspaces). Use .reshape(...) instead."
            ) from None
    return Reshape(shape).apply(input)


def view_as(input: Tensor, other: Tensor) -> Tensor:
    return view(input, other.data.shape)


def reshape_as(input: Tensor, other: Tensor) -> Tensor:
    return reshape(input, other.data.shape)


def ravel(input: Tensor) -> Tensor:
    return reshape(input, -1)


def flatten(input: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    nd = input.data.ndim
    s = normalize_dim(start_dim, nd, "flatten")
    e = normalize_dim(end_dim, nd, "flatten")
    if nd == 0:
        return Reshape((1,)).apply(input)
    if s > e:
        raise RuntimeError("flatten() has invalid args: start_dim cannot come after end_dim")
    if s == e:
        return input
    shape = input.data.shape
    n = 1
    for k in shape[s : e + 1]:
        n *= k
    return Reshape(shape[:s] + (n,) + shape[e + 1 :]).apply(input)


def unflatten(input: Tensor, dim: int, sizes) -> Tensor:
    shape = input.data.shape
    d = normalize_dim(dim, input.data.ndim, "unflatten")
    sizes = tuple(int(s) for s in sizes)
    if not sizes:
        raise RuntimeError("unflatten: sizes must be non-empty")
    n = shape[d] if shape else 1
    if sizes.count(-1) > 1:
        raise RuntimeError(
            f"unflatten: only one dimension can be inferred, got sizes {list(sizes)}"
        )
    known = 1
    for s in sizes:
        if s != -1:
            known *= s
    if -1 in sizes and known and n % known == 0:
        sizes = tuple(n // known if s == -1 else s for s in sizes)
        known = n
    if -1 in sizes or known != n or any(s < 0 for s in sizes):
        raise RuntimeError(
            f"unflatten: Provided sizes {list(sizes)} don't multiply up to the "
            f"size of dim {dim} ({n}) in the input tensor"
        )
    return Reshape(shape[:d] + sizes + shape[d + 1 :]).apply(input)


def squeeze(input: Tensor, dim=None) -> Tensor:
    shape = input.data.shape
    if dim is None:
        new = tuple(s for s in shape if s != 1)
    else:
        dims = normalize_dims(dim, input.data.ndim, "squeeze")
        new = tuple(s for i, s in enumerate(shape) if not (i in dims and s == 1))
    return Squeeze(new).apply(input)


def unsqueeze(input: Tensor, dim: int) -> Tensor:
    shape = input.data.shape
    d = insert_dim(dim, len(shape), "unsqueeze")
    return Unsqueeze(shape[:d] + (1,) + shape[d:]).apply(input)


def expand(input: Tensor, *sizes) -> Tensor:
    sizes = size_args("expand", sizes)
    nd = input.data.ndim
    if len(sizes) < nd:
        raise RuntimeError(
            f"expand: the number of sizes provided ({len(sizes)}) must be greater or equal to "
            f"the number of dimensions in the tensor ({nd})"
        )
    lead = len(sizes) - nd
    shape = []
    for i, s in enumerate(sizes):
        if i < lead:
            if s < 0:
                raise RuntimeError(
                    f"expand: -1 is not allowed in a leading, non-existing dimension {i}"
                )
            shape.append(s)
            continue
        cur = input.data.shape[i - lead]
        if s == -1:
            s = cur
        if cur != s and cur != 1:
            raise RuntimeError(
                f"expand: the expanded size of the tensor ({s}) must match the existing size "
                f"({cur}) at non-singleton dimension {i}.  Target sizes: {list(sizes)}.  Tensor "
                f"sizes: {list(input.data.shape)}"
            )
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
    dims = size_args("permute", dims)
    nd = input.data.ndim
    if len(dims) != nd:
        raise RuntimeError(
            f"permute: number of dims don't match in permute: got {len(dims)} dims for a tensor "
            f"with ndim {nd}"
        )
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
        raise RuntimeError(
            f"t() expects a tensor with <= 2 dimensions, but self is {input.data.ndim}D"
        )
    return transpose(input, 0, 1) if input.data.ndim == 2 else input


def _T(self) -> Tensor:  # noqa: N802
    nd = self.data.ndim
    return Permute(tuple(range(nd - 1, -1, -1))).apply(self) if nd >= 2 else self


def _mT(self) -> Tensor:  # noqa: N802
    if self.data.ndim < 2:
        raise RuntimeError(
            "mT: tensor.mT is only supported on matrices or batches of matrices. "
            f"Got {self.data.ndim}-D tensor."
        )
    return transpose(self, -2, -1)


def movedim(input: Tensor, source, destination) -> Tensor:
    nd = input.data.ndim
    src, dst = _dims_arg(source), _dims_arg(destination)
    if len(src) != len(dst):
        raise RuntimeError(
            f"movedim: Invalid source or destination dims: source ({list(src)} dims) should "
            f"contain the same number of dims as destination ({list(dst)} dims)"
        )
    src = tuple(normalize_dim(d, nd, "movedim") for d in src)
    dst = tuple(normalize_dim(d, nd, "movedim") for d in dst)
    for name, ds in (("source", src), ("destination", dst)):
        if len(set(ds)) != len(ds):
            raise RuntimeError(f"movedim: repeated dim in `{name}` ({list(ds)})")
    perm = [d for d in range(nd) if d not in src]
    for d, s in sorted(zip(dst, src)):
        perm.insert(d, s)
    if nd == 0:
        perm = []
    return Permute(tuple(perm)).apply(input)


def narrow(input: Tensor, dim: int, start, length: int) -> Tensor:
    nd = input.data.ndim
    if nd == 0:
        raise RuntimeError("narrow() cannot be applied to a 0-dim tensor.")
    d = normalize_dim(dim, nd, "narrow")
    if isinstance(start, Tensor):
        if start.data.ndim or start.data.dtype.kind not in "iu":
            raise RuntimeError("narrow: start must be an 0-dim integral Tensor.")
        start = int(start.item())
    size = input.data.shape[d]
    if not -size <= start <= size:
        raise IndexError(
            f"narrow: start out of range (expected to be in range of "
            f"[{-size}, {size}], but got {start})"
        )
    start = start + size if start < 0 else start
    if length < 0:
        raise RuntimeError("narrow(): length must be non-negative.")
    if start + length > size:
        raise RuntimeError(
            f"narrow: start ({start}) + length ({length}) exceeds dimension "
            f"size ({size}) of input {list(input.data.shape)}."
        )
    return Slice(axis_index(d, slice(start, start + length))).apply(input)


def _diag_dims(nd: int, offset: int, dim1: int, dim2: int, op: str) -> tuple:
    d1, d2 = normalize_dim(dim1, nd, op), normalize_dim(dim2, nd, op)
    if d1 == d2:
        raise RuntimeError(f"{op}: diagonal dimensions cannot be identical {dim1}, {dim2}")
    return int(offset), d1, d2


def diagonal(input: Tensor, offset: int = 0, dim1: int = 0, dim2: int = 1) -> Tensor:
    if input.data.ndim < 2:
        raise RuntimeError(
            f"diagonal: expected a tensor with at least 2 dimensions, got shape "
            f"{list(input.data.shape)}"
        )
    return Diagonal(*_diag_dims(input.data.ndim, offset, dim1, dim2, "diagonal")).apply(input)


def diag_embed(input: Tensor, offset: int = 0, dim1: int = -2, dim2: int = -1) -> Tensor:
    """A tensor whose ``(dim1, dim2)`` diagonals hold the last dim of ``input``."""
    nd = input.data.ndim + 1
    if nd < 2:
        raise RuntimeError("diag_embed: expected a tensor with at least 1 dimension, got 0-d")
    offset, d1, d2 = _diag_dims(nd, offset, dim1, dim2, "diag_embed")
    n = input.data.shape[-1] + abs(offset)
    rest = list(input.data.shape[:-1])
    for d in sorted((d1, d2)):
        rest.insert(d, n)
    return DiagonalScatter(tuple(rest), offset, d1, d2).apply(input)


def diag(input: Tensor, diagonal: int = 0) -> Tensor:
    nd = input.data.ndim
    if nd == 1:
        return diag_embed(input, diagonal, 0, 1)
    if nd == 2:
        return Diagonal(int(diagonal), 0, 1, copy=True).apply(input)
    raise RuntimeError(f"diag(): Supports 1D or 2D tensors. Got {nd}D")


# ------------------------------------------------------------------ copying ops
def flip(input: Tensor, *dims_args, dims=None) -> Tensor:
    dims = size_args("flip", dims_args or (dims,))
    nd = input.data.ndim
    axes = normalize_dims(dims, nd, "flip") or ()
    if nd == 0:
        axes = ()
    return Flip(axes).apply(input)


def fliplr(input: Tensor) -> Tensor:
    if input.data.ndim < 2:
        raise RuntimeError(f"fliplr: Input must be >= 2-d, got shape {list(input.data.shape)}.")
    return Flip((1,)).apply(input)


def flipud(input: Tensor) -> Tensor:
    if input.data.ndim < 1:
        raise RuntimeError("flipud: Input must be >= 1-d, got a 0-d tensor.")
    return Flip((0,)).apply(input)


def roll(input: Tensor, shifts, dims=None) -> Tensor:
    shifts = _dims_arg(shifts)
    nd = input.data.ndim
    if dims is None:
        if len(shifts) != 1:
            raise RuntimeError(
                f"roll: shifts and dimensions must align. shifts: {len(shifts)}, dims:0"
            )
        return Roll((int(shifts[0]),), None).apply(input)
    dims = _dims_arg(dims)
    if not shifts:
        raise RuntimeError("roll: `shifts` required")
    if len(shifts) != len(dims):
        raise RuntimeError(
            f"roll: shifts and dimensions must align. shifts: {len(shifts)}, dims:{len(dims)}"
        )
    axes = tuple(normalize_dim(d, nd, "roll") for d in dims)
    if nd == 0:
        return Roll((int(sum(shifts)),), None).apply(input)
    return Roll(tuple(int(s) for s in shifts), axes).apply(input)


def _tri(input: Tensor, diagonal: int, upper: bool) -> Tensor:
    if input.data.ndim < 2:
        op = "triu" if upper else "tril"
        raise RuntimeError(
            f"{op}: input tensor must have at least 2 dimensions, got shape "
            f"{list(input.data.shape)}"
        )
    return Tri(int(diagonal), upper).apply(input)


def tril(input: Tensor, diagonal: int = 0) -> Tensor:
    return _tri(input, diagonal, False)


def triu(input: Tensor, diagonal: int = 0) -> Tensor:
    return _tri(input, diagonal, True)


_SHARED = {
    "reshape": reshape,
    "broadcast_to": broadcast_to,
    "permute": permute,
    "transpose": transpose,
    "t": t,
    "swapaxes": transpose,
    "swapdims": transpose,
    "flatten": flatten,
    "unflatten": unflatten,
    "ravel": ravel,
    "squeeze": squeeze,
    "unsqueeze": unsqueeze,
    "movedim": movedim,
    "moveaxis": movedim,
    "narrow": narrow,
    "diagonal": diagonal,
    "diag_embed": diag_embed,
    "diag": diag,
    "flip": flip,
    "fliplr": fliplr,
    "flipud": flipud,
    "roll": roll,
    "tril": tril,
    "triu": triu,
}
METHODS = dict(
    _SHARED, view=view, view_as=view_as, reshape_as=reshape_as, expand=expand, expand_as=expand_as
)
PROPERTIES = {"T": _T, "mT": _mT}
FUNCTIONS = dict(_SHARED)
INPLACE = ("tril", "triu")
