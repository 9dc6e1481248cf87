"""Depthwise 2-D convolution (one filter per channel) as direct loops over image planes.

The NumPy path (ember/nn/functional/_depthwise.py) copies each block of images into flat
zero-padded planes and spends one ufunc pass per kernel offset over the whole block (two for
the gradients, which also spread g into padded rows). Here one (image, channel) plane at a
time is worked on in L1: at stride 1 the plane is copied into a zero-bordered flat scratch
plane (reused, its border written once), so each kernel offset is one long contiguous pass of
Ho*Wp values (``_forward_flat``, ``_grad_input_flat``, ``_grad_weight_flat``). Other strides
accumulate each output row in place, offset by offset, with the padding as a bounds test per
row and a column range per offset (``_columns``): no padded copy, and no im2col for strided
depthwise convs. Short rows leave much of each pass to scalar remainder loops, which is why
stride 1 takes the flat scratch instead.

Order of the adds: every output (and input-gradient) element is the sum of its kernel
offsets' products in (i, j) order, starting from zero, rounded as written (no fastmath), as
the NumPy passes do, so they agree bit for bit and no thread count changes a bit. The weight
gradient keeps one partial sum per (offset, output column) over the block's images and rows
(adds that vectorise), then adds each offset's columns in order into ``parts``; the caller
adds the parts of the image blocks in a fixed order.

The inner loops run over views sliced to the valid columns (``r[k] += t * s[k]`` from k = 0):
indexing with ``ox + off`` from a computed start kept numba's negative-index wraparound test in
the loop, and LLVM did not vectorise it (7.5 ms instead of ~2 for the forward at (32, 64, 32,
32) on 2 threads).
"""

from __future__ import annotations

import numpy as np

from ember.cpu.compile import JIT_OPTIONS, jit


def _signatures(template: str) -> list:
    return [template.format(t=t) for t in ("float32", "float64")]


