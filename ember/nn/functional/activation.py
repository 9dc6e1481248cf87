"""Activations under torch.nn.functional's names (relu, gelu, leaky_relu, elu, hardtanh...).

The hot ones (relu, gelu, silu, sigmoid, tanh, softplus, softmax, log_softmax) are the fused
ops of ``ember.ops``, re-exported here with torch's ``inplace=`` flags. The rest are small:
a masked-gradient Function where torch's gradient is a mask (leaky_relu, hardtanh, threshold,
hardsigmoid), or a composite of ember ops (elu, mish, logsigmoid...), which differentiates
to any order. Overflowing branches are clamped first, so no ``0 * inf`` reaches a gradient.
"""

from __future__ import annotations

from ember.autograd.autocast_state import state as _autocast
from ember.autograd.autocast_state import suspended
from ember.autograd.function import Function
from ember.autograd.grad_mode import state
from ember.ops.activation import (
    elu_f32,
    elu_grad_f32,
    gelu,
    leaky_relu_f32,
    leaky_relu_grad_f32,
    sigmoid,
    softplus,
    tanh,
)
from ember.ops.activation import relu as _relu
from ember.ops.activation import silu as _silu_op
from ember.ops.inplace import apply_inplace
from ember.ops.nn_ops import log_softmax as _log_softmax
from ember.ops.nn_ops import softmax as _softmax
from ember.ops.pointwise import (
    check_tensor,
    const,
    float_only,
    quiet,
    scale_grad,
    select,
    to_float32,
)
from ember.ops.select import clamp_max, where
from ember.ops.unary import abs as _abs
from ember.ops.unary import exp
from ember.tensor.backend import get_array_module
from ember.tensor.tensor import Tensor

__all__ = [
    "relu",
    "relu_",
    "relu6",
    "leaky_relu",
    "leaky_relu_",
    "elu",
    "elu_",
    "selu",
    "selu_",
    "celu",
    "celu_",
    "gelu",
    "silu",
    "mish",
    "softplus",
    "sigmoid",
    "tanh",
    "hardtanh",
    "hardtanh_",
    "hardsigmoid",
    "hardswish",
    "logsigmoid",
    "softsign",
    "tanhshrink",
    "threshold",
    "threshold_",
    "glu",
    "prelu",
    "softmax",
    "log_softmax",
    "softmin",
]

_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def _maybe_inplace(input: Tensor, inplace: bool, fn, *args, op: str) -> Tensor:
    if inplace:
        return apply_inplace(input, fn, *args, op=op + "_")
    return fn(input, *args)


# ------------------------------------------------------------------ fused ember ops
def relu(input: Tensor, inplace: bool = False) -> Tensor:
    return input.relu_() if inplace else _relu(input)


def relu_(input: Tensor) -> Tensor:
    return input.relu_()


def silu(input: Tensor, inplace: bool = False) -> Tensor:
    """x * sigmoid(x)."""
    return _maybe_inplace(input, inplace, _silu_op, op="silu")


def softmax(input: Tensor, dim=None, _stacklevel: int = 3, dtype=None) -> Tensor:
    return _softmax(input, dim, dtype)


def log_softmax(input: Tensor, dim=None, _stacklevel: int = 3, dtype=None) -> Tensor:
    return _log_softmax(input, dim, dtype)


def softmin(input: Tensor, dim=None, _stacklevel: int = 3, dtype=None) -> Tensor:
    """softmax(-x)."""
    return _softmax(-input, dim, dtype)


# ------------------------------------------------------------ masked-gradient ops
class _Masked(Function):
    """Forward on raw arrays; the gradient is ``grad * w`` for a constant ``w`` made in the
    forward (a mask or the slopes), so it is exact and differentiable again."""

    def backward(self, g):
        return scale_grad(g, self.w)


class LeakyRelu(_Masked):
    def __init__(self, slope: float):
        self.slope = slope

    def forward(self, x):
        out = leaky_relu_f32(x, self.slope)  # float32: one loop (ember/cpu), None otherwise
        if out is not None:
            self.w = None  # the gradient loop reads x instead of a slopes array
            self.save_for_backward(x)
            return out
        self.w = select(x > 0, const(x, 1), const(x, self.slope))
        return x * self.w  # x itself where x > 0 (times one), x * slope elsewhere

    def backward(self, g):
        if self.w is None:
            (x,) = self.saved_tensors
            gx = None if state.enabled else leaky_relu_grad_f32(g.data, x.data, self.slope)
            if gx is not None:
                return Tensor(gx)
            self.w = select(x.data > 0, const(x.data, 1), const(x.data, self.slope))
        return scale_grad(g, self.w)


class Hardtanh(_Masked):
    """clip(x, lo, hi); the gradient passes strictly inside (lo, hi), as torch's."""

    def __init__(self, lo: float, hi: float):
        self.lo, self.hi = lo, hi

    def forward(self, x):
        xp = get_array_module(x)
        self.w = (x > self.lo) & (x < self.hi)
        return xp.minimum(xp.maximum(x, const(x, self.lo)), const(x, self.hi))


