"""Winograd F(2x2, 3x3) convolution for NumPy: 3x3 kernels, stride 1, dilation 1, groups 1.

Why: a 3x3 conv as im2col + GEMM spends 9 multiply-adds per input channel per output pixel
and copies the input 9 times; Winograd's F(2x2, 3x3) computes each 2x2 output tile from a
4x4 input tile with 16 multiply-adds instead of 36 (2.25x fewer) and the transformed input is
4x (not 9x) the input. The multiplications become 16 independent GEMMs
``M[ab] = U[ab] @ V[ab]`` (U: the transformed kernel (O, C), V: the transformed input tiles
(C, tiles)), one per position ab of the 4x4 tile.

NumPy layout choices (measured on the reference cnn, see benchmarks/notes/workloads.md):

- images are processed in blocks of a few (``block_images``) so a block's intermediates stay
  in cache, and the blocks run on the CPU threads (``ember.ops.parallel.run_blocks``);
- a block of b images is padded into a (C, b, ...) copy, so each of the 16 products is one
  GEMM (O, C) @ (C, b*tiles) (the weight gradient: (C, b*tiles) @ (b*tiles, O)); the copy
  splits the rows by parity, so the row transforms are long contiguous passes;
- the transforms are ufunc passes. Strided slices of tile columns would make NumPy loop over
  16-element rows (slow), so a tile row carries one extra "junk" tile: the padded row of
  2*tw + 2 values is read as tw + 1 value pairs, and each column transform is one long 1-D
  pass. The junk tiles' products are computed and never read.

With the CPU kernels on (ember/cpu/winograd.py), each transform is instead one numba loop over
the block that reads x (or g) and writes y directly: no padded copy, no junk tiles (tiles =
th * tw per image instead of th * (tw + 1)), and the kept v is a (16, N*C*tiles) view of a
(16, stride) array (``_row_stride``). grad_weight tells the two layouts of the saved v apart
by its width.

Accuracy: the transforms use only 1/2 and sums (G, B, A of Lavin & Gray), so float32 results
match the direct convolution to a few ulps of the output scale (tests/nn/test_conv_winograd.py).
"""

from __future__ import annotations

import functools
import threading

import numpy as np

from ember.cpu import winograd as cpu_winograd
from ember.nn.functional import _workspace
from ember.ops.parallel import get_num_threads, run_blocks

MIN_CHANNELS = 8  # below this (an RGB input) the (O, C) @ (C, tiles) GEMMs are too thin
BLOCK_BYTES = 1 << 21  # aim for this much transformed input per block (L2/L3 resident)
CACHE_BYTES = 1 << 23  # larger scratch arrays are not kept per thread
ZERO_KEEP = 64  # zero-bordered padded blocks kept per thread (one per layer and block size)
_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])
_scratch = threading.local()


def supported(x, w, kernel: tuple, stride: tuple, dilation: tuple, groups: int) -> bool:
    """Whether the Winograd path computes this convolution (NumPy float32/64, 2-D, 3x3,
    stride 1, dilation 1, one group, enough channels on both sides)."""
    return (
        type(x) is np.ndarray
        and type(w) is np.ndarray
        and x.ndim == 4
        and x.dtype in _DTYPES
        and w.dtype == x.dtype
        and tuple(kernel) == (3, 3)
        and tuple(stride) == (1, 1)
        and tuple(dilation) == (1, 1)
        and groups == 1
        and min(x.shape[1], w.shape[0]) >= MIN_CHANNELS
        and x.shape[0] > 0
    )


def _fused(x):
    """The fused transform loops for x, or None (kernels off, or not a float NumPy array)."""
    return cpu_winograd.transform_kernels() if cpu_winograd.supports(x) else None


def _tiles(th: int, tw: int, fused: bool) -> int:
    """Tiles per image plane: the NumPy passes carry one junk tile per tile row."""
    return th * tw if fused else th * (tw + 1)


def _row_stride(cols: int, itemsize: int) -> int:
    """A row length >= cols for the 16 rows of v, m or gm that the fused loops touch at once:
    rows 256 bytes past a multiple of 4 KiB, so they fall in different L1 cache sets. With
    rows a multiple of 4 KiB apart (the cnn's shapes) all 16 share one 8-way set and the
    per-tile loops ran 3-10x slower."""
    unit, offset = 4096 // itemsize, 256 // itemsize
    return cols + (offset - cols) % unit


