"""Sums over one float32 row, shared by the row and channel loops (layer, batch and group
norm, softmax).

They may be reassociated (and so vectorised): a plain ``s += a[j]`` is otherwise one chain of
dependent adds that LLVM may not reorder without fastmath, 2.5x slower on layer norm's rows;
8 or 16 hand-unrolled partial sums stayed scalar. The summation order then follows the CPU's
vector width: the same machine gives the same bits every run.
"""

from __future__ import annotations

import numpy as np

from ember.cpu.compile import JIT_OPTIONS, jit

SUM_OPTIONS = dict(JIT_OPTIONS, fastmath={"reassoc"})


# Rows longer than this are summed in float32 chunks of it, the chunks added in float64: one
# float32 sum of an 8M-element softmax row was 1.6e-4 off (NumPy's pairwise sum: 2e-7). Rows
# up to a chunk give the same bits as a single sum.
CHUNK = 4096


@jit(**SUM_OPTIONS)
def row_sum(a):
    """sum(a) over a float32 row."""
    if a.size <= CHUNK:  # one chunk: no views (a row of layer norm or softmax, usually)
        s = np.float32(0.0)
        for j in range(a.size):
            s += a[j]
        return s
    total = 0.0
    for lo in range(0, a.size, CHUNK):
        s = np.float32(0.0)
        c = a[lo : lo + CHUNK]  # a view from 0: a range from lo keeps a negative-index test
        for j in range(c.size):  # in the loop, which stops LLVM vectorising it
            s += c[j]
        total += s
    return np.float32(total)


@jit(**SUM_OPTIONS)
def row_dot(a, b):
    """sum(a * b) over two float32 rows."""
    if a.size <= CHUNK:
        s = np.float32(0.0)
        for j in range(a.size):
            s += a[j] * b[j]
        return s
    total = 0.0
    for lo in range(0, a.size, CHUNK):
        s = np.float32(0.0)
        c, d = a[lo : lo + CHUNK], b[lo : lo + CHUNK]
        for j in range(c.size):
            s += c[j] * d[j]
        total += s
    return np.float32(total)


@jit(**SUM_OPTIONS)
def centred_sums(a, mu):
    """(sum(a - mu), sum((a - mu)^2)) over a float32 row: with the first, a mean rounded to
    float32 is corrected (the corrected two-pass variance) at no extra pass."""
    if a.size <= CHUNK:
        s1 = s2 = np.float32(0.0)
        for j in range(a.size):
            c = a[j] - mu
            s1 += c
            s2 += c * c
        return s1, s2
    t1 = t2 = 0.0
    for lo in range(0, a.size, CHUNK):
        s1 = s2 = np.float32(0.0)
        r = a[lo : lo + CHUNK]
        for j in range(r.size):
            c = r[j] - mu
            s1 += c
            s2 += c * c
        t1 += s1
        t2 += s2
    return np.float32(t1), np.float32(t2)


@jit(**SUM_OPTIONS)
def grad_sums(g, a, mu):
    """(sum(g), sum(g * (a - mu))) over two float32 rows: a normalisation's backward sums."""
    if a.size <= CHUNK:
        s1 = s2 = np.float32(0.0)
        for j in range(a.size):
            s1 += g[j]
            s2 += g[j] * (a[j] - mu)
        return s1, s2
    t1 = t2 = 0.0
    for lo in range(0, a.size, CHUNK):
        s1 = s2 = np.float32(0.0)
        h, r = g[lo : lo + CHUNK], a[lo : lo + CHUNK]
        for j in range(r.size):
            s1 += h[j]
            s2 += h[j] * (r[j] - mu)
        t1 += s1
        t2 += s2
    return np.float32(t1), np.float32(t2)
