"""Activations on the hot path: relu, sigmoid, tanh, gelu (exact and tanh), silu, softplus.

Why the extra classes: each activation's backward is itself a Function (``ReluGrad``,
``SigmoidGrad``, ``GeluGrad``...), as in torch. Its forward is a lean raw-array kernel
(in-place steps, no float64, intermediates from the forward reused), so a first-order
backward costs a few passes over memory; its backward is written with Tensor ops, so double
backward still works. float16/bfloat16 compute in float32 and round once (torch's opmath).
"""

from __future__ import annotations

import math

import numpy as np

from ember.autograd import autocast_state as _amp
from ember.autograd.autocast_state import state as _autocast
from ember.autograd.function import Function, as_array
from ember.cpu import gelu as cpu_gelu
from ember.cpu import pointwise as cpu_pointwise
from ember.cuda import gelu as cuda_gelu
from ember.cuda.compile import kernels_enabled
from ember.ops.parallel import get_num_threads, run_blocks, ufunc_blocks
from ember.ops.pointwise import (
    check_tensor,
    const,
    float_only,
    floating,
    quiet,
    scale_grad,
    to_float32,
)
from ember.ops.special import erf_array, phi_float32
from ember.tensor.backend import get_array_module
from ember.tensor.tensor import Tensor

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_K0 = math.sqrt(2.0 / math.pi)  # gelu(approximate='tanh')
_K1 = 0.044715


def _scalar_safe(kernel):
    """Run a kernel that uses ``out=`` on 0-d arrays too (NumPy makes their results scalars)."""

    def run(*arrays):
        if arrays[0].ndim == 0:
            res = kernel(*(a.reshape(1) for a in arrays))
            return tuple(r.reshape(()) for r in res) if type(res) is tuple else res.reshape(())
        return kernel(*arrays)

    run.__name__ = kernel.__name__
    return run


def _back_to(arr, dtype):
    return arr if arr.dtype == dtype else arr.astype(dtype)


# ------------------------------------------------------------------------------ relu
class Relu(Function):
    def forward(self, x):
        xp = get_array_module(x)
        if x.dtype.itemsize >= 4 and x.dtype.kind == "f":  # clip has a fast path, maximum not
            out = as_array(xp.clip(x, const(x, 0), const(x, math.inf)))  # NaN stays NaN
        else:
            out = as_array(xp.maximum(x, const(x, 0)))
        self.save_for_backward(out)
        return out

    def backward(self, g):
        (out,) = self.saved_tensors
        return scale_grad(g, out.data > 0)  # torch: no gradient at 0


def relu(input):
    check_tensor(input, "relu")
    if input.data.dtype.kind == "b":
        raise RuntimeError("relu: Boolean inputs not supported for relu")
    return Relu().apply(input)


# --------------------------------------------------------------------------- sigmoid
@_scalar_safe
def _sigmoid(x):
    """1 / (1 + exp(-x)) in place; exp overflowing to inf gives the right 0."""
    xp = get_array_module(x)
    t = xp.negative(x)
    with quiet():
        xp.exp(t, out=t)
    t += 1
    return xp.reciprocal(t, out=t)


def sigmoid_array(x):
    return _back_to(_sigmoid(to_float32(x)), x.dtype)


@_scalar_safe
def _sigmoid_grad(g, out):
    r = const(out, 1) - out
    r *= out
    r *= g
    return r


class Sigmoid(Function):
    def forward(self, x):
        out = sigmoid_array(x)
        self.save_for_backward(out)
        return out

    def backward(self, g):
        (out,) = self.saved_tensors
        return SigmoidGrad().apply(g, out)


class SigmoidGrad(Function):
    """g * out * (1 - out)."""

    def forward(self, g, out):
        self.save_for_backward(g, out)
        return _sigmoid_grad(g, out)

    def backward(self, gg):
        g, out = self.saved_tensors
        ng = self.needs_input_grad
        return (
            SigmoidGrad().apply(gg, out) if ng[0] else None,
            gg * g * (1 - out * 2) if ng[1] else None,
        )


def sigmoid(input):
    return Sigmoid().apply(floating(input, "sigmoid"))


# ------------------------------------------------------------------------------ tanh
@_scalar_safe
def _tanh_grad(g, out):
    r = out * out
    get_array_module(r).subtract(const(r, 1), r, out=r)
    r *= g
    return r


