"""Pooling kernels (raw NumPy/CuPy arrays, written once) and their Functions.

Every window is read through strided slices of the (padded) input, one slice per kernel
offset, so the Python loops run over kernel offsets and never over pixels. The pooled dims
are the trailing ones: batched and unbatched inputs take the same path.

Max pooling keeps, per output element, the offset (0 .. prod(kernel) - 1) of the winner in
the smallest integer dtype, as torch's first-max rule picks it (NaN wins). Its backward is a
scatter through those offsets, whose own gradient is the matching gather (and back), so
double backward works. Average pooling and adaptive average pooling are linear maps; their
backward is the adjoint map, whose backward is the map again.
"""

from __future__ import annotations

import itertools

import numpy as np

from ember.autograd.function import Function
from ember.cuda import pooling as cuda_pool
from ember.cuda.compile import kernels_enabled
from ember.nn.functional import _max_pool_cpu as _mp_cpu
from ember.ops.index_kernels import add_at
from ember.tensor.backend import get_array_module


class PoolGeometry:
    """Kernel, stride, padding (lo) and dilation per pooled dim, the input's pooled sizes and
    the padded buffer they need (the right pad may grow for ceil_mode)."""

    __slots__ = ("kernel", "stride", "pad", "dilation", "in_sp", "out_sp", "padded")

    def __init__(self, kernel, stride, pad, dilation, in_sp, out_sp):
        self.kernel, self.stride, self.pad, self.dilation = kernel, stride, pad, dilation
        self.in_sp, self.out_sp = in_sp, out_sp
        self.padded = tuple(
            max((o - 1) * s + d * (k - 1) + 1, p + n)
            for o, s, d, k, p, n in zip(out_sp, stride, dilation, kernel, pad, in_sp)
        )

    def needs_pad(self) -> bool:
        return any(p for p in self.pad) or self.padded != self.in_sp

    def slices(self):
        """(offset number, strided slices over the padded input) for each kernel offset."""
        for n, offs in enumerate(itertools.product(*[range(k) for k in self.kernel])):
            yield (
                n,
                (Ellipsis,)
                + tuple(
                    slice(o * d, o * d + s * (m - 1) + 1, s)
                    for o, d, s, m in zip(offs, self.dilation, self.stride, self.out_sp)
                ),
            )

    def disjoint(self) -> bool:
        return all(s >= d * (k - 1) + 1 for s, d, k in zip(self.stride, self.dilation, self.kernel))

    def crop(self) -> tuple:
        return (Ellipsis,) + tuple(slice(p, p + n) for p, n in zip(self.pad, self.in_sp))


def _padded(x, geo: PoolGeometry, value):
    """x inside a buffer of ``geo.padded`` filled with ``value`` (x itself if none needed)."""
    if not geo.needs_pad():
        return x
    xp = get_array_module(x)
    lead = x.shape[: x.ndim - len(geo.in_sp)]
    out = xp.full(lead + geo.padded, value, dtype=x.dtype)
    out[geo.crop()] = x
    return out


def _zeros_padded(like, lead: tuple, geo: PoolGeometry):
    return get_array_module(like).zeros(lead + geo.padded, dtype=like.dtype)


def _lowest(dtype):
    if np.dtype(dtype).kind in "iu":
        return np.iinfo(dtype).min
    if np.dtype(dtype).kind == "b":
        return False
    return -np.inf


def _offset_dtype(n: int):
    return np.uint8 if n <= 256 else np.int32


