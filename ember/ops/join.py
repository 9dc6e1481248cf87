"""Joining and splitting: cat, stack, split, chunk, unbind, repeat/tile (joined copies), and
pad (which joins borders; it is ``nn.functional.pad``, so it is not an ``ember.`` function).

Each multi-output op is one Function whose outputs are views of the input (all sharing its
version counter); the adjoint pairs (cat/split, stack/unbind, pad/fold) are each other's
backward, so double backward works.
"""

from __future__ import annotations

from ember.autograd.function import Function
from ember.ops.dims import normalize_dim
from ember.ops.promotion import cast
from ember.ops.reduction import sum as reduce_sum
from ember.ops.shape import ConstantPad, axis_index, insert_dim, reshape, size_args
from ember.tensor import dtypes
from ember.tensor.backend import get_array_module
from ember.tensor.tensor import Tensor


class Cat(Function):
    """Concatenate along ``axis``; inputs at ``skip`` (torch's legacy empty 1-D tensors)
    take no part and get an empty gradient."""

    def __init__(self, axis: int, skip: frozenset = frozenset()):
        self.axis, self.skip = axis, skip

    def forward(self, *arrays):
        kept = [a for i, a in enumerate(arrays) if i not in self.skip] or arrays[:1]
        self.bounds, start = [], 0
        for a in kept:
            self.bounds.append((start, start + a.shape[self.axis]))
            start += a.shape[self.axis]
        return get_array_module(kept[0]).concatenate(kept, axis=self.axis)

    def backward(self, g):
        pieces = Split(self.axis, self.bounds).apply(g)
        if not self.skip:
            return pieces
        pieces, xp = iter(pieces), get_array_module(g.data)
        return tuple(
            Tensor(xp.zeros((0,), g.data.dtype)) if i in self.skip else next(pieces)
            for i in range(len(self.next_edges))
        )


class Split(Function):
    """Views ``a[start:stop]`` along ``axis`` for each (start, stop) in ``bounds``."""

    is_view = True

    def __init__(self, axis: int, bounds: list):
        self.axis, self.bounds = axis, bounds

    def forward(self, a):
        self.src = a.shape
        ax = self.axis
        return tuple(a[axis_index(ax, slice(s, e))] for s, e in self.bounds)

    def backward(self, *grads):
        start = 0
        for s, e in self.bounds:  # a partition of the axis: the adjoint is cat
            if s != start:
                break
            start = e
        else:
            if start == self.src[self.axis]:
                return Cat(self.axis).apply(*grads)
        out = None  # overlapping or partial pieces (tensor_split): embed each and add
        for (s, e), g in zip(self.bounds, grads):
            part = ConstantPad(self.src, axis_index(self.axis, slice(s, e))).apply(g)
            out = part if out is None else out + part
        return out


class Stack(Function):
    def __init__(self, axis: int):
        self.axis = axis

    def forward(self, *arrays):
        return get_array_module(arrays[0]).stack(arrays, axis=self.axis)

    def backward(self, g):
        return Unbind(self.axis).apply(g)


class Repeat(Function):
    def __init__(self, reps: tuple):
        self.reps = reps

    def forward(self, a):
        self.src = a.shape
        lead = len(self.reps) - a.ndim
        return get_array_module(a).tile(a.reshape((1,) * lead + a.shape), self.reps)

    def backward(self, g):
        padded = (1,) * (len(self.reps) - len(self.src)) + tuple(self.src)
        split = []
        for r, s in zip(self.reps, padded):
            split += [r, s]
        g = reduce_sum(reshape(g, tuple(split)), dim=tuple(range(0, len(split), 2)))
        return reshape(g, self.src)


class Unbind(Function):
    is_view = True

    def __init__(self, axis: int):
        self.axis = axis

    def forward(self, a):
        ax = self.axis
        return tuple(a[axis_index(ax, i)] for i in range(a.shape[ax]))

    def backward(self, *grads):
        return Stack(self.axis).apply(*grads)


def _share_version(outs: tuple, base: Tensor) -> tuple:
    """Every output of a multi-view Function is a view of ``base`` (apply() links the first)."""
    root = base if base._base is None else base._base
    for o in outs[1:]:
        o._vc = base._vc
        o._base = root
    return outs


