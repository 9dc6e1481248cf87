"""The error function on raw arrays: NumPy has no erf and SciPy is not a dependency.

- float64: fdlibm's ``s_erf.c`` (Sun Microsystems, freely redistributable), vectorised by
  region. Error below 1 ulp: gradcheck differentiates it numerically, so it must be exact.
- float32: the clamped rational ``x * P(x^2) / Q(x^2)`` of Eigen / XLA (``generic_fast_erf``,
  9/12-degree), evaluated in float32 with in-place Horner steps: it is on the hot path of
  ``gelu`` (exact). The rational itself is within 0.85 ulp of erf; evaluated in float32
  without FMA the result is within 6 ulp (3.5e-7 absolute), about 0.9 ulp on average
  (tests/ops/test_unary.py measures it against ``math.erf`` on a dense grid).
- float16 / bfloat16: computed in float32 and rounded once, as torch does.
"""

from __future__ import annotations

import math

import numpy as np

from ember.tensor.backend import get_array_module

# ------------------------------------------------------------------ float32 (Eigen/XLA)
_ERF_P = (
    0.00022905065861350646,
    0.0034082910107109506,
    0.050955695062380861,
    0.18520832239976145,
    1.128379143519084,
)
_ERF_Q = (
    -1.1791602954361697e-7,
    0.000023547966471313185,
    0.0010179625278914885,
    0.014070470171167667,
    0.11098505178285362,
    0.49746925110067538,
    1.0,
)
_ERF_CLAMP = 3.832506856900711  # beyond it erf rounds to +-1 in float32


def _f32(coeffs, scale=1.0, s_scale=1.0):
    """float32 coefficients of scale * P(s_scale * s), highest power first."""
    n = len(coeffs) - 1
    return tuple(np.float32(scale * c * s_scale ** (n - i)) for i, c in enumerate(coeffs))


_ERF32 = (np.float32(_ERF_CLAMP), _f32(_ERF_P), _f32(_ERF_Q))
# Phi(x) = 1/2 + erf(x / sqrt 2) / 2 = 1/2 + x P'(x^2) / Q'(x^2): the constants fold into
# the coefficients, which saves gelu four passes over memory.
_PHI32 = (
    np.float32(_ERF_CLAMP * math.sqrt(2.0)),
    _f32(_ERF_P, 0.5 / math.sqrt(2.0), 0.5),
    _f32(_ERF_Q, 1.0, 0.5),
)


def _horner_inplace(z, coeffs):
    """coeffs[0] * z^n + ... + coeffs[n], one temporary, in-place steps."""
    r = z * coeffs[0]
    for c in coeffs[1:-1]:
        r += c
        r *= z
    r += coeffs[-1]
    return r


def _odd_rational(x, consts, limit):
    """``x P(s) / Q(s)`` with ``s = min(x^2, c^2)``, clipped to [-limit, limit], in float32.

    Clamping ``s`` instead of ``x`` saves a temporary: beyond the clamp ``x P/Q`` exceeds the
    saturated value and the final clip brings it back (inf included; NaN stays NaN). Few
    temporaries matter: each fresh 4 MB array can cost ~1 ms of page faults when glibc has
    trimmed the heap (measured on 1M elements).
    """
    clamp, pc, qc = consts
    xp = get_array_module(x)
    s = x * x
    xp.minimum(s, clamp * clamp, out=s)
    p = _horner_inplace(s, pc)
    q = _horner_inplace(s, qc)
    p *= x
    p /= q
    return xp.clip(p, -limit, limit, out=p)


def erf_float32(x):
    """erf of a float32 array (not 0-d)."""
    return _odd_rational(x, _ERF32, np.float32(1.0))


def phi_float32(x):
    """The standard normal CDF of a float32 array (not 0-d), for gelu."""
    p = _odd_rational(x, _PHI32, np.float32(0.5))
    p += np.float32(0.5)
    return p


