"""Winograd F(2x2, 3x3) transforms as one loop each, for a block of images ``[lo, hi)``.

The NumPy path (ember/nn/functional/_winograd.py) pads and row-splits a copy of each block and
then spends about ten ufunc passes per transform; here each 4x4 (or 2x2) tile is read and
written once, the padding is a bounds test per row (a row outside the image reads a zero row)
and the output crop is a bounds test per tile, so no padded copy exists.

Layout of a block of b images (``col0`` is where the block starts in v's columns): the tile
(ti, tj) of channel ci of image bi is column ``col0 + ((ci * b + bi) * th + ti) * tw + tj`` of
v (16, ...), row ``4a + k`` holding entry (a, k) of the 4x4 transformed tile. Unlike the NumPy
layout there is no "junk" tile per tile row. m (the GEMM result) and gm (the transformed output
gradient) use the same order with O channels. The caller gives them as (16, stride) arrays
whose rows are not a multiple of 4 KiB apart (the 16 rows touched per tile would otherwise
share one L1 cache set).

The adds are those of the NumPy passes, in the same order (float32 stays float32, no fastmath),
so results match them bit for bit.
"""

from __future__ import annotations

import numpy as np

from ember.cpu.compile import JIT_OPTIONS, jit


def _signatures(template: str) -> list:
    return [template.format(t=t) for t in ("float32", "float64")]


@jit(
    _signatures(
        "void({t}[:, :, :, ::1], {t}[:, ::1], int64, int64, int64, int64, int64, int64, int64)"
    ),
    **JIT_OPTIONS,
)
def input_transform(x, v, col0, lo, hi, top, left, th, tw):
    """x (N, C, H, W) images lo..hi -> v[:, col0:]: B^T d B per tile, d the 4x4 window at
    padded row 2ti and column 2tj (x's row 2ti - top, column 2tj - left; outside x is zero)."""
    c, h, w = x.shape[1], x.shape[2], x.shape[3]
    b = hi - lo
    wp = 2 * tw + 2
    zero = np.zeros(w, x.dtype)
    t = np.zeros((4, wp), x.dtype)  # the row transform of the tile row; padding stays zero
    j0, j1 = max(0, -left), min(w, wp - left)  # columns of x inside the padded tile grid
    for ci in range(c):
        for bi in range(b):
            img = x[lo + bi, ci]
            for ti in range(th):
                r = 2 * ti - top
                d0 = img[r] if 0 <= r < h else zero
                d1 = img[r + 1] if 0 <= r + 1 < h else zero
                d2 = img[r + 2] if 0 <= r + 2 < h else zero
                d3 = img[r + 3] if 0 <= r + 3 < h else zero
                for j in range(j0, j1):
                    t[0, j + left] = d0[j] - d2[j]
                    t[1, j + left] = d1[j] + d2[j]
                    t[2, j + left] = d2[j] - d1[j]
                    t[3, j + left] = d1[j] - d3[j]
                col = col0 + ((ci * b + bi) * th + ti) * tw
                for a in range(4):
                    ta = t[a]
                    v0, v1, v2, v3 = v[4 * a], v[4 * a + 1], v[4 * a + 2], v[4 * a + 3]
                    for tj in range(tw):
                        e0, e1 = ta[2 * tj], ta[2 * tj + 1]
                        e2, e3 = ta[2 * tj + 2], ta[2 * tj + 3]
                        v0[col + tj] = e0 - e2
                        v1[col + tj] = e1 + e2
                        v2[col + tj] = e2 - e1
                        v3[col + tj] = e1 - e3


@jit(**JIT_OPTIONS)
def _output_tile(m, k):
    """A^T M A of the tile in column k of m: (y00, y01, y10, y11)."""
    # A^T M: the rows of M give (m0 + (m1 + m2), (m1 - m2) - m3), as the NumPy passes
    z00 = m[0, k] + (m[1, k] + m[2, k])
    z01 = (m[1, k] - m[2, k]) - m[3, k]
    z10 = m[4, k] + (m[5, k] + m[6, k])
    z11 = (m[5, k] - m[6, k]) - m[7, k]
    z20 = m[8, k] + (m[9, k] + m[10, k])
    z21 = (m[9, k] - m[10, k]) - m[11, k]
    z30 = m[12, k] + (m[13, k] + m[14, k])
    z31 = (m[13, k] - m[14, k]) - m[15, k]
    return z00 + (z10 + z20), z01 + (z11 + z21), (z10 - z20) - z30, (z11 - z21) - z31