def _tensor_list(tensors, op: str) -> list:
    if isinstance(tensors, Tensor):
        raise TypeError(f"{op}: expected a sequence of Tensors, got a single Tensor")
    tensors = list(tensors)
    for i, x in enumerate(tensors):
        if not isinstance(x, Tensor):
            raise TypeError(f"{op}: expected Tensors, but element {i} is {type(x).__name__}")
    return tensors


def _promote(tensors: list, op: str) -> list:
    """Cast every tensor to the common dtype, as torch.cat and torch.stack do."""
    first = tensors[0].data
    for x in tensors:
        if type(x.data) is not type(first):
            raise RuntimeError(
                f"{op}: expected all tensors on the same device, got "
                f"{tensors[0].device} and {x.device}"
            )
    if all(x.data.dtype == first.dtype for x in tensors):
        return tensors
    rd = dtypes.result_type([x.dtype for x in tensors], [], [])
    return [cast(x, rd) for x in tensors]


# ------------------------------------------------------------------------- joining
def cat(tensors, dim: int = 0, *, out=None) -> Tensor:
    tensors = _tensor_list(tensors, "cat")
    if not tensors:
        raise ValueError("cat(): expected a non-empty list of Tensors")
    for i, x in enumerate(tensors):
        if x.data.ndim == 0:
            raise RuntimeError(
                f"cat: zero-dimensional tensor (at position {i}) cannot be concatenated"
            )
    skip = frozenset(i for i, x in enumerate(tensors) if x.data.shape == (0,))
    ref = next((x for i, x in enumerate(tensors) if i not in skip), tensors[0])
    nd = ref.data.ndim
    d = normalize_dim(dim, nd, "cat")
    for i, x in enumerate(tensors):
        if i in skip or x is ref:
            continue
        if x.data.ndim != nd:
            raise RuntimeError(
                f"cat: Tensors must have same number of dimensions: got {nd} and {x.data.ndim}"
            )
        for k in range(nd):
            if k != d and x.data.shape[k] != ref.data.shape[k]:
                raise RuntimeError(
                    f"cat: Sizes of tensors must match except in dimension {d}. Expected size "
                    f"{ref.data.shape[k]} but got size {x.data.shape[k]} for tensor number {i} "
                    f"in the list (shapes {[tuple(t.data.shape) for t in tensors]})."
                )
    return Cat(d, skip).apply(*_promote(tensors, "cat"))


def stack(tensors, dim: int = 0, *, out=None) -> Tensor:
    tensors = _tensor_list(tensors, "stack")
    if not tensors:
        raise RuntimeError("stack expects a non-empty TensorList")
    shape = tensors[0].data.shape
    for i, x in enumerate(tensors[1:], 1):
        if x.data.shape != shape:
            raise RuntimeError(
                f"stack expects each tensor to be equal size, but got "
                f"{list(shape)} at entry 0 and {list(x.data.shape)} at entry {i}"
            )
    d = insert_dim(dim, len(shape), "stack")
    return Stack(d).apply(*_promote(tensors, "stack"))


def _atleast(nd: int, tensors):
    def one(x: Tensor) -> Tensor:
        s = x.data.shape
        if len(s) >= nd:
            return x
        if nd == 3:
            s = (1, 1, 1) if not s else ((1,) + s + (1,) if len(s) == 1 else s + (1,))
        else:
            s = (1,) * (nd - len(s)) + s
        return reshape(x, s)

    if len(tensors) == 1 and isinstance(tensors[0], Tensor):
        return one(tensors[0])
    if len(tensors) == 1:
        tensors = tensors[0]
    return tuple(one(x) for x in tensors)


def atleast_1d(*tensors):
    return _atleast(1, tensors)


def atleast_2d(*tensors):
    return _atleast(2, tensors)


def atleast_3d(*tensors):
    return _atleast(3, tensors)


def _stack_like(op: str, tensors, nd: int, dim: int) -> Tensor:
    tensors = _tensor_list(tensors, op)
    if not tensors:
        raise RuntimeError(f"{op} expects a non-empty TensorList")
    tensors = [_atleast(nd, (x,)) for x in tensors]
    if op == "hstack" and all(x.data.ndim == 1 for x in tensors):
        dim = 0
    return cat(tensors, dim)


