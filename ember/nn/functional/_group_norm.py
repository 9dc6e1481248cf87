"""The fused group norm Function for float32 NumPy inputs: ember/cpu's loops over blocks of
(sample, group) rows, statistics and the per-channel affine in one forward call and every
gradient in one backward call. Other inputs (half dtypes, CuPy, kernels off, zero-size) keep
the composite in ``normalization._group_norm`` (layer norm over (N, G, -1), then the affine as
Tensor ops), which is also this Function's oracle in the tests.
"""

from __future__ import annotations

import math

import numpy as np

from ember.autograd.function import Function
from ember.autograd.grad_mode import state
from ember.cpu import groupnorm as cpu_gn
from ember.nn.functional._norm_common import _norm_backward_graph
from ember.ops.parallel import run_blocks
from ember.ops.shape import reshape
from ember.tensor.tensor import Tensor

# Blocks of whole (sample, group) rows of about _GN_BLOCK elements (1 MB) on the CPU threads:
# (32, 64, 32, 32) with 8 groups is 8 blocks of 32 rows, a small input one block on the
# calling thread. Each row's sums are its own and dw/db are summed per (sample, channel), so
# the bits do not depend on the blocks.
GN_THREADS = None  # the default thread count
_GN_BLOCK = 1 << 18


def _gn_rows(rows: int, m: int) -> int:
    return max(1, min(rows, _GN_BLOCK // max(m, 1)))


def fused_kernels(x, weight, bias, num_groups: int):
    """ember/cpu's (forward, backward) when they can run on these raw arrays (float32 NumPy,
    not empty, groups of two elements or more), else None. Groups of one element (an (N, C)
    input with num_groups = C) are a row of loop overhead each: (4096, 256) f+b took 18.6 ms
    in the loops against 11.8 ms in the composite, which wins no case from two elements on
    ((4096, 256) with 128 groups: 10.9 against 16.3 ms)."""
    if x.size == 0 or x.size // (x.shape[0] * num_groups) < 2:
        return None
    if not cpu_gn.supports(x, weight, bias):
        return None
    return cpu_gn.group_kernels()


class GroupNormFn(Function):
    """y = (x - mean) * rstd * w[c] + b[c], the statistics per (sample, group) of an (N, C, *)
    float32 NumPy input. ``kernels``: ``fused_kernels``' pair, taken once at forward so that
    backward runs the loop whose statistics forward saved. Under ``create_graph`` the backward
    is the closed form in Tensor ops (as layer and batch norm), so double backward works."""

    def __init__(self, num_groups: int, eps: float, kernels):
        self.groups, self.eps, self.kernels = num_groups, eps, kernels

    def name(self) -> str:
        return "NativeGroupNormBackward"

    def forward(self, x, weight, bias):
        n, c = x.shape[0], x.shape[1]
        L = math.prod(x.shape[2:])  # noqa: N806
        rows, m = n * self.groups, c // self.groups * L
        f32 = np.float32
        x2 = np.ascontiguousarray(x.reshape(rows, m))
        out = np.empty_like(x2)
        wv = np.ones(c, f32) if weight is None else np.ascontiguousarray(weight)
        bv = np.zeros(c, f32) if bias is None else np.ascontiguousarray(bias)
        mean, mean_lo, rstd = np.empty(rows, f32), np.empty(rows, f32), np.empty(rows, f32)
        e, groups, kernel = f32(self.eps), self.groups, self.kernels[0]
        run_blocks(
            lambda lo, hi: kernel(x2, wv, bv, e, groups, L, out, mean, mean_lo, rstd, lo, hi),
            rows, _gn_rows(rows, m), GN_THREADS,
        )  # fmt: skip
        self.mean, self.mean_lo, self.rstd = mean, mean_lo, rstd
        self.save_for_backward(x, weight)
        return out.reshape(x.shape)

    def backward(self, g):
        x, w = self.saved_tensors
        shape = x.data.shape
        n, c = shape[0], shape[1]
        cg = c // self.groups
        L = math.prod(shape[2:])  # noqa: N806
        if state.enabled:  # create_graph: the same formula, recorded
            grouped = (n, self.groups, cg, L)
            dx, dw, db = _norm_backward_graph(
                reshape(g, grouped), reshape(x, grouped), w, (2, 3), (self.groups, cg, 1),
                (c,), self.eps, None, self.needs_input_grad,
            )  # fmt: skip
            return (None if dx is None else reshape(dx, shape)), dw, db
        need_x, need_w, need_b = self.needs_input_grad
        rows, m = n * self.groups, cg * L
        g2 = np.ascontiguousarray(g.data.reshape(rows, m), np.float32)
        x2 = np.ascontiguousarray(x.data.reshape(rows, m))
        wv = np.ones(c, np.float32) if w is None else np.ascontiguousarray(w.data)
        dx = np.empty_like(g2) if need_x else g2  # g2: a placeholder the kernel never writes
        dwp, dbp = np.empty((n, c)), np.empty((n, c))
        mean, mean_lo, rstd = self.mean, self.mean_lo, self.rstd
        groups, kernel = self.groups, self.kernels[1]
        run_blocks(
            lambda lo, hi: kernel(
                g2, x2, mean, mean_lo, rstd, wv, groups, L, need_x, dx, dwp, dbp, lo, hi
            ),
            rows, _gn_rows(rows, m), GN_THREADS,
        )  # fmt: skip
        return (
            Tensor(dx.reshape(shape)) if need_x else None,
            Tensor(dwp.sum(axis=0).astype(np.float32)) if need_w else None,
            Tensor(dbp.sum(axis=0).astype(np.float32)) if need_b else None,
        )