def _rows(name, cols: int, dtype, fresh: bool = False):
    """A (16, stride) array (``_row_stride``) and its (16, cols) view, from the per-thread
    scratch or (``fresh``) the workspace pool."""
    dtype = np.dtype(dtype)
    shape = (16, _row_stride(cols, dtype.itemsize))
    full = _workspace.take(np, shape, dtype) if fresh else _buffer(name, shape, dtype)
    return full, full[:, :cols]


def transformed_bytes(x, pads: tuple, out_sp: tuple | None = None) -> int:
    """The size of the transformed input :func:`conv3x3` keeps with ``keep=True``."""
    n, c, h, wd = x.shape
    (top, bottom), (left, right) = pads
    ho, wo = (h + top + bottom - 2, wd + left + right - 2) if out_sp is None else tuple(out_sp)
    th, tw = -(-ho // 2), -(-wo // 2)
    if _fused(x) is None:
        return 16 * n * c * _tiles(th, tw, False) * x.dtype.itemsize
    return 16 * _row_stride(n * c * th * tw, x.dtype.itemsize) * x.dtype.itemsize


def transform_kernel(w):
    """(O, C, 3, 3) -> U (16, O, C) = G w G^T per tile position, as one (O*C, 9) @ (9, 16)
    GEMM (a broadcast matmul of 3x3 blocks costs 0.3 ms per layer)."""
    o, c = w.shape[:2]
    u = w.reshape(o * c, 9) @ _kron(w.dtype, True)  # (O*C, 16)
    return np.ascontiguousarray(u.T).reshape(16, o, c)


@functools.lru_cache(maxsize=8)
def _kron(dtype, transposed: bool = False) -> np.ndarray:
    """K (16, 9) with K[(a, b), (i, j)] = G[a, i] G[b, j]: vec(G w G^T) = K vec(w); or K^T,
    C-contiguous (OpenBLAS takes 7.9 ms for (4096, 9) @ K.T as a transposed view, 25 us
    for the contiguous copy)."""
    k = np.kron(_G, _G)
    return np.ascontiguousarray(k.T if transposed else k, dtype=dtype)


def _buffer(name, shape: tuple, dtype, zero: bool = False):
    """A per-thread scratch array reused across blocks and calls.

    Plain scratch (every element written before it is read) shares one flat array per name
    and dtype, grown to the largest use, so the layers of a model do not each hold their own.
    ``zero`` buffers (a padded block whose borders are never written, so they stay zero) are
    kept per exact name and shape; the oldest go first past ZERO_KEEP entries. Arrays past
    CACHE_BYTES (one large image per block) are made fresh, so no thread holds them."""
    store = getattr(_scratch, "store", None)
    if store is None:
        store = _scratch.store = ({}, {})
    dtype = np.dtype(dtype)
    size = 1
    for d in shape:
        size *= d
    if size * dtype.itemsize > CACHE_BYTES:
        return (np.zeros if zero else np.empty)(shape, dtype)
    flat, zeros = store
    if not zero:
        arr = flat.get((name, dtype))
        if arr is None or arr.size < size:
            arr = flat[(name, dtype)] = np.empty(size, dtype)
        return arr[:size].reshape(shape)
    key = (name, shape, dtype)
    arr = zeros.get(key)
    if arr is None:
        while len(zeros) >= ZERO_KEEP:
            del zeros[next(iter(zeros))]
        arr = zeros[key] = np.zeros(shape, dtype)
    return arr


def block_images(c: int, tiles: int, itemsize: int, n: int, threads: int) -> int:
    """Images per block: about BLOCK_BYTES of transformed input, with the block count a
    multiple of the thread count (at least two blocks per thread when there are enough
    images) and the blocks about equal, so no thread waits long for the last one."""
    per_image = 16 * c * tiles * itemsize
    count = -(-n // max(1, BLOCK_BYTES // per_image))
    if threads > 1:
        count = max(count, min(n, 2 * threads))
        count = -(-count // threads) * threads
    return max(1, -(-n // count))


def _split_rows(dst, src, top: int) -> None:
    """Copy src (..., h, width) into dst (..., 2, S, width) with its rows split by parity:
    padded row R = r + top goes to dst[..., R % 2, R // 2, :] (rows past 2S are dropped).
    Row 2t and row 2t + 2 are then neighbours in one contiguous block per image plane, so
    the row transforms are long contiguous passes instead of 34-value strided rows."""
    rows, h = dst.shape[-2], src.shape[-2]
    for p in (0, 1):
        s_lo = max(0, -((p - top) // 2))
        s_hi = min(rows, (h - 1 + top - p) // 2 + 1)
        if s_hi > s_lo:
            r_lo = 2 * s_lo + p - top
            dst[..., p, s_lo:s_hi, :] = src[..., r_lo : r_lo + 2 * (s_hi - s_lo) - 1 : 2, :]


def _planes(xs, parity: int):
    """Rows of one parity of a (C, b, 2, S, width) block as (C*b, S*width) (a view)."""
    c, b, _, rows, width = xs.shape
    return np.reshape(xs[:, :, parity], (c * b, rows * width), copy=False)


def _input_transform(xs, v, th: int, tw: int) -> None:
    """Padded, row-split input block xs (C, b, 2, th+1, 2tw+2) -> v (16, C*b*th*(tw+1)):
    B^T d B."""
    c, b, _, _, wp = xs.shape
    ev, od = _planes(xs, 0), _planes(xs, 1)  # rows 2t and 2t + 1 of each plane
    r = _buffer("rows", (4, c * b, th * wp), xs.dtype)
    np.subtract(ev[:, :-wp], ev[:, wp:], out=r[0])  # d0 - d2
    np.add(od[:, :-wp], ev[:, wp:], out=r[1])  # d1 + d2
    np.subtract(ev[:, wp:], od[:, :-wp], out=r[2])  # d2 - d1
    np.subtract(od[:, :-wp], od[:, wp:], out=r[3])  # d1 - d3
    for a in range(4):
        pairs = r[a].reshape(-1, 2)  # (rows * (tw + 1), 2): columns (2t, 2t + 1)
        e0, e1, e2, e3 = pairs[:-1, 0], pairs[:-1, 1], pairs[1:, 0], pairs[1:, 1]
        out = v[4 * a : 4 * a + 4, :-1]
        np.subtract(e0, e2, out=out[0])
        np.add(e1, e2, out=out[1])
        np.subtract(e2, e1, out=out[2])
        np.subtract(e1, e3, out=out[3])
    v[:, -1] = 0  # the last junk tile reads past the block: keep it finite


def _output_transform(m, y, th: int, tw: int) -> None:
    """m (16, d0*d1*th*(tw+1)) -> y (d0, d1, 2th, 2tw) (any strides on d0, d1): A^T M A,
    junk tiles dropped. Rows of A^T are (1, 1, 1, 0) and (0, 1, -1, -1): the shared sum and
    difference of the middle terms are contiguous passes, so only the last pass of each
    output writes with a stride."""
    d0, d1 = y.shape[:2]
    size = m.shape[1]
    z = _buffer("cols", (4, size, 2), m.dtype)
    t = _buffer("sum", (2, 2 * size), m.dtype)
    ts, td = t[0, :size], t[1, :size]
    for a in range(4):
        m0, m1, m2, m3 = m[4 * a : 4 * a + 4]
        np.add(m1, m2, out=ts)
        np.subtract(m1, m2, out=td)
        np.add(m0, ts, out=z[a, :, 0])
        np.subtract(td, m3, out=z[a, :, 1])
    zf = z.reshape(4, -1)
    np.add(zf[1], zf[2], out=t[0])
    np.subtract(zf[1], zf[2], out=t[1])
    view = (d0, d1, th, tw + 1, 2)
    zs = z.reshape((4,) + view)[..., :tw, :]
    ss, sd = (t[k].reshape(view)[..., :tw, :] for k in range(2))
    shape = (d0, d1, th, tw, 2)
    y0 = np.reshape(y[:, :, 0::2], shape, copy=False)  # a view: the output rows 2t and 2t+1
    y1 = np.reshape(y[:, :, 1::2], shape, copy=False)
    np.add(zs[0], ss, out=y0)
    np.subtract(sd, zs[3], out=y1)


def conv3x3(x, w, pads: tuple, out_sp: tuple | None = None, keep: bool = False):
    """conv2d(x, w) for a 3x3 kernel, stride 1, padding ((top, bottom), (left, right)):
    x (N, C, H, W), w (O, C, 3, 3) -> (y (N, O, Ho, Wo), v, block). ``out_sp`` may cut the
    output short (the truncated gradient of a conv_transpose). With ``keep``, ``v`` is the
    transformed input (16, N*C*tiles) from the workspace pool, for :func:`grad_weight`, laid
    out in blocks of ``block`` images; otherwise v is None.

    A block of b images is transformed as (C, b, ...) so each of the 16 products is one GEMM
    (O, C) @ (C, b*tiles) (and the weight gradient one (O, b*tiles) @ (b*tiles, C))."""
    n, c, h, wd = x.shape
    o = w.shape[0]
    (top, bottom), (left, right) = pads
    ho, wo = (h + top + bottom - 2, wd + left + right - 2) if out_sp is None else tuple(out_sp)
    th, tw = -(-ho // 2), -(-wo // 2)
    wp = 2 * tw + 2
    dt = x.dtype
    u = transform_kernel(w)
    y = np.empty((n, o, ho, wo), dt)
    fused = _fused(x)
    tiles = _tiles(th, tw, fused is not None)
    threads = get_num_threads()
    nb = block_images(c, tiles, dt.itemsize, n, threads)
    even = ho == 2 * th and wo == 2 * tw
    if fused is not None:
        full, saved = _rows(None, n * c * tiles, dt, fresh=True) if keep else (None, None)
        _conv3x3_fused(fused, np.ascontiguousarray(x), u, y, full, pads, nb, threads)
        return y, saved, nb
    saved = _workspace.take(np, (16, n * c * tiles), dt) if keep else None
    c0, c1 = max(0, -left), min(wd, wp - left)  # columns of x inside the padded tile grid

    def kernel(lo: int, hi: int) -> None:
        b = hi - lo
        # zero borders stay zero: the same rows and columns are written on every reuse
        xs = _buffer(("pad", top, h, left, c0, c1), (c, b, 2, th + 1, wp), dt, zero=True)
        if c1 > c0:
            src = x[lo:hi, :, :, c0:c1].transpose(1, 0, 2, 3)
            _split_rows(xs[..., left + c0 : left + c1], src, top)
        if saved is None:
            v = _buffer("v", (16, b * c * tiles), dt)
        else:
            v = saved[:, lo * c * tiles : hi * c * tiles]
        _input_transform(xs, v, th, tw)
        m = _buffer("m", (16, o, b * tiles), dt)
        np.matmul(u, v.reshape(16, c, b * tiles), out=m)
        yb = y[lo:hi] if even else _buffer("y", (b, o, 2 * th, 2 * tw), dt)
        _output_transform(m.reshape(16, -1), yb.transpose(1, 0, 2, 3), th, tw)
        if not even:
            y[lo:hi] = yb[:, :, :ho, :wo]

    run_blocks(kernel, n, nb, threads)
    return y, saved, nb


def _conv3x3_fused(fused, x, u, y, saved, pads: tuple, nb: int, threads: int) -> None:
    """conv3x3's blocks with the fused transforms: x -> v, the 16 GEMMs, m -> y (cropped).
    ``saved``: the whole (16, stride) array that keeps v, or None."""
    n, c = x.shape[:2]
    o, ho, wo = y.shape[1:]
    (top, _), (left, _) = pads
    th, tw = -(-ho // 2), -(-wo // 2)
    tiles = th * tw
    input_transform, output_transform, _ = fused

    def kernel(lo: int, hi: int) -> None:
        b = hi - lo
        if saved is None:
            v, col0 = _rows("v", b * c * tiles, x.dtype)[0], 0
        else:
            v, col0 = saved, lo * c * tiles
        input_transform(x, v, col0, lo, hi, top, left, th, tw)
        vb = v[:, col0 : col0 + b * c * tiles].reshape(16, c, b * tiles)
        m, mv = _rows("m", o * b * tiles, x.dtype)
        np.matmul(u, vb, out=mv.reshape(16, o, b * tiles))
        output_transform(m, y, lo, hi, th, tw)

    run_blocks(kernel, n, nb, threads)


def _grad_transform(gs, gm, th: int, tw: int) -> None:
    """Row-split, zero-padded output gradient block gs (O, b, 2, th, 2tw+2) ->
    gm (16, O*b*th*(tw+1)): A g A^T per tile, except that the rows and columns of A with a
    -1 alone (a = 3, b = 3) are taken with +1 (``_SIGNS`` puts the signs back on dU). The
    junk tiles and the rows and columns past g read zeros, so they add nothing."""
    o, b = gs.shape[:2]
    planes = o * b
    ev, od = _planes(gs, 0), _planes(gs, 1)  # rows 2t and 2t + 1
    q = _buffer("gq", (2,) + ev.shape, gs.dtype)
    np.add(ev, od, out=q[0])
    np.subtract(ev, od, out=q[1])
    for a, rows in enumerate((ev, q[0], q[1], od)):
        pairs = rows.reshape(planes, th * (tw + 1), 2)
        e0, e1 = pairs[..., 0], pairs[..., 1]
        out = gm[4 * a : 4 * a + 4].reshape(4, planes, th * (tw + 1))
        out[0] = e0
        np.add(e0, e1, out=out[1])
        np.subtract(e0, e1, out=out[2])
        out[3] = e1


_SIGNS = np.outer([1.0, 1.0, 1.0, -1.0], [1.0, 1.0, 1.0, -1.0]).reshape(16, 1, 1)


def grad_weight(g, v, c: int, block: int):
    """dL/dW (O, C, 3, 3) from the output gradient g (N, O, Ho, Wo) and the transformed
    input v that :func:`conv3x3` kept (in blocks of ``block`` images):
    dU[ab] = sum over tiles of (A g A^T)[ab] V[ab]^T, then dW = G^T dU G."""
    n, o, ho, wo = g.shape
    th, tw = -(-ho // 2), -(-wo // 2)
    dt = g.dtype
    # conv3x3 kept v in the fused layout (no junk tiles) exactly when v has that width
    fused_layout = v.shape[1] == n * c * th * tw
    tiles = _tiles(th, tw, fused_layout)
    fused = _fused(g) if fused_layout else None
    grad_transform = None if fused is None else fused[2]
    if grad_transform is not None:
        g = np.ascontiguousarray(g)
    count = -(-n // block)
    # the larger channel count as the result's rows: (64, K) @ (K, 32) ran at 34 GMAC/s
    # against 28 for (32, K) @ (K, 64); equal counts are the same either way
    rows_o = o > c
    partial = np.empty((count, 16, o, c) if rows_o else (count, 16, c, o), dt)

    def kernel(lo: int, hi: int) -> None:
        b = hi - lo
        if grad_transform is not None:
            full, gm = _rows("gm", o * b * tiles, dt)
            grad_transform(g, full, lo, hi, th, tw)
        else:
            gm = _buffer("gm", (16, o * b * tiles), dt)
            gs = _buffer(("gpad", ho, wo), (o, b, 2, th, 2 * tw + 2), dt, zero=True)
            _split_rows(gs[..., :wo], g[lo:hi].transpose(1, 0, 2, 3), 0)
            if fused_layout:  # kernels switched off since the forward: drop the junk tiles
                junk = _buffer("gmj", (16, o * b * th, tw + 1), dt)
                _grad_transform(gs, junk.reshape(16, -1), th, tw)
                gm.reshape(16, o * b * th, tw)[...] = junk[..., :tw]
            else:
                _grad_transform(gs, gm, th, tw)
        vb = v[:, lo * c * tiles : hi * c * tiles].reshape(16, c, b * tiles)
        gb = gm.reshape(16, o, b * tiles)
        if rows_o:
            np.matmul(gb, vb.transpose(0, 2, 1), out=partial[lo // block])
        else:
            np.matmul(vb, gb.transpose(0, 2, 1), out=partial[lo // block])

    run_blocks(kernel, n, block)
    du = partial.sum(axis=0) if count > 1 else partial[0]  # (16, C, O) or (16, O, C)
    du *= _SIGNS.astype(dt)
    gw = _kron(dt, True) @ du.reshape(16, c * o)  # (9, C*O): G^T dU G
    if rows_o:
        return np.ascontiguousarray(gw.reshape(3, 3, o, c).transpose(2, 3, 0, 1))
    return np.ascontiguousarray(gw.reshape(3, 3, c, o).transpose(3, 2, 0, 1))
