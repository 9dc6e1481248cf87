"""Shared plumbing for the pointwise families (unary math, activations, select, comparison).

Why it exists: every one-input math op needs the same three things (integer inputs promoted
to the default float as in torch, NumPy's overflow/invalid warnings silenced because torch
returns inf/nan quietly, and a node that saves its input or its output), and every masked
gradient is ``grad * constant`` that must stay differentiable for double backward.
"""

from __future__ import annotations

import numpy as np

from ember.autograd.function import Function, as_array
from ember.ops.promotion import cast
from ember.tensor import dtypes
from ember.tensor.backend import get_array_module
from ember.tensor.tensor import Tensor

FLOATING_NP = dtypes.FLOATING_NP
HALF_NP = frozenset((dtypes.float16.np, dtypes.bfloat16.np))


def quiet():
    """Silence NumPy's overflow/invalid/divide warnings: torch returns inf/nan quietly."""
    return np.errstate(all="ignore")


def check_tensor(x, op: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}(): argument 'input' must be Tensor, not {type(x).__name__}")
    return x


def floating(x, op: str) -> Tensor:
    """The input as a float Tensor: bool/int promote to the default dtype (torch.exp(int))."""
    check_tensor(x, op)
    if x.data.dtype in FLOATING_NP:
        return x
    return cast(x, dtypes.get_default_dtype())


def float_only(x, op: str) -> Tensor:
    """Ops torch implements for floating dtypes only (gelu, silu, softplus, frac...)."""
    check_tensor(x, op)
    if x.data.dtype not in FLOATING_NP:
        raise RuntimeError(
            f"{op}: not implemented for '{x.dtype.name}' (a floating point input is required)"
        )
    return x


def const(arr, value):
    """``value`` as a scalar of ``arr``'s dtype: NumPy would promote bfloat16 with a Python
    float to float32, and float16 with a float64 scalar to float64."""
    return arr.dtype.type(value)


def broadcast_error(op: str, *shapes) -> RuntimeError:
    """torch's wording, plus the op and every shape."""
    names = "abcdefgh"
    ndim = max(len(s) for s in shapes)
    padded = [(1,) * (ndim - len(s)) + tuple(s) for s in shapes]
    detail = ""
    for d in range(ndim):
        sizes = [(names[i], p[d]) for i, p in enumerate(padded) if p[d] != 1]
        if len({s for _, s in sizes}) > 1:
            (n0, s0), (n1, s1) = sizes[0], next(x for x in sizes if x[1] != sizes[0][1])
            detail = (
                f": The size of tensor {n0} ({s0}) must match the size of tensor {n1} "
                f"({s1}) at non-singleton dimension {d}"
            )
            break
    listed = " and ".join(str(tuple(s)) for s in shapes)
    return RuntimeError(f"{op}: shapes {listed} cannot be broadcast together{detail}")


def to_float32(x):
    """float16/bfloat16 compute in float32 (torch's opmath); other dtypes stay as they are."""
    return x.astype(np.float32) if x.dtype in HALF_NP else x


# NumPy's where over a mask without long runs (x > 0 of random data) mispredicts a branch per
# element: 7.6 ms for 2M float32 where a sorted mask takes 1.2. Blending the bit patterns,
# b ^ ((a ^ b) & m) with m = 0 - cond as 0 or all ones, has no branch: 1.6-2 ms, and is exact
# (NaN payloads and signed zeros come through as they are).
_SELECT_MIN = 1 << 15
_SAME_WIDTH_INT = {2: np.int16, 4: np.int32, 8: np.int64}


def select(cond, a, b):
    """``where(cond, a, b)`` on raw arrays (``a``/``b`` may be Python or NumPy scalars)."""
    xp = get_array_module(cond)
    if xp is np and cond.size >= _SELECT_MIN:
        dtype = np.result_type(a, b)
        itype = _SAME_WIDTH_INT.get(dtype.itemsize) if dtype.kind in "fiu" else None
        shape = np.broadcast_shapes(cond.shape, np.shape(a), np.shape(b))
        if itype is not None and shape == cond.shape:
            ai = np.asarray(a, dtype).view(itype)
            bi = np.asarray(b, dtype).view(itype)
            m = np.subtract(itype(0), cond, dtype=itype)  # all ones where cond, else 0
            m &= np.bitwise_xor(ai, bi)
            m ^= bi  # b ^ ((a ^ b) & m): a where m is all ones, b where it is 0
            return m.view(dtype)
    return xp.where(cond, a, b)


class ScaleGrad(Function):
    """``grad * w`` for a constant array ``w`` (a bool mask or weights): the masked gradient
    of relu, clamp, where, maximum... Linear in ``grad``, so its own backward is itself.

    Multiplying (not ``xp.where``) keeps it to one fast pass; the only difference from torch's
    ``where(mask, grad, 0)`` is an inf/nan incoming gradient at a masked-out position.
    """

    def forward(self, g, w):
        self.w = w
        if (
            w.dtype == np.bool_
            and w.shape == g.shape
            and type(g) is np.ndarray
            and type(w) is np.ndarray
            and g.dtype.kind == "f"
        ):
            # float * bool goes through NumPy's casting loop (measured 0.66 ms on 2M elements);
            # casting the mask first and multiplying in place is 0.47 ms
            out = w.astype(g.dtype)
            return np.multiply(g, out, out=out)
        return g * w

    def backward(self, gg):
        return ScaleGrad().apply(gg, self.w), None


def scale_grad(g: Tensor, w) -> Tensor:
    return ScaleGrad().apply(g, w)


def zeros_grad(g: Tensor) -> Tensor:
    """torch's ``zeros_like(grad)`` for the piecewise-constant ops (sign, floor, round...)."""
    return Tensor(get_array_module(g.data).zeros_like(g.data))


class Elementwise(Function):
    """One input, one output of the same shape. Subclasses give ``fn(xp, x)`` (raw arrays),
    ``grad(g, saved)`` (Tensor ops, so double backward works) and ``saves`` ('input',
    'output' or None)."""

    saves = "input"

    def forward(self, x):
        with quiet():
            out = as_array(self.fn(get_array_module(x), x))
        if self.needs_input_grad[0] and self.saves is not None:
            self.save_for_backward(out if self.saves == "output" else x)
        return out

    def backward(self, g):
        if self.saves is None:
            return self.grad(g, None)
        (s,) = self.saved_tensors
        return self.grad(g, s)


def elementwise(name: str, fn, grad, saves="input") -> type:
    """A Function class for one elementwise op; ``name`` shows up as ``<NameBackward>``."""
    return type(
        name, (Elementwise,), {"fn": staticmethod(fn), "grad": staticmethod(grad), "saves": saves}
    )