def max_pool_forward(x, geo: PoolGeometry):
    """(max over each window, offset of the first max in it).

    Only SIMD-friendly ufuncs (greater, maximum, a multiply on bools): a ``copyto(where=)``
    per offset is several times slower. ``maximum`` propagates NaN but ``greater`` cannot see
    it, so a result with NaN is redone by the exact (slower) path."""
    xp = get_array_module(x)
    if xp is not np and _kernel(x, geo):  # ember/cuda/pooling.cu
        y, idx = cuda_pool.max_pool2d_forward(x, *_geo2d(geo), geo.dilation, geo.out_sp)
        return y, idx.astype(_offset_dtype(int(np.prod(geo.kernel))))
    if xp is np and _mp_cpu.usable(x, geo, x.size // 4):  # 2x2 stride 2: pairs, in blocks, threaded
        fast = _mp_cpu.forward(x)
        if fast is not None:  # None: a NaN, handled below
            return fast
    xpad = _padded(x, geo, _lowest(x.dtype))
    best = idx = None
    for k, sl in geo.slices():
        v = xpad[sl]
        if best is None:
            best = v.copy()
            idx = xp.zeros(best.shape, dtype=_offset_dtype(int(np.prod(geo.kernel))))
            continue
        win = xp.greater(v, best)
        xp.maximum(best, v, out=best)
        # offsets only grow, so "idx = k where v won" is a maximum
        xp.maximum(idx, win * idx.dtype.type(k), out=idx)
    if _is_floating(x.dtype) and bool(xp.isnan(best).any()):
        return _max_pool_forward_nan(xpad, geo, idx.dtype)
    return best, idx


def _is_floating(dtype) -> bool:
    return dtype.kind == "f" or str(dtype) == "bfloat16"


def _max_pool_forward_nan(xpad, geo: PoolGeometry, idx_dtype):
    """torch's rule exactly: a value wins if it is greater or NaN (so the last NaN wins)."""
    xp = get_array_module(xpad)
    best = idx = None
    for k, sl in geo.slices():
        v = xpad[sl]
        if best is None:
            best, idx = v.copy(), xp.zeros(v.shape, dtype=idx_dtype)
            continue
        win = (v > best) | (v != v)
        xp.copyto(best, v, where=win)
        xp.copyto(idx, k, where=win)
    return best, idx


def max_pool_scatter(g, idx, geo: PoolGeometry):
    """The gradient of max pooling: g sent to each window's winner."""
    xp = get_array_module(g)
    if xp is not np and _kernel(g, geo):
        return cuda_pool.max_pool2d_backward(g, idx, geo.in_sp, *_geo2d(geo), geo.dilation)
    if xp is np and idx.dtype == np.uint8 and _mp_cpu.usable(g, geo, g.size):
        return _mp_cpu.scatter(g, idx)
    lead = g.shape[: g.ndim - len(geo.in_sp)]
    disjoint = geo.disjoint()
    # g * hit is the fast form, but would spread a non-finite g over the whole window
    finite = bool(xp.isfinite(g).all()) if _is_floating(g.dtype) else True
    gx = (xp.empty if disjoint and finite and _tiles(geo) else xp.zeros)(
        lead + geo.padded, dtype=g.dtype
    )
    for k, sl in geo.slices():
        hit = idx == k
        if not finite:
            gx[sl] += xp.where(hit, g, 0)
        elif disjoint:
            xp.multiply(g, hit, out=gx[sl])
        else:
            gx[sl] += g * hit
    return gx[geo.crop()] if geo.needs_pad() else gx


def _tiles(geo: PoolGeometry) -> bool:
    """Windows that cover the padded buffer exactly once (kernel == stride, no dilation gaps,
    nothing left over)."""
    return all(
        s == k and (d == 1 or k == 1) and o * s == p
        for s, k, d, o, p in zip(geo.stride, geo.kernel, geo.dilation, geo.out_sp, geo.padded)
    )


def max_pool_gather(gg, idx, geo: PoolGeometry):
    """The adjoint of the scatter: each window's winner read back."""
    xp = get_array_module(gg)
    gpad = _padded(gg, geo, 0)
    out = xp.zeros(idx.shape, dtype=gg.dtype)
    for k, sl in geo.slices():
        out += xp.where(idx == k, gpad[sl], 0)
    return out


def flat_indices(idx, geo: PoolGeometry):
    """torch's return_indices: each winner's flat position in its (unpadded) input plane."""
    xp = get_array_module(idx)
    nd = len(geo.kernel)
    local = idx.astype(np.int64)
    flat = None
    plane = 1
    for d in range(nd - 1, -1, -1):
        k, s, p, dil, o = geo.kernel[d], geo.stride[d], geo.pad[d], geo.dilation[d], geo.out_sp[d]
        local, off = divmod(local, k)
        start = (xp.arange(o, dtype=np.int64) * s - p).reshape((o,) + (1,) * (nd - 1 - d))
        pos = start + off * dil
        flat = pos * plane if flat is None else flat + pos * plane
        plane *= geo.in_sp[d]
    return flat


class MaxPool(Function):
    def __init__(self, geo: PoolGeometry, return_indices: bool):
        self.geo, self.return_indices = geo, return_indices

    def forward(self, x):
        out, idx = max_pool_forward(x, self.geo)
        self.save_for_backward(idx)
        if not self.return_indices:
            return out
        flat = flat_indices(idx, self.geo)
        self.mark_non_differentiable(flat)
        return out, flat

    def backward(self, g, _=None):
        (idx,) = self.saved_tensors
        return MaxPoolScatter(self.geo, idx.data).apply(g)


class MaxPoolScatter(Function):
    def __init__(self, geo: PoolGeometry, idx):
        self.geo, self.idx = geo, idx

    def forward(self, g):
        return max_pool_scatter(g, self.idx, self.geo)

    def backward(self, gg):
        return MaxPoolGather(self.geo, self.idx).apply(gg)


class MaxPoolGather(Function):
    def __init__(self, geo: PoolGeometry, idx):
        self.geo, self.idx = geo, idx

    def forward(self, gg):
        return max_pool_gather(gg, self.idx, self.geo)

    def backward(self, g):
        return MaxPoolScatter(self.geo, self.idx).apply(g)


# ------------------------------------------------------------------------ average
def avg_divisor(geo: PoolGeometry, count_include_pad: bool, divisor_override):
    """The divisor per output element (a scalar when it is the same everywhere): the window's
    size clipped to the padded input (count_include_pad) or to the input itself."""
    if divisor_override is not None:
        return float(divisor_override)
    nd = len(geo.kernel)
    total = None
    uniform = True
    for d in range(nd):
        k, s, p, o, n = geo.kernel[d], geo.stride[d], geo.pad[d], geo.out_sp[d], geo.in_sp[d]
        start = np.arange(o) * s - p
        end = np.minimum(start + k, n + p)
        if not count_include_pad:
            start, end = np.maximum(start, 0), np.minimum(end, n)
        size = (end - start).reshape((o,) + (1,) * (nd - 1 - d))
        uniform = uniform and bool(np.all(size == k))
        total = size if total is None else total * size
    if uniform:
        return float(np.prod(geo.kernel))
    return total


def _divide(acc, divisor, xp):
    if isinstance(divisor, float):
        if acc.dtype.kind in "iu":
            return _trunc_div(acc, divisor, xp)
        acc *= acc.dtype.type(1.0 / divisor)
        return acc
    div = xp.asarray(divisor)
    if acc.dtype.kind in "iu":
        return _trunc_div(acc, div, xp)
    acc /= div.astype(acc.dtype)
    return acc


def _trunc_div(acc, divisor, xp):
    """Integer average pooling truncates toward zero (C integer division, as torch)."""
    return xp.trunc(acc / divisor).astype(acc.dtype)


def _kernel(x, geo: PoolGeometry) -> bool:
    """ember/cuda/pooling.cu replaces the composite (2-D pooling of a CuPy float array)."""
    return kernels_enabled() and cuda_pool.supports(x, geo.kernel)


def _geo2d(geo: PoolGeometry) -> tuple:
    return geo.kernel, geo.stride, geo.pad


def avg_pool_forward(x, geo: PoolGeometry, divisor):
    xp = get_array_module(x)
    if xp is not np and isinstance(divisor, float) and _kernel(x, geo):
        return cuda_pool.avg_pool2d_forward(x, *_geo2d(geo), geo.out_sp, divisor_override=divisor)
    if _tiled(geo):  # large windows side by side: one reduction over the window axes
        acc = _window_view(x, geo).sum(axis=_window_axes(x.ndim, geo), dtype=x.dtype)
        return _divide(acc, divisor, xp)
    xpad = _padded(x, geo, 0)
    acc = None
    for _, sl in geo.slices():
        if acc is None:
            acc = xpad[sl].copy()
        else:
            acc += xpad[sl]
    return _divide(acc, divisor, xp)


# Windows of at least this many elements that tile the input (stride = kernel, no padding or
# dilation) are summed as one reduction over a (..., o, k, ...) view, and their gradient is
# one broadcast copy: a loop over kernel offsets is a Python step per offset, 1024 of them for
# a global average pool of 32x32 maps (25x torch's time). Small windows keep the offset loop,
# which beats a reduction over short axes.
_TILED_MIN = 16


def _tiled(geo: PoolGeometry) -> bool:
    k = geo.kernel
    return (
        _prod(k) >= _TILED_MIN
        and tuple(geo.stride) == tuple(k)
        and all(d == 1 for d in geo.dilation)
        and not geo.needs_pad()
    )


def _window_view(x, geo: PoolGeometry):
    """The tiled part of ``x`` as (..., o1, k1, o2, k2, ...): input rows and columns past
    the last whole window (floor mode) are left out."""
    nd = len(geo.kernel)
    lead = x.shape[: x.ndim - nd]
    x = x[(Ellipsis,) + tuple(slice(0, o * k) for o, k in zip(geo.out_sp, geo.kernel))]
    split = tuple(v for o, k in zip(geo.out_sp, geo.kernel) for v in (o, k))
    return x.reshape(lead + split)


def _window_axes(ndim: int, geo: PoolGeometry) -> tuple:
    first = ndim - len(geo.kernel)
    return tuple(first + 2 * i + 1 for i in range(len(geo.kernel)))


def _prod(t) -> int:
    p = 1
    for v in t:
        p *= v
    return p


def avg_pool_adjoint(g, geo: PoolGeometry, divisor):
    xp = get_array_module(g)
    if xp is not np and isinstance(divisor, float) and _kernel(g, geo):
        return cuda_pool.avg_pool2d_backward(g, geo.in_sp, *_geo2d(geo), divisor_override=divisor)
    gs = _divide(g.copy(), divisor, xp)
    lead = g.shape[: g.ndim - len(geo.in_sp)]
    if _tiled(geo):
        whole = tuple(o * k for o, k in zip(geo.out_sp, geo.kernel))
        exact = whole == tuple(geo.in_sp)
        gx = (xp.empty if exact else xp.zeros)(lead + tuple(geo.in_sp), dtype=g.dtype)
        axes = _window_axes(g.ndim, geo)
        _window_view(gx, geo)[...] = xp.expand_dims(gs, axes)
        return gx
    gx = _zeros_padded(g, lead, geo)
    disjoint = geo.disjoint()
    for _, sl in geo.slices():
        if disjoint:
            gx[sl] = gs
        else:
            gx[sl] += gs
    return gx[geo.crop()] if geo.needs_pad() else gx


class AvgPool(Function):
    def __init__(self, geo: PoolGeometry, divisor):
        self.geo, self.divisor = geo, divisor

    def forward(self, x):
        return avg_pool_forward(x, self.geo, self.divisor)

    def backward(self, g):
        return AvgPoolAdjoint(self.geo, self.divisor).apply(g)


class AvgPoolAdjoint(Function):
    def __init__(self, geo: PoolGeometry, divisor):
        self.geo, self.divisor = geo, divisor

    def forward(self, g):
        return avg_pool_adjoint(g, self.geo, self.divisor)

    def backward(self, gg):
        return AvgPool(self.geo, self.divisor).apply(gg)


# ----------------------------------------------------------------------- adaptive
def adaptive_bounds(n: int, o: int):
    """torch's adaptive windows: [floor(i*n/o), ceil((i+1)*n/o)) for each output i."""
    i = np.arange(o)
    return (i * n) // o, -((-(i + 1) * n) // o)


def averaging_matrix(n: int, o: int, dtype, xp):
    """(o, n): row i averages input window i."""
    start, end = adaptive_bounds(n, o)
    cols = np.arange(n)
    inside = (cols >= start[:, None]) & (cols < end[:, None])
    mat = inside / (end - start)[:, None]
    return xp.asarray(mat.astype(dtype))


def apply_along(x, mats):
    """x with ``mats[d]`` (o_d, n_d) applied along the d-th of its trailing len(mats) dims."""
    xp = get_array_module(x)
    nd = len(mats)
    for d, mat in enumerate(mats):
        if mat is None:
            continue
        axis = x.ndim - nd + d
        moved = xp.moveaxis(x, axis, -1)
        shape = moved.shape
        y = moved.reshape(-1, shape[-1]) @ mat.T
        if y.dtype != x.dtype:
            y = y.astype(x.dtype)
        x = xp.moveaxis(y.reshape(shape[:-1] + (mat.shape[0],)), -1, axis)
    return xp.ascontiguousarray(x)


class Separable(Function):
    """x -> x with one matrix applied per pooled dim (adaptive average pooling)."""

    def __init__(self, mats):
        self.mats = mats

    def forward(self, x):
        return apply_along(x, self.mats)

    def backward(self, g):
        return Separable([None if m is None else m.T for m in self.mats]).apply(g)


def adaptive_max_forward(x, out_sp: tuple):
    """Max over torch's adaptive windows. Windows differ in length, so each offset t reads
    position min(start + t, end - 1) (repeating a window's last element is harmless for a
    max); returns (max, flat index of the winner in its input plane)."""
    xp = get_array_module(x)
    nd = len(out_sp)
    in_sp = x.shape[x.ndim - nd :]
    tables = []
    for n, o in zip(in_sp, out_sp):
        start, end = adaptive_bounds(n, o)
        span = int((end - start).max()) if o else 0
        tables.append([np.minimum(start + t, end - 1) for t in range(span)])
    best = flat = None
    floating = _is_floating(x.dtype)
    for combo in itertools.product(*tables):
        key = tuple(
            xp.asarray(pos.reshape((-1,) + (1,) * (nd - 1 - d))) for d, pos in enumerate(combo)
        )
        v = x[(Ellipsis,) + key]
        lin = None
        plane = 1
        for d in range(nd - 1, -1, -1):
            term = key[d] * plane
            lin = term if lin is None else lin + term
            plane *= in_sp[d]
        if best is None:
            best = v.copy()
            flat = xp.broadcast_to(lin, best.shape).astype(np.int64)
            continue
        win = v > best
        if floating:
            win |= v != v
        xp.copyto(best, v, where=win)
        xp.copyto(flat, xp.broadcast_to(lin, best.shape), where=win)
    if best is None:  # an empty output
        shape = x.shape[: x.ndim - nd] + tuple(out_sp)
        return xp.empty(shape, dtype=x.dtype), xp.empty(shape, dtype=np.int64)
    return best, flat


def _planes(shape: tuple, nd: int) -> int:
    p = 1
    for s in shape[: len(shape) - nd]:
        p *= s
    return p


def flat_scatter(g, flat, in_sp: tuple):
    """Add g into a zero input at the flat plane positions (windows may overlap)."""
    xp = get_array_module(g)
    nd = len(in_sp)
    lead = g.shape[: g.ndim - nd]
    planes = _planes(g.shape, nd)
    size = int(np.prod(in_sp))
    gx = xp.zeros((planes, size), dtype=g.dtype)
    rows = xp.arange(planes).reshape(-1, 1)
    add_at(gx, (rows, flat.reshape(planes, -1)), g.reshape(planes, -1))
    return gx.reshape(lead + tuple(in_sp))


def flat_gather(gg, flat, nd: int):
    xp = get_array_module(gg)
    planes = _planes(gg.shape, nd)
    out = xp.take_along_axis(gg.reshape(planes, -1), flat.reshape(planes, -1), axis=1)
    return out.reshape(flat.shape)


class AdaptiveMax(Function):
    def __init__(self, out_sp: tuple, return_indices: bool):
        self.out_sp, self.return_indices = out_sp, return_indices

    def forward(self, x):
        out, flat = adaptive_max_forward(x, self.out_sp)
        self.save_for_backward(flat)
        self.in_sp = x.shape[x.ndim - len(self.out_sp) :]
        if not self.return_indices:
            return out
        flat = flat.copy()
        self.mark_non_differentiable(flat)
        return out, flat

    def backward(self, g, _=None):
        (flat,) = self.saved_tensors
        return FlatScatter(flat.data, self.in_sp).apply(g)


class FlatScatter(Function):
    def __init__(self, flat, in_sp: tuple):
        self.flat, self.in_sp = flat, in_sp

    def forward(self, g):
        return flat_scatter(g, self.flat, self.in_sp)

    def backward(self, gg):
        return FlatGather(self.flat, self.in_sp).apply(gg)


class FlatGather(Function):
    def __init__(self, flat, in_sp: tuple):
        self.flat, self.in_sp = flat, in_sp

    def forward(self, gg):
        return flat_gather(gg, self.flat, len(self.in_sp))

    def backward(self, g):
        return FlatScatter(self.flat, self.in_sp).apply(g)
