"""Group norm over the (sample, group) rows of a float32 (N * G, C / G * L) array, forward and
backward, a row at a time: a group's statistics, and its output with the per-channel weight and
bias, in two or three passes over data that stays in L2, where the composite (layer norm, then a
broadcast multiply and add, each with its own backward reduction) spends a pass over the whole
array on each step.

Sums over a group run in float32 over fixed chunks of ``_CHUNK`` elements, the chunks summed in
float64; the weight and bias gradients are written per (sample, channel) in float64 and summed
over the samples by the caller in a fixed order. Nothing depends on how the rows are split over
threads.
"""

from __future__ import annotations

import numpy as np

from ember.cpu._rows import centred_sums, grad_sums, row_sum
from ember.cpu.compile import JIT_OPTIONS, jit

# Elements per float32 partial sum of a group: a group of (16, 256, 16, 16) / 32 groups is 2048
# elements, of (32, 64, 32, 32) / 8 groups 8192; float32 sums over 512 lose at most ~3e-5
# relative (typically far less), and the float64 sum of the chunks nothing that matters.
_CHUNK = 512


@jit(
    "void(float32[:, ::1], float32[::1], float32[::1], float32, int64, int64, "
    "float32[:, ::1], float32[::1], float32[::1], float32[::1], int64, int64)",
    **JIT_OPTIONS,
)
def group_norm_forward(x, w, b, eps, groups, L, out, mean, mean_lo, rstd, lo, hi):  # noqa: N803
    """Rows (sample, group) lo..hi of x, each its group's C / G channels of L:
    out = ((x - mean) - mean_lo) * rstd * w[c] + b[c], with the mean in two float32 parts
    (mean_lo is what rounding it lost, so a group at 1e4 is centred to float32 precision, not
    to half an ulp of 1e4) and rstd = 1/sqrt(var + eps) of the biased variance."""
    m = x.shape[1]
    cg = m // L
    for p in range(lo, hi):
        row, o = x[p], out[p]
        s = 0.0
        for k in range(0, m, _CHUNK):
            s += row_sum(row[k : k + _CHUNK])
        mu = np.float32(s / m)
        # the corrected two-pass variance: the centred sums fix the mean's rounding
        s1 = s2 = 0.0
        for k in range(0, m, _CHUNK):
            a1, a2 = centred_sums(row[k : k + _CHUNK], mu)
            s1 += a1
            s2 += a2
        shift = s1 / m
        v = s2 / m - shift * shift
        if v < 0.0:  # rounding of a constant group (NaN passes through)
            v = 0.0
        mu64 = mu + shift
        mu = np.float32(mu64)
        mu_lo = np.float32(mu64 - mu)
        r = np.float32(1.0 / np.sqrt(v + eps))
        mean[p], mean_lo[p], rstd[p] = mu, mu_lo, r
        c0 = (p % groups) * cg
        if L == 1:  # an (N, C) input: the group is a row of channels
            for k in range(cg):
                o[k] = ((row[k] - mu) - mu_lo) * (r * w[c0 + k]) + b[c0 + k]
            continue
        for k in range(cg):
            scale = r * w[c0 + k]
            bias = b[c0 + k]
            # a channel's own slices: indices from 0 need no negative-index check, so the
            # loop vectorises (10x faster than indexing the row from k * L)
            xc, oc = row[k * L : (k + 1) * L], o[k * L : (k + 1) * L]
            for j in range(L):
                oc[j] = ((xc[j] - mu) - mu_lo) * scale + bias


@jit(
    "void(float32[:, ::1], float32[:, ::1], float32[::1], float32[::1], float32[::1], "
    "float32[::1], int64, int64, boolean, float32[:, ::1], float64[:, ::1], float64[:, ::1], "
    "int64, int64)",
    **JIT_OPTIONS,
)
def group_norm_backward(g, x, mean, mean_lo, rstd, w, groups, L, need_x, dx, dwp, dbp, lo, hi):  # noqa: N803
    """Rows (sample, group) lo..hi, with mean + mean_lo as the mean (see
    ``group_norm_forward``): per channel c of sample n, dbp[n, c] = sum(g) and
    dwp[n, c] = sum(g (x - mean)) rstd (float64, summed over the samples by the caller); and
    dx = rstd (g w - mean(g w) - (x - mean) rstd^2 mean(g w (x - mean))) over the group."""
    m = x.shape[1]
    cg = m // L
    for p in range(lo, hi):
        n, c0 = p // groups, (p % groups) * cg
        gr, xr = g[p], x[p]
        mu, mu_lo, r = mean[p], mean_lo[p], rstd[p]
        sgw = sgwx = 0.0  # sum(g w), sum(g w (x - mean)) over the group
        for k in range(cg):
            if L == 1:
                sg = np.float64(gr[k])
                sgx = np.float64(gr[k] * (xr[k] - mu))
            else:
                a1, a2 = grad_sums(gr[k * L : (k + 1) * L], xr[k * L : (k + 1) * L], mu)
                sg = np.float64(a1)
                sgx = np.float64(a2)
            sgx -= sg * mu_lo
            dbp[n, c0 + k] = sg
            dwp[n, c0 + k] = sgx * r
            sgw += sg * w[c0 + k]
            sgwx += sgx * w[c0 + k]
        if not need_x:
            continue
        g_mean = np.float32(sgw / m)
        coef = np.float32(r * r * (sgwx / m))
        o = dx[p]
        if L == 1:
            for k in range(cg):
                o[k] = (gr[k] * w[c0 + k] - g_mean - ((xr[k] - mu) - mu_lo) * coef) * r
            continue
        for k in range(cg):
            wc = w[c0 + k]
            gc, xc = gr[k * L : (k + 1) * L], xr[k * L : (k + 1) * L]
            oc = o[k * L : (k + 1) * L]
            for j in range(L):
                oc[j] = (gc[j] * wc - g_mean - ((xc[j] - mu) - mu_lo) * coef) * r