@jit(
    _signatures("void({t}[:, ::1], {t}[:, :, :, ::1], int64, int64, int64, int64)"),
    **JIT_OPTIONS,
)
def output_transform(m, y, lo, hi, th, tw):
    """m (16, O*b*th*tw) -> y[lo:hi] (N, O, Ho, Wo): A^T M A per tile, where the 2x2 output tile
    (ti, tj) lands at row 2ti, column 2tj; rows and columns past Ho, Wo are dropped."""
    o, ho, wo = y.shape[1], y.shape[2], y.shape[3]
    b = hi - lo
    spare = np.empty(wo, y.dtype)  # the second row of a tile row cropped by Ho
    full = wo // 2  # tiles whose two columns are both inside y (the last one may not be)
    for oi in range(o):
        for bi in range(b):
            for ti in range(th):
                y0 = y[lo + bi, oi, 2 * ti]
                y1 = y[lo + bi, oi, 2 * ti + 1] if 2 * ti + 1 < ho else spare
                col = ((oi * b + bi) * th + ti) * tw
                for tj in range(full):
                    y00, y01, y10, y11 = _output_tile(m, col + tj)
                    y0[2 * tj], y0[2 * tj + 1] = y00, y01
                    y1[2 * tj], y1[2 * tj + 1] = y10, y11
                if full < tw:
                    y00, _, y10, _ = _output_tile(m, col + full)
                    y0[2 * full], y1[2 * full] = y00, y10


@jit(**JIT_OPTIONS)
def _grad_tile(gm, k, a0, a1, c0, c1):
    """Column k of gm from the 2x2 tile ((a0, a1), (c0, c1)): the rows of A g are (g0,
    g0 + g1, g0 - g1, g1) and each row (e0, e1) gives (e0, e0 + e1, e0 - e1, e1)."""
    s0, s1 = a0 + c0, a1 + c1
    d0, d1 = a0 - c0, a1 - c1
    gm[0, k], gm[1, k], gm[2, k], gm[3, k] = a0, a0 + a1, a0 - a1, a1
    gm[4, k], gm[5, k], gm[6, k], gm[7, k] = s0, s0 + s1, s0 - s1, s1
    gm[8, k], gm[9, k], gm[10, k], gm[11, k] = d0, d0 + d1, d0 - d1, d1
    gm[12, k], gm[13, k], gm[14, k], gm[15, k] = c0, c0 + c1, c0 - c1, c1


@jit(
    _signatures("void({t}[:, :, :, ::1], {t}[:, ::1], int64, int64, int64, int64)"),
    **JIT_OPTIONS,
)
def grad_transform(g, gm, lo, hi, th, tw):
    """g (N, O, Ho, Wo) images lo..hi -> gm (16, O*b*th*tw): A g A^T per 2x2 tile (zero past
    Ho, Wo), with the rows and columns of A that hold a -1 alone taken as +1 (the caller puts
    those signs back on dU, as the NumPy path does)."""
    o, ho, wo = g.shape[1], g.shape[2], g.shape[3]
    b = hi - lo
    zero = np.zeros(wo, g.dtype)  # the row past Ho of a cropped tile row
    nil = zero[0]
    full = wo // 2
    for oi in range(o):
        for bi in range(b):
            for ti in range(th):
                g0 = g[lo + bi, oi, 2 * ti]
                g1 = g[lo + bi, oi, 2 * ti + 1] if 2 * ti + 1 < ho else zero
                col = ((oi * b + bi) * th + ti) * tw
                for tj in range(full):
                    _grad_tile(gm, col + tj, g0[2 * tj], g0[2 * tj + 1], g1[2 * tj], g1[2 * tj + 1])
                if full < tw:
                    _grad_tile(gm, col + full, g0[2 * full], nil, g1[2 * full], nil)
