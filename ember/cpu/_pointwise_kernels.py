"""Piecewise activations and losses as one loop each: leaky_relu, elu (selu, celu) and the
quadratic-then-linear loss of smooth_l1 / huber, forward and gradient.

Each loop does the float32 operations of its NumPy composite in the same order, so leaky_relu
and the quadratic-then-linear loss give NumPy's bits. elu's expm1 and exp are inlined as a
polynomial so that the loop vectorises (libm's expm1f is a scalar call: 18 ms on 2M elements
against NumPy's 0.8); elu's results are within 3 ulp of the NumPy path's (NumPy's own SIMD expm1
is up to 2 ulp from libm's). Backward loops recompute from the input: reading it costs what
reading a saved slope would, and the forward writes one array instead of two."""

from __future__ import annotations

import numpy as np

from ember.cpu._exp import exp_neg, expm1_neg
from ember.cpu.compile import JIT_OPTIONS, jit

_ZERO = np.float32(0.0)
_NEG_ZERO = np.float32(-0.0)
_ONE = np.float32(1.0)
_HALF = np.float32(0.5)


# ------------------------------------------------------------------ leaky_relu
@jit("void(float32[::1], float32, float32[::1])", **JIT_OPTIONS)
def leaky_relu(x, slope, out):
    """``x * (1 if x > 0 else slope)``: NumPy's ``x * select(x > 0, 1, slope)``."""
    for i in range(x.size):
        v = x[i]
        out[i] = v * (_ONE if v > _ZERO else slope)


@jit("void(float32[::1], float32[::1], float32, float32[::1])", **JIT_OPTIONS)
def leaky_relu_grad(g, x, slope, out):
    for i in range(x.size):
        out[i] = g[i] * (_ONE if x[i] > _ZERO else slope)


# ------------------------------------------------------------------------- elu
@jit("void(float32[::1], float32, float32, float32, float32[::1])", **JIT_OPTIONS)
def elu(x, input_scale, neg_coef, scale, out):
    """``expm1(min(x, 0) input_scale) neg_coef + max(-0, x) scale`` (NumPy's order; the two
    terms are 0 where the other applies, signed zeros included) for ``input_scale > 0``."""
    for i in range(x.size):
        v = x[i]
        t = (_ZERO if v > _ZERO else v) * input_scale  # min(0, x): x's own zero and NaN
        p = _NEG_ZERO if v < _ZERO else v  # max(-0, x)
        out[i] = expm1_neg(t) * neg_coef + p * scale


@jit("void(float32[::1], float32[::1], float32, float32, float32, float32[::1])", **JIT_OPTIONS)
def elu_grad(g, x, input_scale, neg_coef, scale, out):
    """``g * (scale if x > 0 else exp(min(x, 0) input_scale) neg_coef)`` (torch's
    elu_backward on the input; NaN at NaN)."""
    for i in range(x.size):
        v = x[i]
        t = (_ZERO if v > _ZERO else v) * input_scale
        w = exp_neg(t) * neg_coef
        out[i] = g[i] * (scale if v > _ZERO else w)


# ------------------------------------------------------- smooth_l1 / huber
@jit(inline="always", **JIT_OPTIONS)
def _quadratic_then_linear(d, cut, k, slope):
    ad = abs(d)
    m = cut if ad > cut else ad  # minimum(|d|, cut), NaN kept
    mk = ad * k
    mk = slope if mk > slope else mk  # minimum(k |d|, slope)
    return (ad - m * _HALF) * mk


@jit("void(float32[::1], float32, float32, float32, float32[::1])", **JIT_OPTIONS)
def quadratic_then_linear(d, cut, k, slope, out):
    """``(|d| - min(|d|, cut) / 2) min(k |d|, slope)``, NumPy's operations in order."""
    for i in range(d.size):
        out[i] = _quadratic_then_linear(d[i], cut, k, slope)


@jit(inline="always", **JIT_OPTIONS)
def _clip(w, slope):
    w = -slope if w < -slope else w  # NaN kept, as np.clip
    return slope if w > slope else w


@jit("void(float32[::1], float32[::1], float32, float32, float32[::1])", **JIT_OPTIONS)
def quadratic_then_linear_grad(g, d, k, slope, out):
    """``g * clip(d k, -slope, slope)``."""
    for i in range(d.size):
        out[i] = g[i] * _clip(d[i] * k, slope)


@jit("void(float32[::1], float32, float32, float32, float32[::1])", **JIT_OPTIONS)
def quadratic_then_linear_grad_scalar(d, g, k, slope, out):
    """The same for one gradient broadcast to every element (a mean's or a sum's)."""
    for i in range(d.size):
        out[i] = g * _clip(d[i] * k, slope)
