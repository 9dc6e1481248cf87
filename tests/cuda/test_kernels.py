"""Row-wise kernels against their composite twins (the NumPy ops, fp32), in float32, float16
and bfloat16, with sizes that are not multiples of the block or the 128-bit pack:
softmax / log_softmax, the fused cross-entropy, layer norm (+ residual), GELU (+ bias), the
embedding backward. Needs a GPU with CuPy (marker ``cuda``)."""

from __future__ import annotations

import numpy as np
import pytest

import ember
import ember.nn.functional as F
from ember.cuda import cross_entropy, embedding, gelu, layernorm, softmax
from ember.tensor.tensor import Tensor
from tests.cuda.kernel_helpers import DTYPES, close, cupy_or_skip, rounded, to_dev, to_host

pytestmark = pytest.mark.cuda

ROWS_COLS = [(1, 1), (3, 7), (5, 33), (2, 1000), (4, 1024), (3, 4099), (7, 8)]


def _rand(shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def _grad(fn, *arrays):
    """ember autograd on the CPU in float32: (output, grads of every input) for a random
    upstream gradient (seeded), plus that gradient."""
    ts = [Tensor(a.copy(), requires_grad=True) for a in arrays]
    out = fn(*ts)
    g = _rand(out.shape, seed=99)
    out.backward(Tensor(g))
    return out.data, [t.grad.data for t in ts], g


# ------------------------------------------------------------------------- softmax
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,cols", ROWS_COLS)
@pytest.mark.parametrize("log", [False, True])
def test_softmax_kernels_match_the_composite(dtype, rows, cols, log):
    cp = cupy_or_skip()
    x = rounded(_rand((rows, cols), seed=rows * cols, scale=4.0), dtype)
    op = ember.log_softmax if log else ember.softmax
    ref, (ref_dx,), g = _grad(lambda t: op(t, -1), x)
    y = softmax.softmax_forward(to_dev(cp, x, dtype), log=log)
    close(to_host(cp, y, dtype), ref, dtype)
    dx = softmax.softmax_backward(y, to_dev(cp, g, dtype), log=log)
    close(to_host(cp, dx, dtype), ref_dx, dtype, scale=4.0 if log else 1.0)


def test_softmax_kernel_handles_inf_and_nan_rows():
    cp = cupy_or_skip()
    x = _rand((4, 37))
    x[0, 3:9] = -np.inf  # masked entries: exactly 0
    x[1, :] = -np.inf  # nothing left: NaN, as the composite
    x[2, 5] = np.nan
    with np.errstate(invalid="ignore"):
        ref = ember.softmax(Tensor(x), -1).data
        ref_log = ember.log_softmax(Tensor(x), -1).data
    y = cp.asnumpy(softmax.softmax_forward(cp.asarray(x)))
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-7)
    assert np.all(y[0, 3:9] == 0) and np.isnan(y[1]).all() and np.isnan(y[2]).all()
    ylog = cp.asnumpy(softmax.softmax_forward(cp.asarray(x), log=True))
    np.testing.assert_allclose(ylog, ref_log, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------- cross-entropy
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,cols", [(1, 1), (3, 7), (16, 65), (8, 1024), (5, 50257)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_kernel_matches_the_composite(dtype, rows, cols, reduction, smoothing):
    cp = cupy_or_skip()
    x = rounded(_rand((rows, cols), seed=cols, scale=3.0), dtype)
    rng = np.random.default_rng(rows)
    y = rng.integers(0, cols, rows).astype(np.int64)
    y[::3] = -100  # ignored rows
    valid = (y != -100).astype(np.float32)

    def fn(t):
        return F.cross_entropy(t, Tensor(y), reduction=reduction, label_smoothing=smoothing)

    ref, (ref_dx,), g = _grad(fn, x)
    safe = np.where(y == -100, 0, y)
    loss, lse = cross_entropy.cross_entropy_forward(to_dev(cp, x, dtype), safe, valid, smoothing)
    loss = cp.asnumpy(loss)
    # what CrossEntropy does around the kernel: the reduction, and the mean's division
    # (a zero gradient when every row is ignored)
    denom = float(valid.sum()) if reduction == "mean" else 1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        got = loss if reduction == "none" else loss.sum() / np.float32(denom)
    close(np.asarray(got), ref, dtype, scale=2.0)
    dloss = g if reduction == "none" else (g.reshape(()) / denom if denom else g * 0)
    dx = cross_entropy.cross_entropy_backward(
        to_dev(cp, x, dtype), safe, lse, dloss, valid, smoothing
    )
    close(to_host(cp, dx, dtype), ref_dx, dtype)
    assert np.all(to_host(cp, dx, dtype)[y == -100] == 0)


def test_cross_entropy_kernel_keeps_no_probability_matrix():
    """The forward allocates only per-row fp32 vectors (what backward needs is x and lse)."""
    cp = cupy_or_skip()
    x = cp.asarray(_rand((64, 5000)))
    loss, lse = cross_entropy.cross_entropy_forward(x, np.zeros(64, np.int64))
    assert loss.shape == lse.shape == (64,) and lse.dtype == np.float32


# ------------------------------------------------------------------------ layer norm
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,cols", [(1, 1), (3, 7), (33, 65), (8, 768), (4, 1001), (2, 7000)])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_kernels_match_the_composite(dtype, rows, cols, affine):
    cp = cupy_or_skip()
    x = rounded(_rand((rows, cols), seed=cols, scale=2.0) + 0.5, dtype)
    w = rounded(_rand(cols, seed=1) + 1.0, dtype) if affine else None
    b = rounded(_rand(cols, seed=2), dtype) if affine else None
    arrays = (x, w, b) if affine else (x,)

    def fn(t, wt=None, bt=None):
        return F.layer_norm(t, (cols,), wt, bt, eps=1e-5)

    ref, grads, g = _grad(fn, *arrays)
    dev = [None if a is None else to_dev(cp, a, dtype) for a in (x, w, b)]
    y, mean, rstd = layernorm.layer_norm_forward(dev[0], dev[1], dev[2], 1e-5)
    close(to_host(cp, y, dtype), ref, dtype, scale=2.0)
    np.testing.assert_allclose(cp.asnumpy(mean), x.mean(axis=1), rtol=1e-5, atol=1e-5)
    dx, dw, db = layernorm.layer_norm_backward(to_dev(cp, g, dtype), dev[0], dev[1], mean, rstd)
    scale = 2.0 * max(1.0, np.sqrt(rows) / 4)  # dw, db sum over rows
    close(to_host(cp, dx, dtype), grads[0], dtype, scale=2.0)
    if affine:
        close(to_host(cp, dw, dtype), grads[1], dtype, scale=scale)
        close(to_host(cp, db, dtype), grads[2], dtype, scale=scale)
    else:
        assert dw is None
        close(to_host(cp, db, dtype), g.sum(axis=0), dtype, scale=scale)


@pytest.mark.parametrize("dtype", DTYPES)
def test_residual_layer_norm_matches_add_then_layer_norm(dtype):
    cp = cupy_or_skip()
    a, r = rounded(_rand((9, 257), 3), dtype), rounded(_rand((9, 257), 4), dtype)
    w, b = rounded(_rand(257, 5), dtype), rounded(_rand(257, 6), dtype)
    s, y, _, _ = layernorm.residual_layer_norm_forward(
        to_dev(cp, a, dtype), to_dev(cp, r, dtype), to_dev(cp, w, dtype), to_dev(cp, b, dtype), 1e-5
    )
    s_ref = rounded(a + r, dtype)
    np.testing.assert_array_equal(to_host(cp, s, dtype), s_ref)
    ref = F.layer_norm(Tensor(s_ref), (257,), Tensor(w), Tensor(b), eps=1e-5).data
    close(to_host(cp, y, dtype), ref, dtype, scale=2.0)


# ----------------------------------------------------------------------------- gelu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1,), (7,), (3, 5), (4, 768), (2, 3, 1001), (9, 4096)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_gelu_kernels_match_the_composite(dtype, shape, with_bias):
    cp = cupy_or_skip()
    x = rounded(_rand(shape, seed=len(shape), scale=3.0), dtype)
    bias = rounded(_rand(shape[-1:], seed=7), dtype) if with_bias else None
    if with_bias:
        ref, (ref_dx, ref_db), g = _grad(lambda t, bt: F.gelu(t + bt, approximate="tanh"), x, bias)
    else:
        ref, (ref_dx,), g = _grad(lambda t: F.gelu(t, approximate="tanh"), x)
    db_dev = None if bias is None else to_dev(cp, bias, dtype)
    y = gelu.gelu_forward(to_dev(cp, x, dtype), db_dev)
    close(to_host(cp, y, dtype), ref, dtype, scale=2.0)
    dx, db = gelu.gelu_backward(to_dev(cp, x, dtype), to_dev(cp, g, dtype), db_dev)
    close(to_host(cp, dx, dtype), ref_dx, dtype, scale=2.0)
    if with_bias:
        close(to_host(cp, db, dtype), ref_db, dtype, scale=4.0)
    else:
        assert db is None


def test_gelu_kernel_on_an_unaligned_view():
    """A view starting one element in: the kernel must take the scalar path."""
    cp = cupy_or_skip()
    base = cp.asarray(_rand(1031, seed=3))
    y = gelu.gelu_forward(base[1:])
    ref = F.gelu(Tensor(cp.asnumpy(base[1:])), approximate="tanh").data
    np.testing.assert_allclose(cp.asnumpy(y), ref, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------ embedding
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize(
    "num,dim,idx_shape", [(5, 1, (7,)), (50, 33, (4, 9)), (1000, 768, (8, 65))]
)
def test_embedding_backward_matches_the_composite(dtype, deterministic, num, dim, idx_shape):
    cp = cupy_or_skip()
    rng = np.random.default_rng(dim)
    idx = rng.integers(0, min(num, 7) if dim == 33 else num, idx_shape).astype(np.int64)
    g = rounded(_rand(idx_shape + (dim,), seed=num), dtype)
    ref = np.zeros((num, dim), np.float32)
    np.add.at(ref, idx.reshape(-1), g.reshape(-1, dim))
    out = embedding.embedding_backward(cp.asarray(idx), to_dev(cp, g, dtype), num, deterministic)
    assert out.shape == (num, dim)
    close(to_host(cp, out, dtype), ref, dtype, scale=4.0)
    if deterministic:
        again = embedding.embedding_backward(cp.asarray(idx), to_dev(cp, g, dtype), num, True)
        np.testing.assert_array_equal(cp.asnumpy(again), cp.asnumpy(out))
