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


@jit(**SUM_OPTIONS)
def row_sum(a):
    """sum(a) over a float32 row."""
    s = np.float32(0.0)
    for j in range(a.size):
        s += a[j]
    return s


@jit(**SUM_OPTIONS)
def row_dot(a, b):
    """sum(a * b) over two float32 rows."""
    s = np.float32(0.0)
    for j in range(a.size):
        s += a[j] * b[j]
    return s


@jit(**SUM_OPTIONS)
def centred_sums(a, mu):
    """(sum(a - mu), sum((a - mu)^2)) over a float32 row: with the first, a mean rounded to
    float32 is corrected (the corrected two-pass variance) at no extra pass."""
    s1 = s2 = np.float32(0.0)
    for j in range(a.size):
        c = a[j] - mu
        s1 += c
        s2 += c * c
    return s1, s2


@jit(**SUM_OPTIONS)
def grad_sums(g, a, mu):
    """(sum(g), sum(g * (a - mu))) over two float32 rows: a normalisation's backward sums."""
    s1 = s2 = np.float32(0.0)
    for j in range(a.size):
        s1 += g[j]
        s2 += g[j] * (a[j] - mu)
    return s1, s2