@jit("void(int64[::1], int64[::1], int64, int64, int64, int64, int64)", **JIT_OPTIONS)
def _columns(first, end, left, step, dil, width, out_width):
    """Per kernel column j: the output columns [first[j], end[j]) whose input column
    ox * step + j * dil - left lies in [0, width)."""
    for j in range(first.shape[0]):
        off = j * dil - left
        a = max(0, -(off // step))
        first[j] = a
        end[j] = max(a, min(out_width, (width - 1 - off) // step + 1))


@jit(**JIT_OPTIONS)
def _forward_flat(x, w, y, lo, hi, top, left, dh, dw):
    """``forward`` at stride 1: one plane at a time is copied into a zero-bordered flat scratch
    plane of rows Wp = left + W + right (in L1), so offset (i, j) reads the contiguous run
    starting at i*dh*Wp + j*dw, and each offset is one long vectorised pass of Ho*Wp values
    (the Wp - Wo junk columns per row are dropped when the rows are copied to y). Per row,
    offsets with ragged column ranges left 7 of 31 values to scalar remainder loops."""
    c, h, wd = x.shape[1], x.shape[2], x.shape[3]
    ho, wo = y.shape[2], y.shape[3]
    kh, kw = w.shape[2], w.shape[3]
    wp = max(left + wd, wo + dw * (kw - 1))
    run = ho * wp
    rows = max(top + h, ho + dh * (kh - 1)) + 1  # one spare row: the last run's tail
    pad = np.zeros(rows * wp, x.dtype)
    acc = np.empty(run, x.dtype)
    for p in range(lo, hi):
        n, ci = p // c, p % c
        img, out, taps = x[n, ci], y[n, ci], w[ci, 0]
        _into_flat(pad, img, top, left, wp)
        acc[:] = 0
        for i in range(kh):
            for j in range(kw):
                t, start = taps[i, j], i * dh * wp + j * dw
                s = pad[start : start + run]
                for k in range(run):
                    acc[k] += t * s[k]
        for oy in range(ho):
            row, src = out[oy], acc[oy * wp : oy * wp + wo]
            for k in range(wo):
                row[k] = src[k]


_LANES = 32


@jit(**JIT_OPTIONS)
def _fold(values, fold):
    """The sum of values in a fixed order: first into _LANES partial sums (value m into lane
    m % _LANES, adds that vectorise), then the lanes and the tail in order, in float64. A plain
    running sum of the ~1000 partial sums per offset was latency-bound (1.5 ms of the weight
    gradient at (32, 64, 32, 32))."""
    fold[:] = 0
    full = values.shape[0] // _LANES * _LANES
    for m0 in range(0, full, _LANES):
        seg = values[m0 : m0 + _LANES]
        for m in range(_LANES):
            fold[m] += seg[m]
    total = 0.0
    for m in range(_LANES):
        total += fold[m]
    for m in range(full, values.shape[0]):
        total += values[m]
    return total


@jit(**JIT_OPTIONS)
def _into_flat(dst, plane, row0, col0, width):
    """Copy plane (h, w) into the flat scratch dst (rows of ``width``) at (row0, col0)."""
    h, w = plane.shape
    for r in range(h):
        d, src = dst[(row0 + r) * width + col0 : (row0 + r) * width + col0 + w], plane[r]
        for k in range(w):
            d[k] = src[k]


@jit(**JIT_OPTIONS)
def _grad_input_flat(g, w, gx, lo, hi, top, left, dh, dw):
    """``grad_input`` at stride 1 as ``_forward_flat`` does it: g's plane sits in a zero-bordered
    flat scratch at row dh*(kH-1) - top, column dw*(kW-1) - left, so offset (i, j) reads the run
    starting at (kH-1-i)*dh*Wq + (kW-1-j)*dw; offsets are added in (i, j) order."""
    c, ho, wo = g.shape[1], g.shape[2], g.shape[3]
    h, wd = gx.shape[2], gx.shape[3]
    kh, kw = w.shape[2], w.shape[3]
    ph, pw = dh * (kh - 1) - top, dw * (kw - 1) - left
    wq = max(wd + dw * (kw - 1), pw + wo)
    run = h * wq
    rows = max(h + dh * (kh - 1), ph + ho) + 1  # one spare row: the last run's tail
    pad = np.zeros(rows * wq, g.dtype)
    acc = np.empty(run, g.dtype)
    for p in range(lo, hi):
        n, ci = p // c, p % c
        out, taps = gx[n, ci], w[ci, 0]
        _into_flat(pad, g[n, ci], ph, pw, wq)
        acc[:] = 0
        for i in range(kh):
            for j in range(kw):
                t, start = taps[i, j], (kh - 1 - i) * dh * wq + (kw - 1 - j) * dw
                s = pad[start : start + run]
                for k in range(run):
                    acc[k] += t * s[k]
        for iy in range(h):
            row, src = out[iy], acc[iy * wq : iy * wq + wd]
            for k in range(wd):
                row[k] = src[k]


@jit(**JIT_OPTIONS)
def _grad_weight_flat(x, g, parts, part, lo, hi, c0, c1, kw, top, left, dh, dw):
    """``grad_weight`` at stride 1 on flat scratch planes: x zero-bordered as in
    ``_forward_flat``, g spread into rows of Wp (zero junk columns), one partial sum per
    (offset, flat position), added in order at the end."""
    h, wd = x.shape[2], x.shape[3]
    ho, wo = g.shape[2], g.shape[3]
    taps = parts.shape[2]
    kh = taps // kw
    wp = max(left + wd, wo + dw * (kw - 1))
    run = ho * wp
    rows = max(top + h, ho + dh * (kh - 1)) + 1
    pad = np.zeros(rows * wp, x.dtype)
    spread = np.zeros(run, x.dtype)
    acc = np.empty((taps, run), x.dtype)
    fold = np.empty(_LANES, x.dtype)
    for ci in range(c0, c1):
        acc[:] = 0
        for n in range(lo, hi):
            _into_flat(pad, x[n, ci], top, left, wp)
            _into_flat(spread, g[n, ci], 0, 0, wp)
            for i in range(kh):
                for j in range(kw):
                    start = i * dh * wp + j * dw
                    lane, s = acc[i * kw + j], pad[start : start + run]
                    for k in range(run):
                        lane[k] += spread[k] * s[k]
        for k in range(taps):
            lane = acc[k]
            for oy in range(ho):  # junk columns: 0 * x there is NaN for an inf x, drop them
                lane[oy * wp + wo : (oy + 1) * wp] = 0
            parts[part, ci, k] = _fold(lane, fold)


@jit(inline="always", **JIT_OPTIONS)
def _add_scaled(r, t, s, n):
    """r[:n] += t * s[:n], from index 0 (so the loop vectorises)."""
    for k in range(n):
        r[k] += t * s[k]


@jit(inline="always", **JIT_OPTIONS)
def _add_product(r, a, s, n):
    """r[:n] += a[:n] * s[:n], from index 0."""
    for k in range(n):
        r[k] += a[k] * s[k]


@jit(
    _signatures(
        "void({t}[:, :, :, ::1], {t}[:, :, :, ::1], {t}[:, :, :, ::1], "
        "int64, int64, int64, int64, int64, int64, int64, int64)"
    ),
    **JIT_OPTIONS,
)
def forward(x, w, y, lo, hi, top, left, sh, sw, dh, dw):
    """Planes lo..hi (image p // C, channel p % C) of x (N, C, H, W) -> y (N, C, Ho, Wo):
    y[oy, ox] = sum over (i, j) of w[c, 0, i, j] * x[oy*sh - top + i*dh, ox*sw - left + j*dw]
    (zero outside x)."""
    c, h, wd = x.shape[1], x.shape[2], x.shape[3]
    ho, wo = y.shape[2], y.shape[3]
    kh, kw = w.shape[2], w.shape[3]
    if sh == 1 and sw == 1 and top >= 0 and left >= 0:
        _forward_flat(x, w, y, lo, hi, top, left, dh, dw)
        return
    first, end = np.empty(kw, np.int64), np.empty(kw, np.int64)
    _columns(first, end, left, sw, dw, wd, wo)
    for p in range(lo, hi):
        n, ci = p // c, p % c
        img, out, taps = x[n, ci], y[n, ci], w[ci, 0]
        for oy in range(ho):
            row = out[oy]
            row[:] = 0
            for i in range(kh):
                iy = oy * sh - top + i * dh
                if iy < 0 or iy >= h:
                    continue
                src = img[iy]
                for j in range(kw):
                    t, a, b = taps[i, j], first[j], end[j]
                    r, start = row[a:b], a * sw + j * dw - left
                    if sw == 1:  # a contiguous view vectorises; a strided one cannot be it
                        _add_scaled(r, t, src[start : start + b - a], b - a)
                    else:
                        _add_scaled(r, t, src[start::sw], b - a)


@jit(
    _signatures(
        "void({t}[:, :, :, ::1], {t}[:, :, :, ::1], {t}[:, :, :, ::1], "
        "int64, int64, int64, int64, int64, int64, int64, int64)"
    ),
    **JIT_OPTIONS,
)
def grad_input(g, w, gx, lo, hi, top, left, sh, sw, dh, dw):
    """Planes lo..hi of g (N, C, Ho, Wo) -> gx (N, C, H, W), the adjoint of ``forward``,
    gathered per input row (each gx row is written by one plane's loop only): offset (i, j)
    adds w[c, 0, i, j] * g[oy, ox] at row oy*sh - top + i*dh, column ox*sw - left + j*dw."""
    c, ho, wo = g.shape[1], g.shape[2], g.shape[3]
    h, wd = gx.shape[2], gx.shape[3]
    kh, kw = w.shape[2], w.shape[3]
    if sh == 1 and sw == 1 and top <= dh * (kh - 1) and left <= dw * (kw - 1):
        _grad_input_flat(g, w, gx, lo, hi, top, left, dh, dw)
        return
    first, end = np.empty(kw, np.int64), np.empty(kw, np.int64)
    _columns(first, end, left, sw, dw, wd, wo)
    for p in range(lo, hi):
        n, ci = p // c, p % c
        gp, out, taps = g[n, ci], gx[n, ci], w[ci, 0]
        for iy in range(h):
            row = out[iy]
            row[:] = 0
            for i in range(kh):
                num = iy + top - i * dh
                if num < 0 or num % sh != 0 or num // sh >= ho:
                    continue
                src = gp[num // sh]
                for j in range(kw):
                    t, a, b = taps[i, j], first[j], end[j]
                    s, start = src[a:b], a * sw + j * dw - left
                    if sw == 1:
                        _add_scaled(row[start : start + b - a], t, s, b - a)
                    else:
                        _add_scaled(row[start::sw], t, s, b - a)


@jit(
    _signatures(
        "void({t}[:, :, :, ::1], {t}[:, :, :, ::1], {t}[:, :, ::1], int64, int64, int64, "
        "int64, int64, int64, int64, int64, int64, int64, int64, int64)"
    ),
    **JIT_OPTIONS,
)
def grad_weight(x, g, parts, part, lo, hi, c0, c1, kw, top, left, sh, sw, dh, dw):
    """Channels c0..c1 of images lo..hi -> parts[part, c, i*kw + j]: the sum over those images
    and all output positions of g[oy, ox] * x[oy*sh - top + i*dh, ox*sw - left + j*dw].

    Each (offset, output column) keeps its own partial sum (a row of ``acc``), so the adds
    along a row vectorise without reordering any one sum; the columns are added in order at
    the end, in float64."""
    h, wd = x.shape[2], x.shape[3]
    ho, wo = g.shape[2], g.shape[3]
    taps = parts.shape[2]
    kh = taps // kw
    if sh == 1 and sw == 1 and top >= 0 and left >= 0:
        _grad_weight_flat(x, g, parts, part, lo, hi, c0, c1, kw, top, left, dh, dw)
        return
    first, end = np.empty(kw, np.int64), np.empty(kw, np.int64)
    _columns(first, end, left, sw, dw, wd, wo)
    acc = np.zeros((taps, wo), x.dtype)
    for ci in range(c0, c1):
        acc[:] = 0
        for n in range(lo, hi):
            img, gp = x[n, ci], g[n, ci]
            for oy in range(ho):
                grow = gp[oy]
                for i in range(kh):
                    iy = oy * sh - top + i * dh
                    if iy < 0 or iy >= h:
                        continue
                    src = img[iy]
                    for j in range(kw):
                        a, b = first[j], end[j]
                        lane, gr = acc[i * kw + j, a:b], grow[a:b]
                        start = a * sw + j * dw - left
                        if sw == 1:
                            _add_product(lane, gr, src[start : start + b - a], b - a)
                        else:
                            _add_product(lane, gr, src[start::sw], b - a)
        for k in range(taps):
            total = 0.0
            for ox in range(wo):
                total += acc[k, ox]
            parts[part, ci, k] = total
