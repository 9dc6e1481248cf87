"""Batch norm over the channels of a float32 (N, C, L) array, forward and backward, a channel
at a time: a channel's N rows of L are read two or three times while they sit in L2, where
NumPy spends a pass over the whole array on each broadcast and temporary.

Each channel's statistics are its own: partial sums of a row in float32, the rows summed in
float64, so results do not depend on how the channels are split over threads.
"""

from __future__ import annotations

import numpy as np

from ember.cpu._rows import centred_sums, grad_sums, row_sum
from ember.cpu.compile import JIT_OPTIONS, jit


@jit(
    "void(float32[:, :, ::1], float32[::1], float32[::1], float32, boolean, "
    "float32[:, :, ::1], float32[::1], float32[::1], float32[::1], float32[::1], int64, int64)",
    **JIT_OPTIONS,
)
def batch_norm_forward(x, w, b, eps, training, out, mean, mean_lo, var, rstd, lo, hi):
    """Channels lo..hi: out = (x - mean - mean_lo) * rstd * w + b. Training computes mean (in
    two float32 parts: mean_lo is what rounding mean lost, so a channel at 1e4 is centred to
    float32 precision, not to half an ulp of 1e4), the biased var and rstd = 1/sqrt(var + eps)
    of each channel over N and L; eval reads mean, mean_lo and rstd."""
    n, L = x.shape[0], x.shape[2]  # noqa: N806
    m = n * L
    for c in range(lo, hi):
        if training:
            s = 0.0
            for i in range(n):
                s += row_sum(x[i, c])
            mu = np.float32(s / m)
            # the corrected two-pass variance: the centred sums fix the mean's rounding (a
            # channel at 1e4 with a spread of 1 keeps its precision)
            s1 = s2 = 0.0
            for i in range(n):
                a1, a2 = centred_sums(x[i, c], mu)
                s1 += a1
                s2 += a2
            shift = s1 / m
            v = s2 / m - shift * shift
            if v < 0.0:  # rounding of a constant channel (NaN passes through)
                v = 0.0
            mu64 = mu + shift
            mean[c] = np.float32(mu64)
            mean_lo[c] = np.float32(mu64 - mean[c])
            var[c] = np.float32(v)
            rstd[c] = np.float32(1.0 / np.sqrt(v + eps))
        mu, mu_lo = mean[c], mean_lo[c]
        scale = rstd[c] * w[c]
        bias = b[c]
        for i in range(n):
            xr, o = x[i, c], out[i, c]
            for j in range(L):
                o[j] = ((xr[j] - mu) - mu_lo) * scale + bias


@jit(
    "void(float32[:, :, ::1], float32[:, :, ::1], float32[::1], float32[::1], float32[::1], "
    "float32[::1], boolean, boolean, boolean, float32[:, :, ::1], float32[::1], float32[::1], "
    "int64, int64)",
    **JIT_OPTIONS,
)
def batch_norm_backward(
    g, x, mean, mean_lo, rstd, w, training, need_x, need_sums, dx, dw, db, lo, hi
):
    """Channels lo..hi, with mean + mean_lo as the mean (see ``batch_norm_forward``):
    db = sum(g), dw = sum(g (x - mean)) rstd (when ``need_sums``) and
    dx = rstd w (g - mean(g) - (x - mean) rstd^2 mean(g (x - mean))) in training, rstd w g in
    eval (the statistics are then constants)."""
    n, L = x.shape[0], x.shape[2]  # noqa: N806
    m = n * L
    for c in range(lo, hi):
        mu, mu_lo, r = mean[c], mean_lo[c], rstd[c]
        sg = sgx = 0.0
        if need_sums:
            for i in range(n):
                a1, a2 = grad_sums(g[i, c], x[i, c], mu)
                sg += a1
                sgx += a2
            sgx -= sg * mu_lo
            db[c] = np.float32(sg)
            dw[c] = np.float32(sgx * r)
        if not need_x:
            continue
        k = r * w[c]
        if training:
            g_mean = np.float32(sg / m)
            coef = np.float32(r * r * (sgx / m))
            for i in range(n):
                gr, xr, o = g[i, c], x[i, c], dx[i, c]
                for j in range(L):
                    o[j] = (gr[j] - g_mean - ((xr[j] - mu) - mu_lo) * coef) * k
        else:
            for i in range(n):
                gr, o = g[i, c], dx[i, c]
                for j in range(L):
                    o[j] = gr[j] * k
