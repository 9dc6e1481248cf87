"""Piecewise activations and losses as one loop each: leaky_relu, elu (selu, celu) and the
quadratic-then-linear loss of smooth_l1 / huber, forward and gradient.

Each loop does the float32 operations of its NumPy composite in the same order, so leaky_relu
and the quadratic-then-linear loss give NumPy's bits. elu's expm1 and exp are inlined as a
polynomial so that the loop vectorises (libm's expm1f is a scalar call: 18 ms on 2M elements
against NumPy's 0.8); elu's results are within 3 ulp of the NumPy path's (NumPy's own SIMD expm1
is up to 2 ulp from libm's). Backward loops recompute from the input: reading it costs what
reading a saved slope would, and the forward writes one array instead of two."""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ember.cpu._bits import bits_f32, f32_bits
from ember.cpu.compile import JIT_OPTIONS

_ZERO = np.float32(0.0)
_NEG_ZERO = np.float32(-0.0)
_ONE = np.float32(1.0)
_HALF = np.float32(0.5)


# ------------------------------------------------------------------ leaky_relu
@njit("void(float32[::1], float32, float32[::1])", **JIT_OPTIONS)
def leaky_relu(x, slope, out):
    """``x * (1 if x > 0 else slope)``: NumPy's ``x * select(x > 0, 1, slope)``."""
    for i in range(x.size):
        v = x[i]
        out[i] = v * (_ONE if v > _ZERO else slope)


@njit("void(float32[::1], float32[::1], float32, float32[::1])", **JIT_OPTIONS)
def leaky_relu_grad(g, x, slope, out):
    for i in range(x.size):
        out[i] = g[i] * (_ONE if x[i] > _ZERO else slope)


# ------------------------------------------------------------------------- elu
# expm1(t) and exp(t) for t <= 0 (or NaN): t = n ln2 + r with n = round(t / ln2), |r| <= ln2 / 2
# (Cody-Waite: n ln2_hi is exact for |n| < 2^8); expm1(r) = r (1 + r q(r)), q the Taylor series
# of (e^r - 1 - r) / r^2 to r^7 (truncation < 2e-9 relative); then
# expm1(t) = 2^n expm1(r) + (2^n - 1) (2^n - 1 is exact for n >= -24) and exp(t) = 2^n (1 +
# expm1(r)). Below -30 expm1 is -1 in float32; exp's 2^n is built as 2^(n/2) 2^(n - n/2), so
# subnormal results round as they should and n down to -150 gives 0.
_INV_LN2 = np.float32(1.0 / math.log(2.0))
_LN2_HI = np.float32(0.693145751953125)  # 16 significant bits
_LN2_LO = np.float32(math.log(2.0) - 0.693145751953125)
_ROUND = np.float32(1.5 * 2**23)  # adding it rounds to an integer held in the low bits
_ROUND_BITS = np.int32(0x4B400000)
_Q = tuple(np.float32(1.0 / math.factorial(k + 2)) for k in range(8))
_Q0, _Q1, _Q2, _Q3, _Q4, _Q5, _Q6, _Q7 = _Q
_EXPM1_MIN = np.float32(-30.0)
_EXP_MIN = np.float32(-104.0)  # e^-104 < half the smallest subnormal
_BIAS = np.int32(127)
_MANT = np.int32(23)


@njit(inline="always", **JIT_OPTIONS)
def _reduce(t):
    """(n, expm1(r)) with t = n ln2 + r, for t >= -104 (or NaN)."""
    k = t * _INV_LN2 + _ROUND
    n = f32_bits(k) - _ROUND_BITS
    nf = k - _ROUND
    r = (t - nf * _LN2_HI) - nf * _LN2_LO
    q = ((((((_Q7 * r + _Q6) * r + _Q5) * r + _Q4) * r + _Q3) * r + _Q2) * r + _Q1) * r + _Q0
    return n, r * (r * q + _ONE)  # r (1 + r q): expm1(-0) = -0


@njit(inline="always", **JIT_OPTIONS)
def _expm1_neg(t):
    tc = _EXPM1_MIN if t < _EXPM1_MIN else t  # NaN stays NaN
    n, em = _reduce(tc)
    s = bits_f32((n + _BIAS) << _MANT)  # 2^n, n in [-44, 0]
    e = s * em + (s - _ONE)
    return em if n == np.int32(0) else e  # n = 0: em itself keeps expm1(-0) = -0


@njit(inline="always", **JIT_OPTIONS)
def _exp_neg(t):
    tc = _EXP_MIN if t < _EXP_MIN else t
    n, em = _reduce(tc)
    h = n >> np.int32(1)
    s1 = bits_f32((h + _BIAS) << _MANT)
    s2 = bits_f32((n - h + _BIAS) << _MANT)
    return ((em + _ONE) * s1) * s2


@njit("void(float32[::1], float32, float32, float32, float32[::1])", **JIT_OPTIONS)
def elu(x, input_scale, neg_coef, scale, out):
    """``expm1(min(x, 0) input_scale) neg_coef + max(-0, x) scale`` (NumPy's order; the two
    terms are 0 where the other applies, signed zeros included) for ``input_scale > 0``."""
    for i in range(x.size):
        v = x[i]
        t = (_ZERO if v > _ZERO else v) * input_scale  # min(0, x): x's own zero and NaN
        p = _NEG_ZERO if v < _ZERO else v  # max(-0, x)
        out[i] = _expm1_neg(t) * neg_coef + p * scale


@njit("void(float32[::1], float32[::1], float32, float32, float32, float32[::1])", **JIT_OPTIONS)
def elu_grad(g, x, input_scale, neg_coef, scale, out):
    """``g * (scale if x > 0 else exp(min(x, 0) input_scale) neg_coef)`` (torch's
    elu_backward on the input; NaN at NaN)."""
    for i in range(x.size):
        v = x[i]
        t = (_ZERO if v > _ZERO else v) * input_scale
        w = _exp_neg(t) * neg_coef
        out[i] = g[i] * (scale if v > _ZERO else w)


# ------------------------------------------------------- smooth_l1 / huber
@njit(inline="always", **JIT_OPTIONS)
def _quadratic_then_linear(d, cut, k, slope):
    ad = abs(d)
    m = cut if ad > cut else ad  # minimum(|d|, cut), NaN kept
    mk = ad * k
    mk = slope if mk > slope else mk  # minimum(k |d|, slope)
    return (ad - m * _HALF) * mk


@njit("void(float32[::1], float32, float32, float32, float32[::1])", **JIT_OPTIONS)
def quadratic_then_linear(d, cut, k, slope, out):
    """``(|d| - min(|d|, cut) / 2) min(k |d|, slope)``, NumPy's operations in order."""
    for i in range(d.size):
        out[i] = _quadratic_then_linear(d[i], cut, k, slope)


@njit(inline="always", **JIT_OPTIONS)
def _clip(w, slope):
    w = -slope if w < -slope else w  # NaN kept, as np.clip
    return slope if w > slope else w


@njit("void(float32[::1], float32[::1], float32, float32, float32[::1])", **JIT_OPTIONS)
def quadratic_then_linear_grad(g, d, k, slope, out):
    """``g * clip(d k, -slope, slope)``."""
    for i in range(d.size):
        out[i] = g[i] * _clip(d[i] * k, slope)


@njit("void(float32[::1], float32, float32, float32, float32[::1])", **JIT_OPTIONS)
def quadratic_then_linear_grad_scalar(d, g, k, slope, out):
    """The same for one gradient broadcast to every element (a mean's or a sum's)."""
    for i in range(d.size):
        out[i] = g * _clip(d[i] * k, slope)
