"""conv2d's im2col / col2im, 2-D max and average pooling and the causal scale+mask+softmax
against their composites (ember.nn.functional._im2col / _pooling on NumPy, and
ember.cuda.attention's composite), in float32, float16 and bfloat16, with odd sizes, padding,
stride, dilation and ceil-mode windows. Needs a GPU with CuPy (marker ``cuda``)."""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest

import ember.nn.functional as F
from ember.cuda import attention, conv, flash_attention, pooling
from ember.nn.functional import _im2col
from ember.tensor.tensor import Tensor
from tests.cuda.kernel_helpers import DTYPES, close, cupy_or_skip, rounded, to_dev, to_host

# the module itself (ember.nn.functional binds the name ``_pooling`` to the public pooling)
_pooling = importlib.import_module("ember.nn.functional._pooling")
pytestmark = pytest.mark.cuda


def _rand(shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


# ----------------------------------------------------------------------------- conv
CONV = [  # (N, C, H, W), kernel, stride, pads ((top, bottom), (left, right)), dilation
    ((2, 3, 7, 9), (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1)),
    ((1, 1, 5, 5), (1, 1), (1, 1), ((0, 0), (0, 0)), (1, 1)),
    ((3, 4, 11, 8), (3, 2), (2, 3), ((1, 2), (0, 1)), (1, 1)),
    ((2, 5, 13, 13), (3, 3), (2, 2), ((2, 2), (2, 2)), (2, 3)),
    ((4, 2, 6, 10), (5, 4), (3, 1), ((0, 0), (3, 3)), (1, 1)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", range(len(CONV)))
def test_im2col_and_col2im_match_the_composite(dtype, case):
    cp = cupy_or_skip()
    shape, kernel, stride, pads, dil = CONV[case]
    geo = _im2col.Geometry(kernel, stride, pads, dil, 1)
    out_sp = geo.out_spatial(shape[2:])
    x = rounded(_rand(shape, case), dtype)
    ref = _im2col.im2col(x, geo, out_sp).copy()
    lo = tuple(p[0] for p in pads)
    cols = conv.im2col2d(to_dev(cp, x, dtype), kernel, stride, lo, dil, out_sp)
    np.testing.assert_array_equal(to_host(cp, cols, dtype), ref)  # a pure copy: exact
    gcols = rounded(_rand(ref.shape, 10 + case), dtype)
    n, c = shape[:2]
    padded = tuple(s + a + b for s, (a, b) in zip(shape[2:], pads))
    full = _im2col.col2im(
        gcols.reshape((c,) + kernel + (n,) + out_sp), geo, (c, n) + padded, out_sp
    )
    crop = full[:, :, lo[0] : lo[0] + shape[2], lo[1] : lo[1] + shape[3]].transpose(1, 0, 2, 3)
    gx = conv.col2im2d(to_dev(cp, gcols, dtype), shape, kernel, stride, lo, dil, out_sp)
    close(to_host(cp, gx, dtype), crop, dtype, scale=2.0)


# -------------------------------------------------------------------------- pooling
def _out(n, k, s, p, d, ceil):
    o = (n + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil else 0)) // s + 1
    if ceil and (o - 1) * s >= n + p:
        o -= 1
    return o


POOL = [  # in (..., H, W), kernel, stride, pad, dilation, ceil_mode
    ((2, 3, 8, 8), (2, 2), (2, 2), (0, 0), (1, 1), False),
    ((1, 2, 7, 9), (3, 3), (2, 2), (1, 1), (1, 1), True),
    ((3, 5, 5), (3, 2), (1, 2), (1, 0), (2, 1), False),
    ((2, 1, 13, 11), (4, 3), (3, 2), (2, 1), (1, 2), True),
    ((1, 1, 1, 1), (1, 1), (1, 1), (0, 0), (1, 1), False),
]


def _pool_geo(case):
    shape, k, s, p, d, ceil = POOL[case]
    in_sp = shape[-2:]
    out_sp = tuple(_out(n, *a, ceil) for n, a in zip(in_sp, zip(k, s, p, d)))
    return shape, _pooling.PoolGeometry(k, s, p, d, in_sp, out_sp)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", range(len(POOL)))
def test_max_pool_matches_the_composite(dtype, case):
    cp = cupy_or_skip()
    shape, geo = _pool_geo(case)
    x = rounded(_rand(shape, case), dtype)
    x.reshape(-1)[::7] = x.reshape(-1)[0]  # ties: the first offset wins
    ref, ref_idx = _pooling.max_pool_forward(x, geo)
    y, idx = pooling.max_pool2d_forward(
        to_dev(cp, x, dtype), geo.kernel, geo.stride, geo.pad, geo.dilation, geo.out_sp
    )
    np.testing.assert_array_equal(to_host(cp, y, dtype), ref)
    np.testing.assert_array_equal(cp.asnumpy(idx), ref_idx.astype(np.int32))
    g = rounded(_rand(ref.shape, 20 + case), dtype)
    ref_gx = _pooling.max_pool_scatter(g, ref_idx, geo)
    gx = pooling.max_pool2d_backward(
        to_dev(cp, g, dtype), idx, geo.in_sp, geo.kernel, geo.stride, geo.pad, geo.dilation
    )
    close(to_host(cp, gx, dtype), ref_gx, dtype, scale=2.0)


def test_max_pool_nan_wins_like_the_composite():
    cp = cupy_or_skip()
    shape, geo = _pool_geo(1)
    x = _rand(shape, 5)
    x[0, 0, 1, 1] = np.nan
    x[0, 1, 3, :] = np.nan
    ref, ref_idx = _pooling.max_pool_forward(x, geo)
    y, idx = pooling.max_pool2d_forward(
        cp.asarray(x), geo.kernel, geo.stride, geo.pad, geo.dilation, geo.out_sp
    )
    np.testing.assert_array_equal(cp.asnumpy(y), ref)  # NaN == NaN for assert_array_equal
    np.testing.assert_array_equal(cp.asnumpy(idx), ref_idx.astype(np.int32))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [0, 1, 3, 4])
@pytest.mark.parametrize("mode", ["include", "exclude", "override"])
def test_avg_pool_matches_the_composite(dtype, case, mode):
    cp = cupy_or_skip()
    shape, k, s, p, _, ceil = POOL[case]
    in_sp = shape[-2:]
    out_sp = tuple(_out(n, *a, 1, ceil) for n, a in zip(in_sp, zip(k, s, p)))
    geo = _pooling.PoolGeometry(k, s, p, (1, 1), in_sp, out_sp)
    include, override = mode == "include", (3 if mode == "override" else None)
    divisor = _pooling.avg_divisor(geo, include, override)
    x = rounded(_rand(shape, case), dtype)
    ref = _pooling.avg_pool_forward(x, geo, divisor)
    y = pooling.avg_pool2d_forward(to_dev(cp, x, dtype), k, s, p, out_sp, include, override)
    close(to_host(cp, y, dtype), ref, dtype, scale=2.0)
    g = rounded(_rand(ref.shape, 30 + case), dtype)
    ref_gx = _pooling.avg_pool_adjoint(g, geo, divisor)
    gx = pooling.avg_pool2d_backward(to_dev(cp, g, dtype), in_sp, k, s, p, include, override)
    close(to_host(cp, gx, dtype), ref_gx, dtype, scale=2.0)


# ------------------------------------------------------------------------ attention
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (5, 5), (3, 7, 7), (2, 4, 33, 33), (2, 65, 129)])
def test_causal_softmax_matches_the_composite(dtype, shape):
    cp = cupy_or_skip()
    s = rounded(_rand(shape, len(shape), scale=3.0), dtype)
    scale = 1 / math.sqrt(shape[-1])
    ref = attention.causal_softmax_composite(s, scale)
    y = attention.causal_softmax_forward(to_dev(cp, s, dtype), scale)
    got = to_host(cp, y, dtype)
    close(got, ref, dtype)
    tgt, src = shape[-2:]
    assert np.all(got[..., np.triu(np.ones((tgt, src), bool), 1)] == 0)
    g = rounded(_rand(shape, 9), dtype)
    ref_dx = attention.causal_softmax_backward_composite(got, g, scale)
    dx = attention.causal_softmax_backward(y, to_dev(cp, g, dtype), scale)
    close(to_host(cp, dx, dtype), ref_dx, dtype)