# ------------------------------------------------------------------ float64 (fdlibm)
_ERX = 8.45062911510467529297e-01
_PP = (
    -2.37630166566501626084e-05,
    -5.77027029648944159157e-03,
    -2.84817495755985104766e-02,
    -3.25042107247001499370e-01,
    1.28379167095512558561e-01,
)
_QQ = (
    -3.96022827877536812320e-06,
    1.32494738004321644526e-04,
    5.08130628187576562776e-03,
    6.50222499887672944485e-02,
    3.97917223959155352819e-01,
    1.0,
)
_PA = (
    -2.16637559486879084300e-03,
    3.54783043256182359371e-02,
    -1.10894694282396677476e-01,
    3.18346619901161753674e-01,
    -3.72207876035701323847e-01,
    4.14856118683748331666e-01,
    -2.36211856075265944077e-03,
)
_QA = (
    1.19844998467991074170e-02,
    1.36370839120290507362e-02,
    1.26171219808761642112e-01,
    7.18286544141962662868e-02,
    5.40397917702171048937e-01,
    1.06420880400844228286e-01,
    1.0,
)
_RA = (
    -9.81432934416914548592e00,
    -8.12874355063065934246e01,
    -1.84605092906711035994e02,
    -1.62396669462573470355e02,
    -6.23753324503260060396e01,
    -1.05586262253232909814e01,
    -6.93858572707181764372e-01,
    -9.86494403484714822705e-03,
)
_SA = (
    -6.04244152148580987438e-02,
    6.57024977031928170135e00,
    1.08635005541779435134e02,
    4.29008140027567833386e02,
    6.45387271733267880336e02,
    4.34565877475229228821e02,
    1.37657754143519042600e02,
    1.96512716674392571292e01,
    1.0,
)
_RB = (
    -4.83519191608651397019e02,
    -1.02509513161107724954e03,
    -6.37566443368389627722e02,
    -1.60636384855821916062e02,
    -1.77579549177547519889e01,
    -7.99283237680523006574e-01,
    -9.86494292470009928597e-03,
)
_SB = (
    -2.24409524465858183362e01,
    4.74528541206955367215e02,
    2.55305040643316442583e03,
    3.19985821950859553908e03,
    1.53672958608443695994e03,
    3.25792512996573918826e02,
    3.03380607434824582924e01,
    1.0,
)


def _horner(z, coeffs):
    r = z * coeffs[0] + coeffs[1]
    for c in coeffs[2:]:
        r *= z
        r += c
    return r


def _erfc_tail(xp, ax):
    """erfc(|x|) for 1.25 <= |x| < 6: exp(-x^2 - 0.5625 + R/S) / |x| (fdlibm's split)."""
    s = 1.0 / (ax * ax)
    near = ax < 1 / 0.35
    r = xp.where(near, _horner(s, _RA), _horner(s, _RB))
    ss = xp.where(near, _horner(s, _SA), _horner(s, _SB))
    # z = ax with the low 32 bits cleared, so z*z is exact and exp(-x^2) keeps its accuracy
    z = (ax.view(np.uint64) & np.uint64(0xFFFFFFFF00000000)).view(np.float64)
    return xp.exp(-z * z - 0.5625) * xp.exp((z - ax) * (z + ax) + r / ss) / ax


def erf_float64(x):
    xp = get_array_module(x)
    ax = xp.abs(x)
    out = xp.copysign(xp.ones_like(x), x)  # |x| >= 6 (and +-inf)
    small = ax < 0.84375
    if small.any():
        xs = x[small]
        z = xs * xs
        out[small] = xs + xs * (_horner(z, _PP) / _horner(z, _QQ))
    mid = (ax >= 0.84375) & (ax < 1.25)
    if mid.any():
        s = ax[mid] - 1.0
        out[mid] = xp.copysign(_ERX + _horner(s, _PA) / _horner(s, _QA), x[mid])
    tail = (ax >= 1.25) & (ax < 6.0)
    if tail.any():
        out[tail] = xp.copysign(1.0 - _erfc_tail(xp, ax[tail]), x[tail])
    nan = xp.isnan(x)
    if nan.any():
        out[nan] = xp.nan
    return out


def erf_array(x):
    """erf for any floating array, in its own dtype."""
    if x.ndim == 0:  # NumPy turns 0-d results into scalars, which cannot be written into
        return erf_array(x.reshape(1)).reshape(())
    if x.dtype == np.float64:
        return erf_float64(x)
    if x.dtype == np.float32:
        return erf_float32(x)
    return erf_float32(x.astype(np.float32)).astype(x.dtype)