class Tanh(Function):
    def forward(self, x):
        out = as_array(ufunc_blocks(get_array_module(x).tanh, x))
        self.save_for_backward(out)
        return out

    def backward(self, g):
        (out,) = self.saved_tensors
        return TanhGrad().apply(g, out)


class TanhGrad(Function):
    """g * (1 - out^2)."""

    def forward(self, g, out):
        self.save_for_backward(g, out)
        return _tanh_grad(g, out)

    def backward(self, gg):
        g, out = self.saved_tensors
        ng = self.needs_input_grad
        return (TanhGrad().apply(gg, out) if ng[0] else None, gg * g * out * -2 if ng[1] else None)


def tanh(input):
    return Tanh().apply(floating(input, "tanh"))


# ------------------------------------------------------------------------------ gelu
@_scalar_safe
def _gelu_cdf(x):
    """Phi(x) = (1 + erf(x / sqrt 2)) / 2, for float32 or float64 ``x``."""
    if x.dtype == np.float32:
        return phi_float32(x)
    t = erf_array(x * _INV_SQRT2)
    t += 1
    t *= 0.5
    return t


@_scalar_safe
def _gelu_deriv(x, cdf):
    """gelu'(x) = Phi(x) + x * phi(x)."""
    xp = get_array_module(x)
    r = x * x
    r *= -0.5
    xp.exp(r, out=r)
    r *= _INV_SQRT_2PI
    r *= x
    r += cdf
    return r


# torch's CPU gelu (ATen's vectorised erf, Abramowitz & Stegun 7.1.26, |error| < 1.5e-7):
# erf(u) = sign(u) (1 - r(t) t exp(-u^2)), t = 1 / (1 + p |u|), u = x / sqrt 2. With
# k = sqrt 2 / p, t = k / (k + |x|); the 1/2 of Phi is folded into r's coefficients.
# Horner in monic form saves a pass: with s = a t, a = (R0 / 2)^(1/5), r(t) t / 2 becomes
# ((((s + c1) s + c2) s + c3) s + c4) s, c_i = R_i / (2 a^(5-i)); a goes into t's numerator.
_AS_K = np.float32(math.sqrt(2.0) / 0.3275911)
_AS_R = (1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592)
_AS_A = (0.5 * _AS_R[0]) ** 0.2
_AS_AK = np.float32(_AS_A * math.sqrt(2.0) / 0.3275911)
_AS_C = tuple(np.float32(0.5 * c / _AS_A ** (5 - i)) for i, c in enumerate(_AS_R) if i)
_SIGN = np.int32(-(1 << 31))
_HALF_LOG2E = np.float32(-0.5 / math.log(2.0))  # exp(-x^2/2) = exp2(x^2 * this)
_EXP2_MIN = np.float32(-126)  # exp2's smallest normal result
# Elements per block. Large blocks: each of the 23 passes is a ufunc call that takes and
# drops the GIL, and on two threads those hand-offs, not the cache, set the pace. gelu of
# (2048, 512) float32, second core idle: 64K blocks 2.77 ms on one thread / 1.85 ms on two,
# 128K 2.71 / 1.59, 256K 2.63 / 1.47 (16K: 3.36 / 4.05).
_GELU_BLOCK = 1 << 18
_GELU_MIN_BLOCK = 1 << 16  # smaller arrays: at least two blocks per thread of this size


def _gelu_exact_block(x, out, deriv, t, h):
    """``out = x Phi(x)`` and ``deriv = Phi(x) + x phi(x)`` on one float32 block, with
    ``t``, ``h`` as scratch: 23 in-place ufunc passes and a min; ``exp(-x^2/2)`` serves both."""
    np.abs(x, out=t)
    t += _AS_K
    np.divide(_AS_AK, t, out=t)  # s = a t
    np.add(t, _AS_C[0], out=h)
    h *= t
    for c in _AS_C[1:]:
        h += c
        h *= t  # ends as r(t) t / 2
    np.multiply(x, x, out=deriv)
    deriv *= _HALF_LOG2E
    # exp(-x^2 / 2) as exp2: twice as fast as NumPy's float32 exp, and as exact. exp2 leaves
    # its fast path for -inf and subnormal results (10-70x slower), so a block with |x| > 13.2
    # (or a NaN) floors the argument at -126 and sets those elements to 0 after (torch's
    # x phi(x): 0 for huge x, NaN for infinite x); every element gets the same value either way.
    if deriv.min() >= _EXP2_MIN:
        np.exp2(deriv, out=deriv)
    else:  # t (free until the sign step) holds 1.0 where exp2's argument is in range
        np.greater_equal(deriv, _EXP2_MIN, out=t, casting="unsafe")
        np.clip(deriv, _EXP2_MIN, np.float32(0), out=deriv)
        np.exp2(deriv, out=deriv)
        deriv *= t
    h *= deriv  # q: Phi = q for x < 0, 1 - q otherwise
    np.subtract(np.float32(0.5), h, out=h)
    ti = t.view(np.int32)
    np.bitwise_and(x.view(np.int32), _SIGN, out=ti)
    hi = h.view(np.int32)
    np.bitwise_xor(hi, ti, out=hi)  # copysign (the ufunc is 5x slower)
    h += np.float32(0.5)  # Phi(x)
    np.multiply(x, h, out=out)
    deriv *= x
    deriv *= np.float32(_INV_SQRT_2PI)
    deriv += h


