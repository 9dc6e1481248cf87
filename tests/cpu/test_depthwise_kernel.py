"""The depthwise conv loops (ember/cpu/_depthwise_kernels.py) against torch's conv2d(groups=C)
and against the NumPy passes they replace: forward, input and weight gradients over kernel
sizes, symmetric, asymmetric ('same' with even kernels) and zero paddings, dilation, stride
(which only the loops cover; with the kernels off it stays on im2col), odd sizes, several
blocks on two threads, the same bits on one and two threads, float64, conv_transpose2d."""

from __future__ import annotations

import numpy as np
import pytest

import ember
import ember.nn.functional as F
from ember.cpu import _depthwise_kernels as K
from ember.ops import parallel as P
from tests.oracle import rand, torch

TF = torch.nn.functional
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")

CASES = [  # (N, C, H, W), kernel, padding, stride, dilation
    ((3, 5, 9, 7), 1, 0, 1, 1),
    ((3, 5, 9, 7), 3, 1, 1, 1),
    ((3, 4, 8, 11), 5, 2, 1, 1),
    ((3, 4, 8, 11), (3, 5), (0, 2), 1, 1),
    ((4, 8, 7, 7), 3, 0, 1, 1),
    ((2, 3, 10, 9), 3, 2, 1, 2),
    ((2, 3, 9, 10), 4, "same", 1, 1),  # even kernel: 1 before, 2 after
    ((2, 2, 7, 6), (2, 3), "same", 1, (2, 1)),
    ((3, 5, 9, 7), 3, 1, 2, 1),
    ((3, 4, 11, 10), (3, 5), (1, 2), (2, 3), 1),
    ((2, 3, 13, 12), 5, 2, 2, 2),
    ((2, 3, 8, 9), 3, 0, 3, 1),
    ((2, 3, 9, 8), 3, 4, 2, 1),  # padding wider than the kernel
]


def _run(shape, kernel, padding, stride, dilation, dtype=np.float32, seed=0, lib="ember"):
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    c = shape[1]
    arrays = [rand(*shape, seed=seed), rand(c, 1, kh, kw, seed=seed + 1), rand(c, seed=seed + 2)]
    arrays = [a.astype(dtype) for a in arrays]
    kw_args = dict(padding=padding, stride=stride, dilation=dilation, groups=c)
    if lib == "torch":
        leaves = [torch.tensor(a, requires_grad=True) for a in arrays]
        y = TF.conv2d(*leaves, **kw_args)
        g = rand(*y.shape, seed=seed + 3).astype(dtype)
        y.backward(torch.tensor(g))
        return [y.detach().numpy()] + [t.grad.numpy() for t in leaves]
    leaves = [ember.tensor(a, requires_grad=True) for a in arrays]
    y = F.conv2d(*leaves, **kw_args)
    g = rand(*y.shape, seed=seed + 3).astype(dtype)
    y.backward(ember.tensor(g))
    return [y.detach().numpy()] + [t.grad.numpy() for t in leaves]


@pytest.fixture
def threads():
    before = P.get_num_threads()
    yield P.set_num_threads
    P.set_num_threads(before)


@pytest.mark.parametrize("shape, kernel, padding, stride, dilation", CASES)
def test_loops_match_torch_and_the_numpy_path(
    shape, kernel, padding, stride, dilation, kernels_on, count_calls, monkeypatch
):
    calls = [count_calls(K, name) for name in ("forward", "grad_input", "grad_weight")]
    fast = _run(shape, kernel, padding, stride, dilation)
    assert all(calls), "the loops did not run"
    for a, b in zip(fast, _run(shape, kernel, padding, stride, dilation, lib="torch")):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    monkeypatch.setenv("EMBER_CPU_KERNELS", "0")  # the NumPy passes (im2col when strided)
    slow = _run(shape, kernel, padding, stride, dilation)
    if stride == 1:  # forward and input gradient add in the NumPy passes' order
        np.testing.assert_array_equal(fast[0], slow[0])
        np.testing.assert_array_equal(fast[1], slow[1])
    for a, b in zip(fast, slow):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