class Threshold(_Masked):
    """x where x > threshold, else ``value``."""

    def __init__(self, threshold: float, value: float):
        self.threshold, self.value = threshold, value

    def forward(self, x):
        xp = get_array_module(x)
        self.w = x > const(x, self.threshold)
        return xp.where(self.w, x, const(x, self.value))


class Hardsigmoid(_Masked):
    """relu6(x + 3) / 6; gradient 1/6 strictly inside (-3, 3)."""

    def forward(self, x):
        xp = get_array_module(x)
        inside = (x > -3) & (x < 3)
        self.w = inside * const(x, 1 / 6)
        x32 = to_float32(x)  # half inputs: float32 math, one rounding (torch's opmath)
        out = xp.clip(x32 + const(x32, 3), const(x32, 0), const(x32, 6)) / const(x32, 6)
        return out.astype(x.dtype, copy=False)


def leaky_relu(input: Tensor, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    """x where x > 0, else negative_slope * x."""
    float_only(input, "leaky_relu")
    return _maybe_inplace(
        input, inplace, lambda t: LeakyRelu(negative_slope).apply(t), op="leaky_relu"
    )


def leaky_relu_(input: Tensor, negative_slope: float = 0.01) -> Tensor:
    return leaky_relu(input, negative_slope, True)


def hardtanh(
    input: Tensor, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False
) -> Tensor:
    check_tensor(input, "hardtanh")
    if min_val > max_val:
        raise ValueError("min_val cannot be greater than max_val")
    return _maybe_inplace(
        input, inplace, lambda t: Hardtanh(min_val, max_val).apply(t), op="hardtanh"
    )


def hardtanh_(input: Tensor, min_val: float = -1.0, max_val: float = 1.0) -> Tensor:
    return hardtanh(input, min_val, max_val, True)


def relu6(input: Tensor, inplace: bool = False) -> Tensor:
    """min(max(x, 0), 6) (hardtanh(x, 0, 6), with its gradient)."""
    return hardtanh(input, 0.0, 6.0, inplace)


def threshold(input: Tensor, threshold: float, value: float, inplace: bool = False) -> Tensor:
    check_tensor(input, "threshold")
    return _maybe_inplace(
        input, inplace, lambda t: Threshold(threshold, value).apply(t), op="threshold"
    )


def threshold_(input: Tensor, threshold: float, value: float) -> Tensor:
    return globals()["threshold"](input, threshold, value, True)


def hardsigmoid(input: Tensor, inplace: bool = False) -> Tensor:
    float_only(input, "hardsigmoid")
    return _maybe_inplace(input, inplace, lambda t: Hardsigmoid().apply(t), op="hardsigmoid")


# ---------------------------------------------------------------------- composites
# torch runs each of these as one op, in the input's dtype under autocast too; built here
# from ops that autocast would send to float32 (expm1, softplus), they run with it suspended.
def _as_one_op(fn):
    def op(*args):
        return suspended(fn, *args) if _autocast.enabled else fn(*args)

    op.__name__, op.__doc__ = fn.__name__, fn.__doc__
    return op


class EluFn(Function):
    """elu / selu / celu as one op (torch's elu kernel): scale * x where x > 0, else
    scale * alpha * (exp(x * input_scale) - 1), in float32 for half inputs and rounded once;
    the gradient is torch's elu_backward (scale where x > 0, else input_scale * scale *
    alpha * exp(x * input_scale); NaN at NaN, as torch's vectorised kernel). One Function
    instead of five ops and their gradients. The negative branch sees min(x, 0), so large x
    cannot overflow into a NaN gradient."""

    def __init__(self, alpha: float, scale: float, input_scale: float):
        self.alpha, self.scale, self.input_scale = alpha, scale, input_scale

    def _exp_branch(self, x32):
        xp = get_array_module(x32)
        t = xp.minimum(const(x32, 0), x32)  # ties give the second operand: x's signed zero
        if self.input_scale != 1:
            t *= const(x32, self.input_scale)
        return t

    def forward(self, x):
        self.save_for_backward(x)
        out = elu_f32(x, self.alpha, self.scale, self.input_scale)  # float32: ember/cpu's loop
        if out is not None:
            return out
        x32 = to_float32(x).reshape(-1)  # 1-D: 0-d arithmetic gives NumPy scalars
        xp = get_array_module(x32)
        with quiet():
            out = self._exp_branch(x32)
            xp.expm1(out, out=out)  # 0 where x > 0, so adding scale * max(-0, x) selects
            out *= const(x32, self.scale * self.alpha)
            pos = xp.maximum(const(x32, -0.0), x32)  # -0 where x < 0, x's own zero at 0
            if self.scale != 1:
                pos *= const(x32, self.scale)
            out += pos
        return out.reshape(x.shape).astype(x.dtype, copy=False)

    def backward(self, g):
        (x,) = self.saved_tensors
        k = self.input_scale * self.scale * self.alpha
        if state.enabled:  # create_graph: the same slope, recorded
            t = clamp_max(x, 0) * self.input_scale if self.input_scale != 1 else clamp_max(x, 0)
            return g * where(x > 0, self.scale, exp(t) * k)
        gx = elu_grad_f32(g.data, x.data, self.alpha, self.scale, self.input_scale)
        if gx is not None:
            return Tensor(gx)
        x32 = to_float32(x.data).reshape(-1)
        with quiet():
            w = self._exp_branch(x32)
            get_array_module(x32).exp(w, out=w)
            w *= const(x32, k)
            w = select(x32 > 0, const(x32, self.scale), w)
        return scale_grad(g, w.reshape(x.data.shape).astype(g.data.dtype, copy=False))


def _elu(x: Tensor, alpha: float, scale: float, input_scale: float) -> Tensor:
    return EluFn(alpha, scale, input_scale).apply(x)


def elu(input: Tensor, alpha: float = 1.0, inplace: bool = False) -> Tensor:
    float_only(input, "elu")
    return _maybe_inplace(input, inplace, _elu, alpha, 1.0, 1.0, op="elu")


def elu_(input: Tensor, alpha: float = 1.0) -> Tensor:
    return elu(input, alpha, True)


def selu(input: Tensor, inplace: bool = False) -> Tensor:
    float_only(input, "selu")
    return _maybe_inplace(input, inplace, _elu, _SELU_ALPHA, _SELU_SCALE, 1.0, op="selu")


def selu_(input: Tensor) -> Tensor:
    return selu(input, True)


def celu(input: Tensor, alpha: float = 1.0, inplace: bool = False) -> Tensor:
    float_only(input, "celu")
    if alpha == 0:
        raise RuntimeError("ZeroDivisionError: celu: alpha must not be 0")
    return _maybe_inplace(input, inplace, _elu, alpha, 1.0, 1.0 / alpha, op="celu")


def celu_(input: Tensor, alpha: float = 1.0) -> Tensor:
    return celu(input, alpha, True)


def _hardswish(x: Tensor) -> Tensor:
    """x * relu6(x + 3) / 6; gradient 0 up to -3, x / 3 + 1/2 inside (-3, 3), 1 from 3 on
    (torch's choice at the kinks)."""
    return HardswishFn().apply(x)


class HardswishFn(Function):
    def forward(self, x):
        xp = get_array_module(x)
        self.save_for_backward(x)
        x32 = to_float32(x)
        with quiet():
            t = xp.clip(x32 + const(x32, 3), const(x32, 0), const(x32, 6))
            return (t * x32 / const(x32, 6)).astype(x.dtype, copy=False)

    def backward(self, g):
        (x,) = self.saved_tensors
        mid = where(x <= -3, 0.0, x / 3 + 0.5)
        return g * where(x < 3, mid, 1.0)


def hardswish(input: Tensor, inplace: bool = False) -> Tensor:
    float_only(input, "hardswish")
    return _maybe_inplace(input, inplace, _hardswish, op="hardswish")


@_as_one_op
def _mish(x: Tensor) -> Tensor:
    return x * tanh(softplus(x))


@_as_one_op
def _logsigmoid(x: Tensor) -> Tensor:
    return -softplus(-x)


def mish(input: Tensor, inplace: bool = False) -> Tensor:
    """x * tanh(softplus(x))."""
    float_only(input, "mish")
    return _maybe_inplace(input, inplace, _mish, op="mish")


def logsigmoid(input: Tensor) -> Tensor:
    """log(sigmoid(x)) = -softplus(-x), stable for large |x|."""
    float_only(input, "log_sigmoid")
    return _logsigmoid(input)


def softsign(input: Tensor) -> Tensor:
    """x / (1 + |x|)."""
    return input / (_abs(input) + 1)


def tanhshrink(input: Tensor) -> Tensor:
    """x - tanh(x)."""
    return input - tanh(input)


def glu(input: Tensor, dim: int = -1) -> Tensor:
    """a * sigmoid(b), where a and b are the two halves of ``input`` along ``dim``."""
    check_tensor(input, "glu")
    if input.data.ndim == 0:
        raise RuntimeError("glu does not support scalars because halving size must be even")
    from ember.ops.dims import normalize_dim

    d = normalize_dim(dim, input.data.ndim, "glu")
    size = input.data.shape[d]
    if size % 2:
        raise RuntimeError(
            f"glu: Halving dimension must be even, but dimension {d} is size "
            f"{size} (input shape {tuple(input.data.shape)})"
        )
    a, b = input.chunk(2, d)
    return a * sigmoid(b)


def prelu(input: Tensor, weight: Tensor) -> Tensor:
    """x where x > 0, else weight * x, with one weight per channel (dim 1) or one shared."""
    check_tensor(input, "prelu")
    n = weight.data.size
    if weight.data.ndim > 1 or (n != 1 and (input.data.ndim < 2 or input.data.shape[1] != n)):
        raise RuntimeError(
            f"prelu: expected weight with 1 element or one per channel, got "
            f"weight of shape {tuple(weight.data.shape)} for input of shape "
            f"{tuple(input.data.shape)}"
        )
    w = weight
    if n != 1 and input.data.ndim > 2:
        w = weight.reshape((n,) + (1,) * (input.data.ndim - 2))
    elif n == 1:
        w = weight.reshape(())
    return where(input > 0, input, input * w)
