"""The NumPy depthwise conv kernels (ember/nn/functional/_depthwise.py: groups = channels,
stride 1, no im2col) against torch and against the im2col path they replace: forward, input
and weight gradients, dilation, asymmetric 'same' padding, conv_transpose2d, float64
gradcheck / gradgradcheck."""

from __future__ import annotations

import numpy as np
import pytest

import ember
import ember.nn.functional as F
from ember.nn.functional import _depthwise
from tests.oracle import check_op, cpu_only, gradcheck_op, rand, torch

TF = torch.nn.functional
pytestmark = [
    pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning"),
    cpu_only("a NumPy path"),
]

CASES = [  # (N, C, H, W), kernel, padding, dilation
    ((5, 6, 9, 7), 3, 1, 1),
    ((3, 4, 8, 11), 5, 2, 1),
    ((3, 4, 8, 11), (3, 5), (0, 2), 1),
    ((2, 3, 10, 9), 3, 2, 2),
    ((2, 3, 9, 10), 4, "same", 1),  # an even kernel: 'same' pads 1 before, 2 after
    ((1, 2, 6, 5), (2, 3), "same", (2, 1)),
    ((4, 8, 7, 7), 3, 0, 1),
]


def _fn(kernel, padding, dilation, lib=F):
    def conv(x, w, b):
        return lib.conv2d(x, w, b, padding=padding, dilation=dilation, groups=x.shape[1])

    return conv


def _inputs(shape, kernel, seed):
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    c = shape[1]
    return [rand(*shape, seed=seed), rand(c, 1, kh, kw, seed=seed + 1), rand(c, seed=seed + 2)]


@pytest.mark.parametrize("shape, kernel, padding, dilation", CASES)
def test_depthwise_matches_torch_and_the_im2col_path(shape, kernel, padding, dilation, monkeypatch):
    calls = []
    real = _depthwise.forward, _depthwise.grad_input, _depthwise.grad_weight
    for name, fn in zip(("forward", "grad_input", "grad_weight"), real):
        monkeypatch.setattr(
            _depthwise, name, lambda *a, fn=fn, name=name: calls.append(name) or fn(*a)
        )
    inputs = _inputs(shape, kernel, 20)
    conv = _fn(kernel, padding, dilation)
    check_op(conv, inputs, torch_fn=_fn(kernel, padding, dilation, TF), atol=1e-4)
    assert set(calls) == {"forward", "grad_input", "grad_weight"}

    def run():
        leaves = [ember.tensor(a, requires_grad=True) for a in inputs]
        y = conv(*leaves)
        y.backward(ember.tensor(rand(*y.shape, seed=30)))
        return [y.detach().numpy()] + [t.grad.numpy() for t in leaves]

    fast = run()
    monkeypatch.setattr(_depthwise, "supported", lambda *a: False)  # the im2col path
    for a, b in zip(fast, run()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_depthwise_gradcheck_gradgradcheck_and_float64():
    x, w, b = (a.astype(np.float64) for a in _inputs((2, 3, 5, 6), 3, 40))
    conv = _fn(3, 1, 1)
    gradcheck_op(conv, [x, w, b])
    leaves = [ember.tensor(a, requires_grad=True) for a in (x, w, b)]
    assert ember.autograd.gradgradcheck(conv, leaves)
    check_op(conv, [x, w, b], torch_fn=_fn(3, 1, 1, TF), atol=1e-10)


def test_depthwise_conv_transpose_stride_1_matches_torch():
    c = 4
    x, w, b = rand(3, c, 7, 6, seed=50), rand(c, 1, 3, 3, seed=51), rand(c, seed=52)

    def fn(x, w, b, lib=F):
        return lib.conv_transpose2d(x, w, b, padding=1, groups=c)

    check_op(fn, [x, w, b], torch_fn=lambda *a: fn(*a, lib=TF), atol=1e-4)


def test_large_depthwise_matches_torch():
    """Many blocks of images over the threads, 64 channels (MobileNet-sized)."""
    inputs = _inputs((9, 64, 16, 16), 3, 60)
    check_op(_fn(3, 1, 1), inputs, torch_fn=_fn(3, 1, 1, TF), atol=2e-4)