def test_float64_matches_torch(stride, kernels_on):
    args = ((3, 4, 9, 8), 3, 1, stride, 1)
    fast = _run(*args, dtype=np.float64)
    for a, b in zip(fast, _run(*args, dtype=np.float64, lib="torch")):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("stride", [1, 2])
def test_one_and_two_threads_give_the_same_bits(stride, kernels_on, threads):
    """Many planes and several image blocks of the weight gradient (WEIGHT_IMAGES)."""
    args = ((19, 24, 15, 13), 3, 1, stride, 1)
    threads(1)
    one = _run(*args, seed=7)
    threads(2)
    two = _run(*args, seed=7)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(two, _run(*args, seed=7, lib="torch")):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("stride, output_padding", [(1, 0), (2, 0), (2, 1)])
def test_conv_transpose_matches_torch(stride, output_padding, kernels_on, count_calls):
    calls = count_calls(K, "grad_input")
    c = 4
    x, w, b = rand(3, c, 7, 6, seed=50), rand(c, 1, 3, 3, seed=51), rand(c, seed=52)
    kw_args = dict(padding=1, stride=stride, output_padding=output_padding, groups=c)
    leaves = [ember.tensor(a, requires_grad=True) for a in (x, w, b)]
    y = F.conv_transpose2d(*leaves, **kw_args)
    g = rand(*y.shape, seed=53)
    y.backward(ember.tensor(g))
    tl = [torch.tensor(a, requires_grad=True) for a in (x, w, b)]
    yt = TF.conv_transpose2d(*tl, **kw_args)
    yt.backward(torch.tensor(g))
    assert calls
    np.testing.assert_allclose(y.detach().numpy(), yt.detach().numpy(), rtol=1e-5, atol=1e-5)
    for a, t in zip(leaves, tl):
        np.testing.assert_allclose(a.grad.numpy(), t.grad.numpy(), rtol=1e-5, atol=1e-5)


def test_kernels_off_keeps_the_numpy_path(kernels_off, count_calls):
    calls = [count_calls(K, name) for name in ("forward", "grad_input", "grad_weight")]
    fast = _run((2, 3, 6, 5), 3, 1, 1, 1)
    assert not any(calls)
    for a, b in zip(fast, _run((2, 3, 6, 5), 3, 1, 1, 1, lib="torch")):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernels", ["1", "0"])
@pytest.mark.parametrize("padding", [0, 1])
def test_an_inf_input_spoils_only_the_taps_that_read_it(kernels, padding, monkeypatch):
    """At stride 1 the flat passes also compute junk columns (a row's run reads into the next
    row): their 0 * inf must not reach the weight gradient. Torch is the oracle."""
    monkeypatch.setenv("EMBER_CPU_KERNELS", kernels)
    x = np.ones((2, 3, 5, 6), np.float32)
    x[0, 0, 1, 0] = np.inf
    x[1, 2, 3, 5] = np.nan
    w = np.random.default_rng(0).standard_normal((3, 1, 3, 3)).astype(np.float32)
    xe, we = ember.tensor(x, requires_grad=True), ember.tensor(w, requires_grad=True)
    F.conv2d(xe, we, padding=padding, groups=3).sum().backward()
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    torch.nn.functional.conv2d(xt, wt, padding=padding, groups=3).sum().backward()
    ref = wt.grad.numpy()
    np.testing.assert_array_equal(np.isnan(we.grad.numpy()), np.isnan(ref))
    np.testing.assert_array_equal(np.isinf(we.grad.numpy()), np.isinf(ref))
    fin = np.isfinite(ref)
    np.testing.assert_allclose(we.grad.numpy()[fin], ref[fin], rtol=1e-5, atol=1e-5)
