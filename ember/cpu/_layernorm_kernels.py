"""Layer norm over the rows of a float32 (m, d) array, forward and backward, a row at a time:
each row's statistics and outputs in a few passes over data that stays in L1, where NumPy
spends a pass over the whole array on each broadcast.

The weight and bias gradients are summed per column in float64, per block of rows (the caller
adds the blocks).
"""

from __future__ import annotations

import numpy as np

from ember.cpu._rows import centred_sums, row_dot, row_sum
from ember.cpu.compile import JIT_OPTIONS, jit

_ZERO = np.float32(0.0)


@jit(
    "void(float32[:, ::1], float32[::1], float32[::1], float32, "
    "float32[:, ::1], float32[::1], float32[::1], int64, int64)",
    **JIT_OPTIONS,
)
def layer_norm_forward(x, w, b, eps, out, mean, rstd, lo, hi):
    """Rows lo..hi: out = (x - mean) * rstd * w + b, with mean and rstd = 1/sqrt(var + eps)
    (the biased variance, from the centred row)."""
    d = x.shape[1]
    fd = np.float32(d)
    for i in range(lo, hi):
        row, o = x[i], out[i]
        mu = row_sum(row) / fd
        # the corrected two-pass variance: the centred sum fixes the mean's rounding (a row at
        # 1e4 with a spread of 1 keeps its precision), and costs no extra pass
        s1, s2 = centred_sums(row, mu)
        shift = s1 / fd
        mu += shift
        var = s2 / fd - shift * shift
        if var < _ZERO:  # rounding (a constant row); NaN stays NaN
            var = _ZERO
        r = np.float32(1.0) / np.sqrt(var + eps)
        for j in range(d):
            o[j] = (row[j] - mu) * r * w[j] + b[j]
        mean[i] = mu
        rstd[i] = r


@jit(
    "void(float32[:, ::1], float32[:, ::1], float32[::1], float32[::1], float32[::1], "
    "float32[:, ::1], float64[::1], float64[::1], boolean, boolean, boolean, int64, int64)",
    **JIT_OPTIONS,
)
def layer_norm_backward(g, x, mean, rstd, w, dx, dw, db, need_x, need_w, need_b, lo, hi):
    """Rows lo..hi: dx = (g w - mean(g w) - xhat mean(g w xhat)) * rstd, with xhat recomputed
    from x, mean and rstd; dw += sum over rows of g xhat and db += sum of g (float64)."""
    d = x.shape[1]
    fd = np.float32(d)
    xhat = np.empty(d, np.float32)
    gw = np.empty(d, np.float32)
    for i in range(lo, hi):
        row, gr = x[i], g[i]
        mu, r = mean[i], rstd[i]
        for j in range(d):
            xhat[j] = (row[j] - mu) * r
        if need_b:
            for j in range(d):
                db[j] += gr[j]
        if need_w:
            for j in range(d):
                dw[j] += gr[j] * xhat[j]
        if need_x:
            for j in range(d):
                gw[j] = gr[j] * w[j]
            s1 = row_sum(gw) / fd
            s2 = row_dot(gw, xhat) / -fd
            o = dx[i]
            for j in range(d):
                o[j] = (xhat[j] * s2 - s1 + gw[j]) * r
