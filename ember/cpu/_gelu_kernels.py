"""The exact GELU as one loop: ``out = x Phi(x)`` and ``deriv = gelu'(x)`` per element.

The same formula as ember.ops.activation's NumPy blocks (torch's CPU erf: Abramowitz & Stegun
7.1.26 with the 1/2 of Phi folded into the polynomial), with exp2 inlined so that the loop
vectorises: libm's exp2 is a scalar call per element.
"""

from __future__ import annotations

import math

import numpy as np

from ember.cpu._bits import bits_f32, f32_bits
from ember.cpu.compile import JIT_OPTIONS, jit

_AS_K = np.float32(math.sqrt(2.0) / 0.3275911)
_AS_R = (1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592)
_AS_A = (0.5 * _AS_R[0]) ** 0.2
_AS_AK = np.float32(_AS_A * math.sqrt(2.0) / 0.3275911)
_C1, _C2, _C3, _C4 = (np.float32(0.5 * c / _AS_A ** (5 - i)) for i, c in enumerate(_AS_R) if i)
_HALF_LOG2E = np.float32(-0.5 / math.log(2.0))  # exp(-x^2/2) = exp2(x^2 * this)
_INV_SQRT_2PI = np.float32(1.0 / math.sqrt(2.0 * math.pi))
_EXP2_MIN = np.float32(-126.0)  # the smallest normal result; below it exp(-x^2/2) is 0
_HALF = np.float32(0.5)
_ZERO = np.float32(0.0)
_SIGN = np.int32(-(1 << 31))
# exp2(y) = 2^n 2^f, n = round(y), |f| <= 1/2: adding 1.5 * 2^23 rounds y to an integer held in
# the low mantissa bits; 2^f is its Taylor polynomial of degree 7 (error < 6e-9, below float32's
# rounding), 2^n the float32 with exponent field n + 127.
_ROUND = np.float32(1.5 * 2**23)
_ROUND_BITS = np.int32(0x4B400000)
_P = tuple(np.float32(math.log(2.0) ** k / math.factorial(k)) for k in range(8))
_P0, _P1, _P2, _P3, _P4, _P5, _P6, _P7 = _P


@jit(**JIT_OPTIONS)
def _phi(v):
    """(Phi(x), exp(-x^2 / 2)) of one float32 x."""
    t = _AS_AK / (abs(v) + _AS_K)  # a t, t = 1 / (1 + p |x| / sqrt 2)
    h = ((((t + _C1) * t + _C2) * t + _C3) * t + _C4) * t  # r(t) t / 2
    y = v * v * _HALF_LOG2E
    yc = y if y > _EXP2_MIN else _EXP2_MIN
    r = yc + _ROUND
    n = f32_bits(r) - _ROUND_BITS
    f = yc - (r - _ROUND)
    p = ((((((_P7 * f + _P6) * f + _P5) * f + _P4) * f + _P3) * f + _P2) * f + _P1) * f + _P0
    e = p * bits_f32((n + np.int32(127)) << np.int32(23))
    e = e if y >= _EXP2_MIN else _ZERO  # exp(-x^2/2)
    q = _HALF - h * e  # Phi(-|x|) = q, Phi(|x|) = 1 - q
    return bits_f32(f32_bits(q) ^ (f32_bits(v) & _SIGN)) + _HALF, e


@jit("void(float32[::1], float32[::1])", **JIT_OPTIONS)
def gelu_exact(x, out):
    """out = x Phi(x)."""
    for i in range(x.size):
        v = x[i]
        out[i] = v * _phi(v)[0]


@jit("void(float32[::1], float32[::1], float32[::1])", **JIT_OPTIONS)
def gelu_exact_grad(g, x, out):
    """out = g gelu'(x), gelu'(x) = x phi(x) + Phi(x), recomputed from x: cheaper than keeping
    gelu'(x) from the forward (a full array written, kept, and read back)."""
    for i in range(x.size):
        v = x[i]
        phi, e = _phi(v)
        out[i] = g[i] * (v * e * _INV_SQRT_2PI + phi)
