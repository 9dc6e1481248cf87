"""Raw-array convolution kernels (NumPy or CuPy, written once): im2col, the GEMMs, col2im.

A convolution with any number of spatial dims is three GEMM-shaped kernels sharing one
column layout, ``cols`` of shape (C * prod(kernel), N * prod(out)) laid out as
(C, *kernel, N, *out):

    forward        y  = W @ cols(x)                    one GEMM (per group)
    grad_weight    gW = (cols(x) @ g^T)^T              one GEMM (per group)
    grad_input     stride 1: a conv of g with the flipped kernel (im2col + one GEMM);
                   otherwise col2im(W^T @ g): one GEMM, then a loop over kernel offsets

``grad_input`` is also the forward of ``conv_transpose``. The channel dim is outermost in
the column layout, so groups are plain row blocks and every GEMM reads its operands in place
(BLAS takes the transposes as flags); im2col is a copy out of an ``as_strided`` view, one
kernel offset at a time, never a loop over pixels. ``gW`` is computed as ``cols @ g^T``:
OpenBLAS runs that orientation of this long-inner-dim product several times faster than
``g @ cols^T``. Column buffers come from ``_workspace`` (fresh 75 MB mappings page-fault).
"""

from __future__ import annotations

import itertools

import numpy as np

from ember.cuda import conv as cuda_conv
from ember.cuda.compile import kernels_enabled
from ember.nn.functional import _winograd, _workspace
from ember.ops.parallel import HALF_DTYPES, run_blocks, split
from ember.tensor.backend import get_array_module

_FLOAT = (np.dtype(np.float32), np.dtype(np.float64))
SMALL_GW = 2048  # weight-gradient results up to this size use the per-image stacked matmul


class Geometry:
    """Kernel size, stride, (lo, hi) padding per spatial dim, dilation and groups."""

    __slots__ = ("kernel", "stride", "pads", "dilation", "groups")

    def __init__(self, kernel: tuple, stride: tuple, pads: tuple, dilation: tuple, groups: int):
        self.kernel, self.stride, self.pads = kernel, stride, pads
        self.dilation, self.groups = dilation, groups

    def out_spatial(self, in_spatial: tuple) -> tuple:
        return tuple(
            (n + lo + hi - d * (k - 1) - 1) // s + 1
            for n, k, s, (lo, hi), d in zip(
                in_spatial, self.kernel, self.stride, self.pads, self.dilation
            )
        )

    def window_slices(self, out_spatial: tuple):
        """For each kernel offset: the strided slices of the padded input it reads."""
        ranges = [range(k) for k in self.kernel]
        for offs in itertools.product(*ranges):
            yield (
                offs,
                tuple(
                    slice(o * d, o * d + s * (n - 1) + 1, s)
                    for o, d, s, n in zip(offs, self.dilation, self.stride, out_spatial)
                ),
            )


def _as_strided(xp, arr, shape, strides):
    return xp.lib.stride_tricks.as_strided(arr, shape=shape, strides=strides)


def pad_zeros(x, pads: tuple):
    """x with zero borders (lo, hi) on its spatial dims (x itself when there are none)."""
    if not any(lo or hi for lo, hi in pads):
        return x
    xp = get_array_module(x)
    lead = x.shape[: x.ndim - len(pads)]
    out = xp.zeros(
        lead + tuple(n + lo + hi for n, (lo, hi) in zip(x.shape[len(lead) :], pads)), dtype=x.dtype
    )
    out[
        (Ellipsis,) + tuple(slice(lo, lo + n) for n, (lo, _) in zip(x.shape[len(lead) :], pads))
    ] = x
    return out


