"""One Adam/AdamW step as one loop: each element of p, m, v (and AMSGrad's max) is read and
written once, where ember.optim.adam's NumPy kernel makes a dozen passes.

Bitwise the NumPy kernel (which is within an ulp of torch's): the same float32 operations in the
same order, every scalar the float32 NumPy rounds it to (NEP 50), and no fastmath, so LLVM
neither reorders nor fuses a multiply and an add. The launcher passes the scalars already
rounded (np.float32): a Python float here would be float64 and promote the arithmetic."""

from __future__ import annotations

import math

from ember.cpu.compile import JIT_OPTIONS, jit

_F32 = "float32[::1]"


@jit(**JIT_OPTIONS)
def _moments(pi, gi, mi, vi, keep, wd, weight, beta2, one_minus_beta2, decay, l2, maximize, low):
    """(p after decay, m, v) of one element: the NumPy kernel's ops up to the square root."""
    if decay:
        pi = pi * keep
    if maximize:  # -g + wd p is the NumPy path's wd p - g: a - b is a + (-b) in IEEE
        gi = -gi
    if l2:
        gi = pi * wd + gi
    d = gi - mi
    mi = mi + d * weight if low else gi - d * weight
    return pi, mi, vi * beta2 + gi * one_minus_beta2 * gi


@jit(
    f"void({_F32}, {_F32}, {_F32}, {_F32}, float32, float32, float32, float32, float32, "
    "float32, float32, float32, boolean, boolean, boolean, boolean)",
    **JIT_OPTIONS,
)
def adam_step(
    p, g, m, v, keep, wd, weight, beta2, one_minus_beta2, bc2_sqrt, eps, neg_step_size,
    decay, l2, maximize, lerp_low,
):  # fmt: skip
    """Adam without AMSGrad. ``decay``: ``p *= keep`` first (AdamW); ``l2``: ``g + wd p``
    (Adam); ``lerp_low``: torch's lerp formula for weights < 0.5, ``weight`` being 1 - beta1
    then, else beta1 rounded from 1 - (1 - beta1) as ``lerp_`` does."""
    for i in range(p.size):
        pi, mi, vi = _moments(
            p[i], g[i], m[i], v[i], keep, wd, weight, beta2, one_minus_beta2,
            decay, l2, maximize, lerp_low,
        )  # fmt: skip
        m[i] = mi
        v[i] = vi
        p[i] = pi + mi * neg_step_size / (math.sqrt(vi) / bc2_sqrt + eps)


@jit(
    f"void({_F32}, {_F32}, {_F32}, {_F32}, {_F32}, float32, float32, float32, float32, "
    "float32, float32, float32, float32, boolean, boolean, boolean, boolean)",
    **JIT_OPTIONS,
)
def adam_step_amsgrad(
    p, g, m, v, vmax, keep, wd, weight, beta2, one_minus_beta2, bc2_sqrt, eps, neg_step_size,
    decay, l2, maximize, lerp_low,
):  # fmt: skip
    """``adam_step`` with AMSGrad: the denominator uses ``vmax = maximum(vmax, v)``."""
    for i in range(p.size):
        pi, mi, vi = _moments(
            p[i], g[i], m[i], v[i], keep, wd, weight, beta2, one_minus_beta2,
            decay, l2, maximize, lerp_low,
        )  # fmt: skip
        m[i] = mi
        v[i] = vi
        hi = vmax[i]
        hi = hi if hi >= vi or hi != hi else vi  # np.maximum: a NaN on either side wins
        vmax[i] = hi
        p[i] = pi + mi * neg_step_size / (math.sqrt(hi) / bc2_sqrt + eps)