@pytest.mark.parametrize("b,h,t,d", [(1, 1, 1, 8), (2, 3, 17, 16), (2, 6, 256, 64)])
def test_causal_attention_matches_sdpa(b, h, t, d):
    cp = cupy_or_skip()
    q, k, v = (_rand((b, h, t, d), i) for i in range(3))
    ts = [Tensor(a.copy(), requires_grad=True) for a in (q, k, v)]
    ref = F.scaled_dot_product_attention(*ts, is_causal=True)
    g = _rand(ref.shape, 5)
    ref.backward(Tensor(g))
    scale = 1 / math.sqrt(d)
    out, probs = attention.causal_attention(cp.asarray(q), cp.asarray(k), cp.asarray(v), scale)
    np.testing.assert_allclose(cp.asnumpy(out), ref.data, rtol=1e-4, atol=1e-5)
    grads = attention.causal_attention_backward(
        cp.asarray(g), cp.asarray(q), cp.asarray(k), cp.asarray(v), probs, scale
    )
    for got, t_ in zip(grads, ts):
        np.testing.assert_allclose(cp.asnumpy(got), t_.grad.data, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "b,h,t,s,d",
    [(1, 1, 1, 1, 1), (2, 3, 17, 17, 16), (1, 2, 33, 70, 100), (2, 1, 70, 33, 128),
     (2, 6, 256, 256, 64), (1, 1, 65, 65, 5)],
)  # fmt: skip
def test_flash_attention_matches_sdpa(dtype, b, h, t, s, d):
    """The flash kernels against the CPU attention (fp32 on the rounded inputs)."""
    cp = cupy_or_skip()
    q, k, v = (rounded(_rand((b, h, n, d), i), dtype) for i, n in enumerate((t, s, s)))
    g = rounded(_rand((b, h, t, d), 7), dtype)
    ts = [Tensor(a.copy(), requires_grad=True) for a in (q, k, v)]
    ref = F.scaled_dot_product_attention(*ts, is_causal=True)
    ref.backward(Tensor(g))
    scale = 1 / math.sqrt(d)
    dev = [to_dev(cp, a, dtype) for a in (q, k, v)]
    out, lse = flash_attention.flash_attention_forward(*dev, scale)
    close(to_host(cp, out, dtype), ref.data, dtype, scale=10.0)
    grads = flash_attention.flash_attention_backward(*dev, out, lse, to_dev(cp, g, dtype), scale)
    for got, t_ in zip(grads, ts):
        close(to_host(cp, got, dtype), t_.grad.data, dtype, scale=20.0)