def hstack(tensors, *, out=None) -> Tensor:
    return _stack_like("hstack", tensors, 1, 1)


def vstack(tensors, *, out=None) -> Tensor:
    return _stack_like("vstack", tensors, 2, 0)


def dstack(tensors, *, out=None) -> Tensor:
    return _stack_like("dstack", tensors, 3, 2)


# ------------------------------------------------------------------------ tiling
def repeat(input: Tensor, *sizes) -> Tensor:
    if not sizes:
        raise TypeError('repeat() missing 1 required positional arguments: "repeats"')
    reps = size_args("repeat", sizes)
    shape = input.data.shape
    if len(reps) < len(shape):
        raise RuntimeError(
            "repeat: Number of dimensions of repeat dims can not be smaller than number of "
            f"dimensions of tensor (repeats {list(reps)}, tensor shape {list(shape)})"
        )
    padded = (1,) * (len(reps) - len(shape)) + tuple(shape)
    if any(r < 0 for r in reps):
        out = [r * s for r, s in zip(reps, padded)]
        raise RuntimeError(
            f"repeat: Trying to create tensor with negative dimension {min(out)}: {out}"
        )
    return Repeat(reps).apply(input)


def tile(input: Tensor, *dims_args, dims=None) -> Tensor:
    reps = size_args("tile", dims_args or (dims,))
    reps = (1,) * (input.data.ndim - len(reps)) + reps
    return repeat(input, reps)


# ----------------------------------------------------------------------- splitting
def _split_bounds(input: Tensor, bounds: list, d: int) -> tuple:
    return _share_version(Split(d, bounds).apply(input), input)


def _split_dim(input: Tensor, dim: int, op: str) -> int:
    if input.data.ndim == 0:
        raise RuntimeError(f"{op} expects at least a 1-dimensional tensor")
    return normalize_dim(dim, input.data.ndim, op)


def split(tensor: Tensor, split_size_or_sections, dim: int = 0) -> tuple:
    d = _split_dim(tensor, dim, "split")
    n = tensor.data.shape[d]
    if isinstance(split_size_or_sections, (list, tuple)):
        sizes = [int(s) for s in split_size_or_sections]
        if any(s < 0 for s in sizes):
            raise RuntimeError(
                f"split_with_sizes expects split_sizes have only non-negative "
                f"entries, but got split_sizes={sizes}"
            )
        if sum(sizes) != n:
            raise RuntimeError(
                f"split_with_sizes expects split_sizes to sum exactly to {n} (input tensor's "
                f"size at dimension {d}), but got split_sizes={sizes}"
            )
        bounds, start = [], 0
        for s in sizes:
            bounds.append((start, start + s))
            start += s
        return _split_bounds(tensor, bounds, d) if bounds else ()
    size = int(split_size_or_sections)
    if size < 0:
        raise RuntimeError(f"split expects split_size be non-negative, but got split_size={size}")
    if size == 0 and n:
        raise RuntimeError(
            f"split_size can only be 0 if dimension size is 0, but got dimension size of {n}"
        )
    bounds = [(i, min(i + size, n)) for i in range(0, n, size)] if n else [(0, 0)]
    return _split_bounds(tensor, bounds, d)