def im2col(x, geo: Geometry, out_spatial: tuple):
    """(N, C, *in) -> cols (C * prod(kernel), N * prod(out)), in a pooled buffer.

    One ``as_strided`` view holds every window; it is copied one kernel offset at a time
    (each copy is a plain 4-D strided copy, which NumPy runs about twice as fast as the
    single 6-D copy)."""
    xp = get_array_module(x)
    if xp is not np and kernels_enabled() and cuda_conv.supports(x, geo.kernel):
        lo = tuple(p[0] for p in geo.pads)  # ember/cuda/conv.cu: one launch, no padded copy
        return cuda_conv.im2col2d(x, geo.kernel, geo.stride, lo, geo.dilation, out_spatial)
    n, c = x.shape[:2]
    xpad = pad_zeros(x, geo.pads)
    st = xpad.strides
    sp = st[2:]
    shape = (c,) + geo.kernel + (n,) + out_spatial
    strides = (
        (st[1],)
        + tuple(s * d for s, d in zip(sp, geo.dilation))
        + (st[0],)
        + tuple(s * k for s, k in zip(sp, geo.stride))
    )
    view = _as_strided(xp, xpad, shape, strides)
    cols = _workspace.take(xp, shape, x.dtype)
    lead = (slice(None),)
    for offs in itertools.product(*[range(k) for k in geo.kernel]):
        cols[lead + offs] = view[lead + offs]
    return cols.reshape(c * _prod(geo.kernel), n * _prod(out_spatial))


def _prod(t) -> int:
    p = 1
    for v in t:
        p *= v
    return p


def _channels_first(g):
    """(N, O, *sp) -> contiguous (O, N * prod(sp)): the GEMM layout of an output gradient."""
    xp = get_array_module(g)
    perm = (1, 0) + tuple(range(2, g.ndim))
    return xp.ascontiguousarray(g.transpose(perm)).reshape(g.shape[1], -1)