def _gelu_exact_f32(x):
    """(gelu(x), gelu'(x)) of a float32 array, computed in cache-sized blocks spread over
    the CPU threads (ember.ops.parallel)."""
    shape = x.shape
    x = np.ascontiguousarray(x).reshape(-1)
    out = np.empty_like(x)
    deriv = np.empty_like(x)
    n = x.size

    def kernel(lo, hi):
        t = np.empty(hi - lo, np.float32)
        h = np.empty(hi - lo, np.float32)
        _gelu_exact_block(x[lo:hi], out[lo:hi], deriv[lo:hi], t, h)

    threads = get_num_threads() if n >= 4 * _GELU_MIN_BLOCK else 1
    block = min(_GELU_BLOCK, max(_GELU_MIN_BLOCK, -(-n // (2 * threads))))
    run_blocks(kernel, n, block, threads)
    return out.reshape(shape), deriv.reshape(shape)


@_scalar_safe
def _gelu_tanh(x):
    """0.5 x (1 + tanh(k0 (x + k1 x^3))); also returns the tanh for backward."""
    xp = get_array_module(x)
    t = x * x
    t *= _K1
    t += 1
    t *= x
    t *= _K0
    xp.tanh(t, out=t)
    out = t + 1
    out *= x
    out *= 0.5
    return out, t


@_scalar_safe
def _gelu_tanh_grad(g, x, t):
    """g * (0.5 (1 + t) + 0.5 x (1 - t^2) k0 (1 + 3 k1 x^2))."""
    xp = get_array_module(x)
    r = x * x
    r *= 3 * _K1
    r += 1
    r *= _K0
    r *= x
    s = t * t
    xp.subtract(1, s, out=s)
    r *= s
    r += t
    r += 1
    r *= 0.5
    r *= g
    return r


def _gelu_loops(*arrays):
    """ember/cpu's exact-GELU loops (forward, backward) for float32 NumPy arrays, or None."""
    return cpu_gelu.gelu_exact() if cpu_gelu.supports(*arrays) else None


def _gelu_kernel(x) -> bool:
    """ember/cuda/gelu.cu replaces the tanh-approximation composite for this CuPy array."""
    return get_array_module(x) is not np and kernels_enabled() and cuda_gelu.supports(x)


class Gelu(Function):
    def __init__(self, approximate: str):
        self.approximate = approximate

    def forward(self, x):
        if self.approximate == "tanh" and _gelu_kernel(x):
            self.aux = None  # the backward kernel recomputes the tanh
            self.save_for_backward(x)
            return cuda_gelu.gelu_forward(x)
        x32 = to_float32(x)
        with quiet():
            if self.approximate == "tanh":
                out, self.aux = _gelu_tanh(x32)  # tanh(...) for backward
            elif (loops := _gelu_loops(x32)) is not None:  # ember/cpu: one pass each way
                out, self.aux = pointwise_loop(loops[0], [x32]), None
            elif cpu_gelu.supports(x32):
                out, self.aux = _gelu_exact_f32(x32)  # gelu'(x) for backward
            else:
                cdf = _gelu_cdf(x32)
                out = x32 * cdf
                self.aux = _gelu_deriv(x32, cdf)
        self.save_for_backward(x)
        return _back_to(out, x.dtype)

    def backward(self, g):
        (x,) = self.saved_tensors
        return GeluGrad(self.approximate, self.aux).apply(g, x)


class GeluGrad(Function):
    """g * gelu'(x), reusing Phi(x) (exact) or the tanh (approximate) from the forward."""

    def __init__(self, approximate: str, aux):
        self.approximate, self.aux = approximate, aux

    def forward(self, g, x):
        self.save_for_backward(g, x)
        x32 = to_float32(x)
        g32 = to_float32(g)
        if self.aux is None:  # the forward ran a kernel: ember/cuda/gelu.cu or ember/cpu
            if self.approximate == "tanh" and _gelu_kernel(x):
                return cuda_gelu.gelu_backward(x, g)[0].astype(g.dtype, copy=False)
            loops = _gelu_loops(g32, x32) if self.approximate == "none" else None
            if loops is not None and g32.shape == x32.shape:
                return _back_to(pointwise_loop(loops[1], [g32, x32]), g.dtype)
            self.aux = self._recompute(x32)  # kernels switched off since
        with quiet():
            if self.approximate == "tanh":
                r = _gelu_tanh_grad(g32, x32, self.aux)
            else:
                r = g32 * self.aux  # memory-bound: a second thread does not help
        return _back_to(r, g.dtype)

    def _recompute(self, x32):
        """The saved slope of the forward, for a forward that ran a kernel instead."""
        with quiet():
            if self.approximate == "tanh":
                return _gelu_tanh(x32)[1]
            if cpu_gelu.supports(x32):
                return _gelu_exact_f32(x32)[1]
            return _gelu_deriv(x32, _gelu_cdf(x32))

    def backward(self, gg):
        g, x = self.saved_tensors
        ng = self.needs_input_grad
        dg = GeluGrad(self.approximate, self.aux).apply(gg, x) if ng[0] else None
        dx = gg * g * _gelu_second(x, self.approximate) if ng[1] else None
        return dg, dx


def _gelu_second(x: Tensor, approximate: str) -> Tensor:
    """gelu''(x) in Tensor ops (so even a third derivative is recorded)."""
    from ember.ops.unary import exp

    if approximate == "tanh":
        x2 = x * x
        du = (x2 * (3 * _K1) + 1) * _K0  # u'
        t = tanh((x2 * _K1 + 1) * x * _K0)
        return (1 - t * t) * (du - x * t * du * du + x2 * (3 * _K0 * _K1))
    pdf = exp(x * x * -0.5) * _INV_SQRT_2PI
    return pdf * (2 - x * x)


def gelu(input, approximate: str = "none"):
    """x * Phi(x); ``approximate='tanh'`` uses the tanh formula (GPT-2's ``gelu_new``)."""
    if approximate not in ("none", "tanh"):
        raise RuntimeError(
            f"gelu: approximate argument must be either none or tanh, got {approximate!r}"
        )
    return Gelu(approximate).apply(float_only(input, "gelu"))


# ------------------------------------------------------------------------------ silu
@_scalar_safe
def _silu_grad(g, x, s):
    """g * s * (1 + x * (1 - s))."""
    r = const(s, 1) - s
    r *= x
    r += 1
    r *= s
    r *= g
    return r


class Silu(Function):
    def forward(self, x):
        x32 = to_float32(x)
        self.s = _sigmoid(x32)
        self.save_for_backward(x)
        with quiet():
            return _back_to(x32 * self.s, x.dtype)

    def backward(self, g):
        (x,) = self.saved_tensors
        return SiluGrad(self.s).apply(g, x)


class SiluGrad(Function):
    def __init__(self, s):
        self.s = s  # sigmoid(x) from the forward

    def forward(self, g, x):
        self.save_for_backward(g, x)
        r = _silu_grad(to_float32(g), to_float32(x), self.s)
        return _back_to(r, g.dtype)

    def backward(self, gg):
        g, x = self.saved_tensors
        ng = self.needs_input_grad
        dg = SiluGrad(self.s).apply(gg, x) if ng[0] else None
        dx = None
        if ng[1]:
            s = sigmoid(x)
            dx = gg * g * (s * (1 - s) * (x * (1 - s * 2) + 2))
        return dg, dx


def silu(input):
    """x * sigmoid(x) (also called swish)."""
    return Silu().apply(float_only(input, "silu"))


# -------------------------------------------------------------------------- softplus
class Softplus(Function):
    def __init__(self, beta, threshold):
        self.beta, self.threshold = beta, threshold

    def forward(self, x):
        xp = get_array_module(x)
        x32 = to_float32(x)
        x1 = x32.reshape(1) if x32.ndim == 0 else x32  # so that out= works
        bx = x1 * self.beta if self.beta != 1 else x1
        with quiet():
            out = xp.exp(bx)
            xp.log1p(out, out=out)
        if self.beta != 1:
            out /= self.beta
        linear = bx > self.threshold  # torch: x itself above the threshold
        if linear.any():
            xp.copyto(out, x1, where=linear)
        self.linear = linear.reshape(x.shape)
        self.save_for_backward(x)
        return _back_to(out.reshape(x.shape), x.dtype)

    def backward(self, g):
        (x,) = self.saved_tensors
        s = sigmoid(x * self.beta if self.beta != 1 else x)
        if not self.linear.any():
            return g * s
        return scale_grad(g * s, ~self.linear) + scale_grad(g, self.linear)


def softplus(input, beta=1.0, threshold=20.0):
    """log(1 + exp(beta x)) / beta, and x where beta x > threshold (torch semantics)."""
    if _autocast.enabled:  # on torch's autocast float32 list
        return _amp.call(_amp.FP32, softplus, input, beta, threshold)
    return Softplus(beta, threshold).apply(float_only(input, "softplus"))


# ------------------------------------------- leaky_relu / elu loops (ember/cpu/pointwise)
# The Functions are ember.nn.functional.activation's LeakyRelu and EluFn; these run their
# float32 NumPy arrays as one loop each (forward, and gradient recomputed from the input)
# instead of 3-6 ufunc passes, and return None where the NumPy path stays.
def pointwise_loop(kernel, arrays, *scalars):
    """``kernel(*arrays, *scalars, out)`` over the flattened same-shape float32 ``arrays``,
    in blocks on the CPU threads once an array is large enough to pay for a thread's wake-up;
    returns ``out`` in their shape."""
    shape = arrays[0].shape
    flat = [np.ascontiguousarray(a).reshape(-1) for a in arrays]
    out = np.empty(flat[0].size, np.float32)
    n = out.size
    block, threads = cpu_pointwise.blocks(n, get_num_threads())

    def run(lo, hi):
        kernel(*[a[lo:hi] for a in flat], *scalars, out[lo:hi])

    run_blocks(run, n, block, threads)
    return out.reshape(shape)


def leaky_relu_f32(x, slope):
    """``x * select(x > 0, 1, slope)`` by ember/cpu's loop (bitwise), or None."""
    loops = cpu_pointwise.leaky_relu() if cpu_pointwise.supports(x) else None
    return None if loops is None else pointwise_loop(loops[0], [x], np.float32(slope))


def leaky_relu_grad_f32(g, x, slope):
    """``g * select(x > 0, 1, slope)`` by ember/cpu's loop (bitwise), or None."""
    ok = cpu_pointwise.supports(g, x) and g.shape == x.shape
    loops = cpu_pointwise.leaky_relu() if ok else None
    return None if loops is None else pointwise_loop(loops[1], [g, x], np.float32(slope))


def _elu_loops(arrays, input_scale):
    """The loops while they apply: float32 arrays, and an exp argument that is never positive
    (celu with a negative alpha keeps NumPy's path)."""
    with quiet():  # celu's 1 / alpha may overflow float32, as in the NumPy path
        ok = cpu_pointwise.supports(*arrays) and np.float32(input_scale) > 0
    return cpu_pointwise.elu() if ok else None


def elu_f32(x, alpha, scale, input_scale):
    """EluFn's forward by ember/cpu's loop (expm1 within 1 ulp of the exact value), or None."""
    loops = _elu_loops([x], input_scale)
    if loops is None:
        return None
    with quiet():
        coefs = (np.float32(input_scale), np.float32(scale * alpha), np.float32(scale))
    return pointwise_loop(loops[0], [x], *coefs)


def elu_grad_f32(g, x, alpha, scale, input_scale):
    """EluFn's first-order gradient by ember/cpu's loop (exp within 1 ulp), or None."""
    loops = _elu_loops([g, x], input_scale) if g.shape == x.shape else None
    if loops is None:
        return None
    with quiet():
        k = input_scale * scale * alpha
        coefs = (np.float32(input_scale), np.float32(k), np.float32(scale))
    return pointwise_loop(loops[1], [g, x], *coefs)


FUNCTIONS = {
    "relu": relu,
    "sigmoid": sigmoid,
    "tanh": tanh,
    "gelu": gelu,
    "silu": silu,
    "softplus": softplus,
}
METHODS = dict(FUNCTIONS)
INPLACE = ("relu", "sigmoid", "tanh")