def chunk(input: Tensor, chunks: int, dim: int = 0) -> tuple:
    d = _split_dim(input, dim, "chunk")
    if chunks <= 0:
        raise RuntimeError(f"chunk expects `chunks` to be greater than 0, got: {chunks}")
    n = input.data.shape[d]
    if n == 0:
        return _split_bounds(input, [(0, 0)] * chunks, d)
    return split(input, -(-n // chunks), d)


def tensor_split(input: Tensor, indices_or_sections, dim: int = 0) -> tuple:
    if input.data.ndim == 0:
        raise RuntimeError(
            "tensor_split expected at least a 1-dimensional tensor, but got a tensor with 0 dims"
        )
    d = normalize_dim(dim, input.data.ndim, "tensor_split")
    n = input.data.shape[d]
    spec = indices_or_sections
    if isinstance(spec, Tensor):
        spec = spec.item() if spec.data.ndim == 0 else spec.tolist()
    if isinstance(spec, (list, tuple)):
        cuts = [0] + [min(max(int(i) + (n if i < 0 else 0), 0), n) for i in spec] + [n]
        bounds = [(s, max(s, e)) for s, e in zip(cuts, cuts[1:])]
    else:
        k = int(spec)
        if k <= 0:
            raise RuntimeError(f"number of sections must be larger than 0, got {k}")
        q, r = divmod(n, k)
        bounds, start = [], 0
        for i in range(k):
            size = q + (i < r)
            bounds.append((start, start + size))
            start += size
    return _split_bounds(input, bounds, d)


def unbind(input: Tensor, dim: int = 0) -> tuple:
    if input.data.ndim == 0:
        raise IndexError(f"unbind: Dimension specified as {dim} but tensor has no dimensions")
    d = normalize_dim(dim, input.data.ndim, "unbind")
    if input.data.shape[d] == 0:
        return ()
    return _share_version(Unbind(d).apply(input), input)


# ------------------------------------------------------------------------- padding
def _pad_widths(shape: tuple, pad) -> list:
    """torch's pad pairs (last dim first) as one (before, after) pair per dim."""
    pad = [int(p) for p in pad]
    if len(pad) % 2:
        raise RuntimeError(f"pad: Padding length must be divisible by 2, got pad={pad}")
    if len(pad) // 2 > len(shape):
        raise RuntimeError(
            f"pad: Padding length should be less than or equal to two times the input "
            f"dimension but got padding length {len(pad)} and input of dimension {len(shape)}"
        )
    widths = [(0, 0)] * len(shape)
    for i in range(len(pad) // 2):
        widths[len(shape) - 1 - i] = (pad[2 * i], pad[2 * i + 1])
    return widths


def _constant_pad(input: Tensor, widths: list, value) -> Tensor:
    shape = input.data.shape
    out, dst, src = [], [], []
    for d, (n, (lo, hi)) in enumerate(zip(shape, widths)):
        size, keep = n + lo + hi, n - max(-lo, 0) - max(-hi, 0)
        if keep < 0 or size < 0:
            raise RuntimeError(
                f"pad: the padding {widths[d]} crops dimension {d} of the input "
                f"{list(shape)} to a negative size ({min(keep, size)})"
            )
        out.append(size)
        src.append(slice(max(-lo, 0), max(-lo, 0) + keep))
        dst.append(slice(max(lo, 0), max(lo, 0) + keep))
    crop = any(lo < 0 or hi < 0 for lo, hi in widths)
    return ConstantPad(tuple(out), tuple(dst), tuple(src) if crop else None, value or 0).apply(
        input
    )


def _source_index(mode: str, n: int, lo: int, hi: int) -> list:
    """For each output position along one dim, the input position it copies."""
    if mode == "circular":  # torch crops first, then wraps around the cropped size
        first, m = max(-lo, 0), n - max(-lo, 0) - max(-hi, 0)
        return [first + (p - max(lo, 0)) % m for p in range(m + max(lo, 0) + max(hi, 0))]
    out = []
    for p in range(n + lo + hi):
        q = p - lo
        if mode == "reflect":
            q = -q if q < 0 else (2 * (n - 1) - q if q >= n else q)
        else:
            q = min(max(q, 0), n - 1)
        out.append(q)
    return out


def _runs(idx: list) -> list:
    """Compress an index map into runs (in_start, step, length) with step in -1, 0, 1."""
    runs, i = [], 0
    while i < len(idx):
        step = idx[i + 1] - idx[i] if i + 1 < len(idx) else 1
        step = step if step in (-1, 0, 1) else 1
        j = i + 1
        while j < len(idx) and idx[j] - idx[j - 1] == step:
            j += 1
        runs.append((idx[i], step, j - i))
        i = j
    return runs


def _run_index(start: int, step: int, length: int) -> slice:
    if step == -1:
        stop = start - length
        return slice(start, stop if stop >= 0 else None, -1)
    return slice(start, start + (length if step else 1))


class IndexPad(Function):
    """reflect / replicate / circular padding: per padded axis, the output is a concatenation
    of runs of the input (reversed for reflect, broadcast for replicate).

    Without cropping (``fills`` given), the input is copied once into the middle of the
    output and each axis's borders are then filled from the output itself, axis after axis
    (one full copy, where a concatenation per axis made one each: reflect-padding (32, 64,
    32, 32) by 1 took 8.7 ms forward + backward against torch's 2.7)."""

    def __init__(self, plan: tuple, mode: str, fills=None):
        self.plan, self.mode, self.fills = plan, mode, fills  # plan: ((axis, n_in, runs), ...)

    def forward(self, a):
        xp = get_array_module(a)
        if self.fills is not None and a.size:
            return _fill_borders(xp, a, self.fills)
        for ax, _, runs in self.plan:
            if not runs:  # an empty output dim
                a = a[axis_index(ax, slice(0, 0))]
                continue
            pieces = []
            for start, step, length in runs:
                p = a[axis_index(ax, _run_index(start, step, length))]
                if step == 0:
                    shape = list(p.shape)
                    shape[ax] = length
                    p = xp.broadcast_to(p, tuple(shape))
                pieces.append(p)
            a = xp.concatenate(pieces, axis=ax)
        return a if all(r for _, _, r in self.plan) else a.copy()

    def backward(self, g):
        return PadFold(self.plan, self.mode, self.fills).apply(g)

    def name(self) -> str:
        return {"reflect": "ReflectionPad", "replicate": "ReplicationPad"}.get(
            self.mode, "CircularPad"
        ) + "Backward"


def _border_fills(mode: str, n: int, lo: int, hi: int) -> tuple:
    """(destination, source, broadcast) per run of border positions along one axis, as
    slices of output positions: the ``lo`` and ``hi`` borders filled from the copied input
    at ``lo .. lo + n`` (``broadcast``: replicate's one source for the whole run)."""
    idx = _source_index(mode, n, lo, hi)
    fills = []
    for first, stop in ((0, lo), (lo + n, lo + n + hi)):
        pos = first
        for start, step, length in _runs([lo + q for q in idx[first:stop]]):
            dst = slice(pos, pos + length)
            fills.append((dst, _run_index(start, step, length), step == 0 and length > 1))
            pos += length
    return tuple(fills)


def _fill_slices(fills, k: int, ax_slice: slice, ndim: int) -> tuple:
    """The index of a border slab of the k-th padded axis: the axes filled before it at full
    extent, those after it over their copied middle only."""
    key = [slice(None)] * ndim
    for j, (ax, lo, n, _, _) in enumerate(fills):
        if j > k:
            key[ax] = slice(lo, lo + n)
    key[fills[k][0]] = ax_slice
    return tuple(key)


def _middle(fills, ndim: int) -> tuple:
    key = [slice(None)] * ndim
    for ax, lo, n, _, _ in fills:
        key[ax] = slice(lo, lo + n)
    return tuple(key)


def _fill_borders(xp, a, fills):
    shape = list(a.shape)
    for ax, lo, n, hi, _ in fills:
        shape[ax] = lo + n + hi
    out = xp.empty(tuple(shape), a.dtype)
    out[_middle(fills, a.ndim)] = a
    for k, fill in enumerate(fills):
        for dst, src, _ in fill[4]:
            out[_fill_slices(fills, k, dst, a.ndim)] = out[_fill_slices(fills, k, src, a.ndim)]
    return out


def _fold_borders(xp, g, fills):
    """The adjoint of _fill_borders: border slabs added back onto their sources, the last
    filled axis first, on one copy of ``g``; the middle of it is the gradient (a view)."""
    work = g.copy()
    for k in range(len(fills) - 1, -1, -1):
        ax = fills[k][0]
        for dst, src, broadcast in fills[k][4]:
            part = work[_fill_slices(fills, k, dst, g.ndim)]
            if broadcast:
                part = part.sum(axis=ax, keepdims=True)
            work[_fill_slices(fills, k, src, g.ndim)] += part
    return work[_middle(fills, g.ndim)]


class PadFold(Function):
    """The adjoint of IndexPad: each padded position's gradient is added to its source."""

    def __init__(self, plan: tuple, mode: str, fills=None):
        self.plan, self.mode, self.fills = plan, mode, fills

    def forward(self, g):
        xp = get_array_module(g)
        if self.fills is not None and g.size:
            return _fold_borders(xp, g, self.fills)
        for ax, n, runs in reversed(self.plan):
            parts, pos = [], 0
            for start, step, length in runs:
                p = g[axis_index(ax, slice(pos, pos + length))]
                pos += length
                if step == 0:
                    p = p.sum(axis=ax, keepdims=True)
                parts.append((_run_index(start, step, length), p))
            whole = next(
                (
                    k
                    for k, (idx, _) in enumerate(parts)
                    if idx.start == 0 and idx.step is None and idx.stop == n
                ),
                None,
            )
            shape = list(g.shape)
            shape[ax] = n
            out = parts[whole][1].copy() if whole is not None else xp.zeros(shape, g.dtype)
            for k, (idx, p) in enumerate(parts):
                if k != whole:
                    out[axis_index(ax, idx)] += p
            g = out
        return g

    def backward(self, gg):
        return IndexPad(self.plan, self.mode, self.fills).apply(gg)


def _index_pad(input: Tensor, widths: list, mode: str, npad: int) -> Tensor:
    shape = input.data.shape
    nd, k = len(shape), npad // 2
    if not (1 <= k <= 3 and nd in (k + 1, k + 2)):
        raise NotImplementedError(
            f"pad: Padding size {npad} is not supported for {nd}D input tensor (mode '{mode}')."
        )
    if mode != "circular" and 0 in shape[1:]:
        raise RuntimeError(
            f"pad: Expected {k + 1}D or {k + 2}D (batch mode) tensor with possibly 0 batch size "
            f"and other non-zero dimensions for input, but got: {list(shape)}"
        )
    plan = []
    for ax in range(nd - k, nd):
        n, (lo, hi) = shape[ax], widths[ax]
        if lo == hi == 0:
            continue
        if mode == "reflect" and (lo >= n or hi >= n):
            raise RuntimeError(
                f"pad: Padding size should be less than the corresponding input dimension, but "
                f"got: padding ({lo}, {hi}) at dimension {ax} of input {list(shape)}"
            )
        if mode == "circular":
            m = n - max(-lo, 0) - max(-hi, 0)
            if m < 0:
                raise RuntimeError(
                    f"pad: Negative padding value is resulting in an empty "
                    f"dimension (padding ({lo}, {hi}), input {list(shape)})."
                )
            if max(lo, hi) > m:
                raise RuntimeError(
                    f"pad: Padding value causes wrapping around more than once "
                    f"(padding ({lo}, {hi}), input {list(shape)})."
                )
        elif n + lo + hi < 0:
            raise RuntimeError(
                f"pad: input (dimension {ax} of size {n}) is too small for "
                f"padding ({lo}, {hi}). Calculated output size: {n + lo + hi}"
            )
        plan.append((ax, n, tuple(_runs(_source_index(mode, n, lo, hi)))))
    if not plan:
        from ember.ops.conversion import clone

        return clone(input)
    fills = None
    if all(widths[ax][0] >= 0 and widths[ax][1] >= 0 for ax, _, _ in plan):  # no cropping
        fills = tuple(
            (ax, widths[ax][0], n, widths[ax][1], _border_fills(mode, n, *widths[ax]))
            for ax, n, _ in plan
        )
    return IndexPad(tuple(plan), mode, fills).apply(input)


def pad(input: Tensor, pad, mode: str = "constant", value=None) -> Tensor:
    """torch.nn.functional.pad: ``pad`` pairs start at the last dim; negative pads crop."""
    widths = _pad_widths(input.data.shape, pad)
    if mode == "constant":
        return _constant_pad(input, widths, value)
    if mode not in ("reflect", "replicate", "circular"):
        raise NotImplementedError(f"pad: Unrecognised padding mode {mode}")
    if value is not None and value != 0:
        raise RuntimeError(f'pad: Padding mode "{mode}" doesn\'t take in value argument')
    return _index_pad(input, widths, mode, 2 * (len(tuple(pad)) // 2))


_SHARED = {
    "split": split,
    "chunk": chunk,
    "tensor_split": tensor_split,
    "unbind": unbind,
    "tile": tile,
}
METHODS = dict(_SHARED, repeat=repeat)
FUNCTIONS = dict(
    _SHARED,
    cat=cat,
    concat=cat,
    concatenate=cat,
    stack=stack,
    hstack=hstack,
    vstack=vstack,
    row_stack=vstack,
    dstack=dstack,
    atleast_1d=atleast_1d,
    atleast_2d=atleast_2d,
    atleast_3d=atleast_3d,
)