def _gemm(xp, a, b, groups: int, dtype, ta: bool = False, tb: bool = False, out=None):
    """Per-group products of row blocks: block g of ``op(a) @ op(b)``, stacked by rows.

    ``ta``/``tb`` transpose a block before multiplying. One 2-D GEMM per group: a stacked
    matmul on transposed views would leave BLAS for NumPy's slow loop. Half NumPy blocks
    are multiplied in float32 and rounded once (tensor-core emulation, ember.ops.parallel).
    """
    if xp is np and a.dtype in HALF_DTYPES:
        f32 = np.dtype(np.float32)
        prod = _gemm(xp, a.astype(f32), b.astype(f32), groups, f32, ta, tb)
        if out is None:
            return prod.astype(dtype)
        out[...] = prod
        return out
    if groups == 1:
        lhs, rhs = (a.T if ta else a), (b.T if tb else b)
        if out is not None and dtype.kind == "f":  # straight into the pooled buffer
            return xp.matmul(lhs, rhs, out=out)
        prod = lhs @ rhs
        if out is None:
            return prod if prod.dtype == dtype else prod.astype(dtype)
        out[...] = prod
        return out
    ab = a.reshape(groups, a.shape[0] // groups, a.shape[1])
    bb = b.reshape(groups, b.shape[0] // groups, b.shape[1])
    rows = ab.shape[2] if ta else ab.shape[1]
    width = bb.shape[1] if tb else bb.shape[2]
    if out is None:
        out = xp.empty((groups * rows, width), dtype=dtype)
    for g in range(groups):
        out[g * rows : (g + 1) * rows] = (ab[g].T if ta else ab[g]) @ (bb[g].T if tb else bb[g])
    return out


def conv_forward(x, w, bias, geo: Geometry, cols=None, out_sp=None):
    """y = conv(x, w) + bias. Returns (y, cols) so the caller can keep cols for grad_weight.

    ``out_sp`` truncates the output (the gradient of a conv_transpose whose output_padding
    reached past the last window)."""
    xp = get_array_module(x)
    n = x.shape[0]
    o = w.shape[0]
    if out_sp is None:
        out_sp = geo.out_spatial(x.shape[2:])
    if cols is None:
        cols = im2col(x, geo, out_sp)
    per = _prod(out_sp)
    if xp is np and geo.groups == 1 and x.dtype in _FLOAT and cols.dtype == x.dtype and n * per:
        # one GEMM per image, (O, C*K) @ (C*K, L) read in place from the columns and written
        # straight into y's (N, O, L) layout: no (O, N, L) -> (N, O, L) transpose copy
        # (RGB first layer: 3.8 -> 1.7 ms), image blocks spread over the CPU threads
        out = np.empty((n, o) + out_sp, dtype=x.dtype)
        w2, cv, ov = (
            w.reshape(o, -1),
            cols.reshape(-1, n, per).transpose(1, 0, 2),
            out.reshape(n, o, per),
        )

        def kernel(lo: int, hi: int) -> None:
            np.matmul(w2, cv[lo:hi], out=ov[lo:hi])

        run_blocks(kernel, n, split(n, 1))
        if bias is not None:
            out += bias.reshape((1, o) + (1,) * len(out_sp))
        return out, cols
    y = _gemm(xp, w.reshape(o, -1), cols, geo.groups, x.dtype)  # (O, N * L)
    y = y.reshape((o, n) + out_sp).transpose((1, 0) + tuple(range(2, 2 + len(out_sp))))
    out = xp.empty((n, o) + out_sp, dtype=x.dtype)
    if bias is not None:
        xp.add(y, bias.reshape((1, o) + (1,) * len(out_sp)), out=out)
    else:
        out[...] = y
    return out, cols


def conv_grad_weight(g, cols, wshape: tuple, groups: int):
    """dL/dW (O, Cg, *kernel) from the output gradient g (N, O, *out) and the input's cols."""
    xp = get_array_module(g)
    if xp is np and g.dtype in HALF_DTYPES:  # tensor-core emulation, as in _gemm
        gw = conv_grad_weight(g.astype(np.float32), cols.astype(np.float32), wshape, groups)
        return gw.astype(g.dtype)
    n, o, kk = g.shape[0], g.shape[1], cols.shape[0]
    if groups == 1 and kk * o <= SMALL_GW and n >= 4:
        # a tiny result over a huge inner dim (an RGB first layer): threaded BLAS spends the
        # call synchronising (and stalls badly on a busy machine); per-image products
        # (O, L) @ (L, C*K) read g and the columns in place, summed over the images (on
        # NumPy: partial sums over image blocks spread over the CPU threads)
        per = cols.shape[1] // n
        gi, ci = g.reshape(n, o, per), cols.reshape(kk, n, per).transpose(1, 2, 0)
        if xp is not np:
            gw = xp.matmul(gi, ci).sum(0)
        else:
            block = split(n, 1)
            part = np.empty((-(-n // block), o, kk), np.result_type(g, cols))

            def kernel(lo: int, hi: int) -> None:
                np.sum(np.matmul(gi[lo:hi], ci[lo:hi]), axis=0, out=part[lo // block])

            run_blocks(kernel, n, block)
            gw = part.sum(0)
        gw = gw.reshape(wshape)
        return gw if gw.dtype == g.dtype else gw.astype(g.dtype)
    g2 = _channels_first(g)  # (O, M)
    if groups == 1:
        # cols @ g^T (C*K, O) is the fast orientation of this long-inner-dim product
        gw = xp.ascontiguousarray((cols @ g2.T).T)
    else:
        gw = _gemm(xp, g2, cols, groups, g.dtype, tb=True)
    gw = gw.reshape(wshape)
    return gw if gw.dtype == g.dtype else gw.astype(g.dtype)


def conv_grad_input(g, w, geo: Geometry, in_spatial: tuple):
    """dL/dx (N, C, *in) from g (N, O, *out). Also the forward of conv_transpose (with x in
    the role of g).

    Stride 1: a convolution of g with the flipped, channel-swapped kernel (im2col + GEMM,
    both cheaper than col2im's strided adds). Otherwise: GEMM to columns, then col2im by
    kernel offset."""
    xp = get_array_module(g)
    flipped = _flipped_geometry(geo, g.shape[2:], in_spatial)
    if flipped is not None:
        wt = _flip_kernel(w, geo.groups)
        if _winograd.supported(g, wt, geo.kernel, geo.stride, geo.dilation, geo.groups):
            return _winograd.conv3x3(g, wt, flipped.pads, in_spatial)[0]
        cols = im2col(g, flipped, in_spatial)
        y, _ = conv_forward(g, wt, None, flipped, cols, in_spatial)
        _workspace.give(cols)
        return y
    n = g.shape[0]
    out_sp = g.shape[2:]
    g2 = _channels_first(g)  # (O, M)
    groups = geo.groups
    c = w.shape[1] * groups
    gcols = _workspace.take(xp, (c * _prod(geo.kernel), g2.shape[1]), g.dtype)
    _gemm(xp, w.reshape(w.shape[0], -1), g2, groups, g.dtype, ta=True, out=gcols)
    if xp is not np and kernels_enabled() and cuda_conv.supports(g, geo.kernel):
        lo = tuple(p[0] for p in geo.pads)  # ember/cuda/conv.cu: gather straight into (N, C, H, W)
        shape = (n, c) + tuple(in_spatial)
        return cuda_conv.col2im2d(gcols, shape, geo.kernel, geo.stride, lo, geo.dilation, out_sp)
    gcols = gcols.reshape((c,) + geo.kernel + (n,) + out_sp)
    padded = tuple(s + lo + hi for s, (lo, hi) in zip(in_spatial, geo.pads))
    gx = col2im(gcols, geo, (c, n) + padded, out_sp)
    _workspace.give(gcols)
    crop = gx[
        (slice(None), slice(None))
        + tuple(slice(lo, lo + s) for s, (lo, _) in zip(in_spatial, geo.pads))
    ]
    return xp.ascontiguousarray(crop.transpose((1, 0) + tuple(range(2, 2 + len(in_spatial)))))


def _flipped_geometry(geo: Geometry, out_sp: tuple, in_spatial: tuple):
    """The geometry under which dL/dx is a stride-1 conv of g, or None (strided, or more
    padding than the dilated kernel reaches)."""
    if any(s != 1 for s in geo.stride):
        return None
    pads = []
    for (lo, _), k, d, o, n in zip(geo.pads, geo.kernel, geo.dilation, out_sp, in_spatial):
        lo2 = d * (k - 1) - lo
        hi2 = n - o - lo2 + d * (k - 1)
        if lo2 < 0 or hi2 < 0:
            return None
        pads.append((lo2, hi2))
    return Geometry(geo.kernel, geo.stride, tuple(pads), geo.dilation, geo.groups)


def _flip_kernel(w, groups: int):
    """(O, Cg, *k) -> (C, Og, *k): in/out channels swapped within each group, kernel flipped."""
    xp = get_array_module(w)
    o, cg = w.shape[:2]
    k = w.shape[2:]
    wg = w.reshape((groups, o // groups, cg) + k).swapaxes(1, 2)
    wg = wg[(Ellipsis,) + (slice(None, None, -1),) * len(k)]
    return xp.ascontiguousarray(wg).reshape((groups * cg, o // groups) + k)


def col2im(gcols, geo: Geometry, shape: tuple, out_sp: tuple):
    """Sum columns (C, *kernel, N, *out) back into a (C, N, *padded) buffer: one strided add
    per kernel offset (assignment when the windows do not overlap)."""
    xp = get_array_module(gcols)
    disjoint = all(s >= d * (k - 1) + 1 for s, d, k in zip(geo.stride, geo.dilation, geo.kernel))
    gx = (xp.empty if disjoint and _covers(geo, shape[2:], out_sp) else xp.zeros)(
        shape, dtype=gcols.dtype
    )
    lead = (slice(None),)
    for offs, sl in geo.window_slices(out_sp):
        src = gcols[lead + offs]
        if disjoint:
            gx[lead + lead + sl] = src
        else:
            gx[lead + lead + sl] += src
    return gx


def _covers(geo: Geometry, padded: tuple, out_sp: tuple) -> bool:
    """Disjoint windows that tile the whole padded buffer (every element written once)."""
    return all(
        s == d * (k - 1) + 1 and o * s == p and (k == 1 or d == 1)
        for s, d, k, o, p in zip(geo.stride, geo.dilation, geo.kernel, out_sp, padded)
    )
