"""The wired ops on CuPy tensors: each takes its kernel (counted through the launcher) and
agrees with the same op on the composite path (``EMBER_CUDA_KERNELS=0``), forward and every
gradient; cases a kernel does not handle fall back to the composite. Needs a GPU with CuPy
(marker ``cuda``)."""

from __future__ import annotations

import numpy as np
import pytest

import ember
import ember.nn.functional as F
from ember.cuda import conv, cross_entropy, embedding, gelu, layernorm, pooling, softmax
from ember.tensor.tensor import Tensor
from tests.cuda.kernel_helpers import cupy_or_skip

pytestmark = pytest.mark.cuda


def _rand(shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def _counting(monkeypatch, module, name: str) -> list:
    calls = []
    orig = getattr(module, name)

    def wrapper(*args, **kwargs):
        calls.append(name)
        return orig(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


def _both(monkeypatch, fn, arrays, grad_of=None):
    """(kernel run, composite run): each the output and the input gradients, on CuPy."""
    cp = cupy_or_skip()
    runs = []
    for flag in ("1", "0"):
        monkeypatch.setenv("EMBER_CUDA_KERNELS", flag)
        ts = [Tensor(cp.asarray(a), requires_grad=a.dtype.kind == "f") for a in arrays]
        out = fn(*ts)
        g = _rand(out.shape, 99)
        out.backward(Tensor(cp.asarray(g)))
        grads = [cp.asnumpy(t.grad.data) for t in ts if t.requires_grad]
        runs.append((cp.asnumpy(out.data), grads))
    return runs


def _assert_same(runs, rtol=1e-5, atol=1e-6):
    (out_k, grads_k), (out_c, grads_c) = runs
    np.testing.assert_allclose(out_k, out_c, rtol=rtol, atol=atol)
    assert len(grads_k) == len(grads_c)
    for a, b in zip(grads_k, grads_c):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


@pytest.mark.parametrize("log", [False, True])
def test_softmax_ops(monkeypatch, log):
    calls = _counting(monkeypatch, softmax, "softmax_forward")
    back = _counting(monkeypatch, softmax, "softmax_backward")
    op = ember.log_softmax if log else ember.softmax
    _assert_same(_both(monkeypatch, lambda t: op(t, -1), [_rand((6, 5, 37), 1, 3)]))
    assert len(calls) == 1 and len(back) == 1  # only the kernel run used them
    calls.clear()
    _assert_same(_both(monkeypatch, lambda t: op(t, 0), [_rand((6, 5), 2)]))  # not the last dim
    assert not calls


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_cross_entropy_op(monkeypatch, reduction, smoothing):
    calls = _counting(monkeypatch, cross_entropy, "cross_entropy_forward")
    y = np.random.default_rng(0).integers(0, 97, 33)
    y[::4] = 5

    def fn(x):
        t = Tensor(ember.tensor.backend.cupy_module().asarray(y))
        return F.cross_entropy(x, t, ignore_index=5, reduction=reduction, label_smoothing=smoothing)

    _assert_same(_both(monkeypatch, fn, [_rand((33, 97), 3, 2)]))
    assert len(calls) == 1


def test_cross_entropy_with_class_weights_falls_back(monkeypatch):
    calls = _counting(monkeypatch, cross_entropy, "cross_entropy_forward")
    cp = cupy_or_skip()
    w = cp.asarray(np.linspace(0.5, 2, 11, dtype=np.float32))
    y = cp.asarray(np.arange(9) % 11)
    _assert_same(
        _both(monkeypatch, lambda x: F.cross_entropy(x, Tensor(y), Tensor(w)), [_rand((9, 11))])
    )
    assert not calls


@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_op(monkeypatch, affine):
    calls = _counting(monkeypatch, layernorm, "layer_norm_backward")
    arrays = [_rand((4, 6, 3, 5), 1)]
    if affine:
        arrays += [_rand((3, 5), 2) + 1, _rand((3, 5), 3)]

    def fn(x, w=None, b=None):
        return F.layer_norm(x, (3, 5), w, b, eps=1e-5)

    _assert_same(_both(monkeypatch, fn, arrays), rtol=1e-4, atol=1e-5)
    assert len(calls) == 1


def test_gelu_op(monkeypatch):
    calls = _counting(monkeypatch, gelu, "gelu_backward")
    _assert_same(
        _both(monkeypatch, lambda x: F.gelu(x, approximate="tanh"), [_rand((5, 77), 4, 3)])
    )
    assert len(calls) == 1
    calls.clear()
    _assert_same(_both(monkeypatch, lambda x: F.gelu(x), [_rand((5, 7), 5)]))  # exact: composite
    assert not calls


@pytest.mark.parametrize("deterministic", [False, True])
def test_embedding_op(monkeypatch, deterministic):
    calls = _counting(monkeypatch, embedding, "embedding_backward")
    monkeypatch.setattr(embedding, "_deterministic", deterministic)
    idx = np.random.default_rng(1).integers(0, 10, (4, 9)).astype(np.int64)
    cp = cupy_or_skip()

    def fn(w):
        return F.embedding(Tensor(cp.asarray(idx)), w, padding_idx=3)

    _assert_same(_both(monkeypatch, fn, [_rand((10, 17), 6)]))
    assert len(calls) == 1


@pytest.mark.parametrize("stride,padding,dilation", [(1, 1, 1), (2, 1, 1), (2, 2, 2), (3, 0, 1)])
def test_conv2d_op(monkeypatch, stride, padding, dilation):
    calls = _counting(monkeypatch, conv, "im2col2d")

    def fn(x, w, b):
        return F.conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation)

    arrays = [_rand((2, 3, 11, 9), 1), _rand((4, 3, 3, 3), 2), _rand(4, 3)]
    _assert_same(_both(monkeypatch, fn, arrays), rtol=1e-4, atol=1e-4)
    assert calls


@pytest.mark.parametrize("ceil_mode", [False, True])
def test_pooling_ops(monkeypatch, ceil_mode):
    fwd = _counting(monkeypatch, pooling, "max_pool2d_forward")
    avg = _counting(monkeypatch, pooling, "avg_pool2d_forward")
    x = [_rand((2, 3, 9, 11), 7)]
    _assert_same(_both(monkeypatch, lambda t: F.max_pool2d(t, 3, 2, 1, ceil_mode=ceil_mode), x))
    _assert_same(_both(monkeypatch, lambda t: F.avg_pool2d(t, 2, 2, ceil_mode=ceil_mode), x))
    assert len(fwd) == 1
    # ceil_mode clips the last windows: a per-window divisor, which stays on the composite
    assert len(avg) == (0 if ceil_mode else 1)


@pytest.mark.parametrize("flash", ["0", "1"])
@pytest.mark.parametrize("t,d", [(17, 16), (256, 64)])
def test_causal_attention_op(monkeypatch, flash, t, d):
    from ember.cuda import attention, flash_attention

    monkeypatch.setenv("EMBER_CUDA_FLASH", flash)
    gemm = _counting(monkeypatch, attention, "causal_attention")
    fl = _counting(monkeypatch, flash_attention, "flash_attention_forward")

    def fn(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    arrays = [_rand((2, 3, t, d), i) for i in range(3)]
    _assert_same(_both(monkeypatch, fn, arrays), rtol=1e-4, atol=1e-5)
    assert (len(fl), len(gemm)) == ((1, 0) if flash == "1" else (0, 1))
