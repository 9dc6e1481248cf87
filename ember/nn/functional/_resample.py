"""Raw NumPy kernels for interpolate's separable passes, where gathers and scatter-adds are slow.

A 2-tap linear resampling along one axis is a product with an (n_in, n_out) matrix holding the
two weights of each output column. BLAS runs that product at a few hundred times the speed of
NumPy's gather and scatter-add, so while the input axis is short (the wasted zero products are
n_in / 2 per output) the dense product wins: bilinear x2 of (8, 64, 64, 64), forward and
backward, 190 ms through take/IndexAdd against ~15 ms (torch: 21 ms). A zero weight times an
inf is NaN, so arrays that are not all finite keep the gather path (callers check).
"""

from __future__ import annotations

import math

import numpy as np

from ember.ops.parallel import gemm, run_blocks, split

DENSE_MAX_IN = 256  # longest input axis resampled as a dense product


def interpolation_matrix(n_in: int, i0, w0, i1, w1, dtype):
    """The (n_in, n_out) matrix with ``w0[j]`` at (i0[j], j) and ``w1[j]`` at (i1[j], j),
    summed where the two indices meet (the clamped edge)."""
    n_out = i0.shape[0]
    m = np.zeros((n_in, n_out), dtype)
    cols = np.arange(n_out)
    m[i0, cols] = w0.astype(dtype)
    np.add.at(m, (i1, cols), w1.astype(dtype))
    return m


def all_finite(a) -> bool:
    """True when no element is inf or NaN. A sum is one fast pass; one that overflows reports
    False, which only sends the caller to the gather path."""
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.isfinite(a.sum()))


def resample_axis(x, m, axis: int):
    """``y[..., j, ...] = sum_i x[..., i, ...] * m[i, j]`` along ``axis``, as BLAS products
    over the CPU threads."""
    n_in, n_out = m.shape
    shape = x.shape
    lead, rest = math.prod(shape[:axis]), math.prod(shape[axis + 1 :])
    x = np.ascontiguousarray(x, dtype=m.dtype)
    out_shape = shape[:axis] + (n_out,) + shape[axis + 1 :]
    if rest == 1:  # the last axis: one product of all rows
        return gemm(x.reshape(lead, n_in), m).reshape(out_shape)
    x3 = x.reshape(lead, n_in, rest)
    out = np.empty((lead, n_out, rest), m.dtype)
    mt = np.ascontiguousarray(m.T)

    def kernel(lo, hi):
        np.matmul(mt, x3[lo:hi], out=out[lo:hi])

    run_blocks(kernel, lead, split(lead, max(1, (1 << 16) // max(1, n_in * rest))))
    return out.reshape(out_shape)


def sum_runs(g, axis: int, k: int):
    """Each run of ``k`` consecutive elements along ``axis`` summed (in order, as
    ``np.add.reduce`` would): k strided adds instead of a reduction over a length-k axis,
    which NumPy runs one short loop per output element."""
    shape = g.shape
    runs = g.reshape(shape[:axis] + (shape[axis] // k, k) + shape[axis + 1 :])
    pick = [slice(None)] * runs.ndim
    pick[axis + 1] = 0
    half = g.dtype.itemsize < 4  # float16 / bfloat16 add up in float32 and round once, as torch
    out = runs[tuple(pick)].astype(np.float32 if half else g.dtype)
    for j in range(1, k):
        pick[axis + 1] = j
        out += runs[tuple(pick)]
    return out.astype(g.dtype, copy=False)
