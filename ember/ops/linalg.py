"""Matrix products: matmul (``@``; batched, broadcast, and the 1-D cases), mm, bmm, mv, dot."""

from __future__ import annotations

import numpy as np

from ember.autograd import autocast_state as _amp
from ember.autograd.autocast_state import state as _autocast
from ember.autograd.function import Function
from ember.autograd.grad_mode import state
from ember.ops.parallel import HALF_DTYPES, gemm
from ember.ops.promotion import as_tensor_operand, check_same_device
from ember.ops.reduction import sum_to_shape
from ember.tensor.tensor import Tensor


class MatMul(Function):
    def forward(self, a, b):
        ng = self.needs_input_grad
        self.save_for_backward(a if ng[1] else None, b if ng[0] else None)
        self.shapes = (a.shape, b.shape)
        return _mm(a, b, a.dtype)

    def backward(self, g):
        from ember.ops.shape import reshape, transpose

        a, b = self.saved_tensors
        sa, sb = self.shapes
        ng = self.needs_input_grad
        if not state.enabled and len(sa) >= 2 and len(sb) >= 2 and sa[:-2] == sb[:-2]:
            # no create_graph and no batch broadcasting: two raw products, no graph bookkeeping
            gd = g.data
            ga = Tensor(_mm(gd, b.data.swapaxes(-1, -2), gd.dtype)) if ng[0] else None
            gb = Tensor(_mm(a.data.swapaxes(-1, -2), gd, gd.dtype)) if ng[1] else None
            return ga, gb
        if not state.enabled and len(sa) > 2 and len(sb) == 2:
            # (..., m, k) @ (k, n): fold the batch into rows; the weight gradient is one GEMM
            gd, k, n = g.data, sa[-1], sb[-1]
            ga = Tensor(_mm(gd, b.data.T, gd.dtype)) if ng[0] else None
            gb = (
                Tensor(_mm(a.data.reshape(-1, k).T, gd.reshape(-1, n), gd.dtype)) if ng[1] else None
            )
            return ga, gb
        if len(sa) == 1 and len(sb) == 1:
            return (g * b if ng[0] else None), (g * a if ng[1] else None)
        sa2 = sa if len(sa) > 1 else (1,) + sa
        sb2 = sb if len(sb) > 1 else sb + (1,)
        gshape = g.data.shape
        if len(sa) == 1:
            gshape = gshape[:-1] + (1, gshape[-1])
        if len(sb) == 1:
            gshape = gshape + (1,)
        g2 = reshape(g, gshape) if gshape != g.data.shape else g
        ga = gb = None
        if ng[0]:
            b2 = reshape(b, sb2) if sb2 != sb else b
            ga = reshape(sum_to_shape(matmul(g2, transpose(b2, -1, -2)), sa2), sa)
        if ng[1]:
            a2 = reshape(a, sa2) if sa2 != sa else a
            gb = reshape(sum_to_shape(matmul(transpose(a2, -1, -2), g2), sb2), sb)
        return ga, gb


def _mm(x, y, dtype):
    """x @ y in ``dtype``. A stack times one matrix is folded into a single 2-D GEMM: NumPy's
    stacked matmul leaves BLAS when the matrix is a transposed view (measured 480 ms vs
    1.5 ms for a (64, 1024, 128) @ (128, 128).T). Half NumPy operands are multiplied in
    float32 and rounded once (tensor-core emulation, ember.ops.parallel)."""
    if type(x) is np.ndarray and x.dtype in HALF_DTYPES:
        x, y = x.astype(np.float32), y.astype(np.float32)
    if x.ndim > 2 and y.ndim == 2:
        out = gemm(x.reshape(-1, x.shape[-1]), y).reshape(x.shape[:-1] + (y.shape[-1],))
    elif x.ndim == 2 and y.ndim == 2:
        out = gemm(x, y)  # large products: row blocks on the CPU threads (ember.ops.parallel)
    else:
        out = x @ y
    return out if out.dtype == dtype else out.astype(dtype)  # ml_dtypes bfloat16 -> float32


def _check(a: Tensor, b: Tensor, op: str) -> None:
    sa, sb = a.data.shape, b.data.shape
    if not sa or not sb:
        raise RuntimeError(
            f"{op}: both arguments to matmul need to be at least 1D, but they "
            f"are {len(sa)}D and {len(sb)}D"
        )
    k_a = sa[-1]
    k_b = sb[0] if len(sb) == 1 else sb[-2]
    if k_a != k_b:
        raise RuntimeError(f"{op}: shapes {tuple(sa)} and {tuple(sb)} are not aligned")
    if a.data.dtype != b.data.dtype:
        raise RuntimeError(
            f"{op}: expected both operands to have the same dtype, got {a.dtype} and {b.dtype}"
        )
    check_same_device(a, b, op)
    ba, bb = sa[:-2], sb[:-2]
    for x, y in zip(reversed(ba), reversed(bb)):
        if x != y and x != 1 and y != 1:
            raise RuntimeError(
                f"{op}: batch dimensions of shapes {tuple(sa)} and {tuple(sb)} cannot be broadcast"
            )


def matmul(input, other) -> Tensor:
    if _autocast.enabled:  # mm, bmm, mv and @ come through here
        return _amp.call(_amp.LOW, matmul, input, other)
    a = as_tensor_operand(input, "matmul")
    b = as_tensor_operand(other, "matmul")
    _check(a, b, "matmul")
    return MatMul().apply(a, b)


def mm(input: Tensor, mat2: Tensor) -> Tensor:
    if input.data.ndim != 2 or mat2.data.ndim != 2:
        raise RuntimeError(f"mm: expected 2D tensors, got {input.data.ndim}D and {mat2.data.ndim}D")
    return matmul(input, mat2)


def bmm(input: Tensor, mat2: Tensor) -> Tensor:
    if input.data.ndim != 3 or mat2.data.ndim != 3:
        raise RuntimeError(
            f"bmm: expected 3D tensors, got {input.data.ndim}D and {mat2.data.ndim}D"
        )
    if input.data.shape[0] != mat2.data.shape[0]:
        raise RuntimeError(
            f"bmm: batch sizes differ: shapes {tuple(input.data.shape)} and "
            f"{tuple(mat2.data.shape)}"
        )
    return matmul(input, mat2)


def mv(input: Tensor, vec: Tensor) -> Tensor:
    if input.data.ndim != 2 or vec.data.ndim != 1:
        raise RuntimeError(
            f"mv: expected a 2D matrix and a 1D vector, got {input.data.ndim}D and {vec.data.ndim}D"
        )
    return matmul(input, vec)


def dot(input: Tensor, other: Tensor) -> Tensor:
    if _autocast.enabled:
        return _amp.call(_amp.PROMOTE, dot, input, other)
    if input.data.ndim != 1 or other.data.ndim != 1:
        raise RuntimeError(
            f"dot: 1D tensors expected, but got {input.data.ndim}D and {other.data.ndim}D tensors"
        )
    return matmul(input, other)


def _rmatmul(self, other):
    return matmul(other, self)


METHODS = {
    "matmul": matmul,
    "mm": mm,
    "bmm": bmm,
    "mv": mv,
    "dot": dot,
    "__matmul__": matmul,
    "__rmatmul__": _rmatmul,
}
FUNCTIONS = {"matmul": matmul, "mm": mm, "bmm": bmm, "mv": mv, "dot": dot}
