"""The fused Winograd transforms (ember/cpu/_winograd_kernels.py) against the NumPy passes they
replace and against torch's conv2d: forward, grad-input and grad-weight over even and odd
sizes, symmetric and asymmetric paddings, cropped outputs, one and several image blocks on two
threads, float64; the layout switch (no junk tiles) seen by grad_weight and the saved size."""

from __future__ import annotations

import numpy as np
import pytest

import ember
import ember.nn.functional as F
from ember.cpu import compile as cpu_compile
from ember.nn.functional import _winograd as W
from ember.nn.functional import _workspace
from ember.ops import parallel as P
from tests.oracle import check_op, rand, torch

TF = torch.nn.functional
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")

CASES = [
    ((2, 8, 8, 8), ((1, 1), (1, 1)), None),  # even output
    ((3, 8, 7, 9), ((1, 1), (1, 1)), None),  # odd rows and columns
    ((2, 8, 6, 5), ((0, 0), (0, 0)), None),  # valid: output 4x3
    ((2, 8, 5, 7), ((2, 2), (2, 2)), None),  # more padding than the kernel radius
    ((2, 8, 7, 6), ((2, 0), (0, 2)), None),  # asymmetric
    ((2, 8, 6, 6), ((1, 2), (1, 2)), None),  # 'same'-like, one side longer
    ((2, 8, 1, 4), ((1, 1), (1, 1)), None),  # one input row
    ((2, 8, 9, 9), ((1, 1), (1, 1)), (8, 7)),  # output cropped (conv_transpose's gradient)
    ((2, 8, 6, 7), ((1, 1), (1, 1)), (5, 6)),
    ((2, 8, 6, 6), ((1, 1), (1, 1)), (7, 7)),  # past the natural output: zeros read
]


@pytest.fixture
def two_threads():
    before = P.get_num_threads()
    P.set_num_threads(2)
    yield
    P.set_num_threads(before)


def _run(x, w, pads, out_sp, g_seed=3):
    """(y, grad_weight(g, v)) through conv3x3 with keep, and g."""
    y, v, block = W.conv3x3(x, w, pads, out_sp, keep=True)
    g = rand(*y.shape, seed=g_seed).astype(x.dtype)
    gw = W.grad_weight(g, v, x.shape[1], block)
    return y, gw, g, v


def _torch_conv(x, w, g, pads, out_sp):
    (top, bottom), (left, right) = pads
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    xp = TF.pad(tx, (left, right, top, bottom))
    if out_sp is not None:  # the crop (or extension) conv3x3 applies to the padded input
        ho, wo = out_sp
        xp = TF.pad(xp, (0, wo + 2 - xp.shape[3], 0, ho + 2 - xp.shape[2]))
    ty = TF.conv2d(xp, tw)
    ty.backward(torch.tensor(g))
    return ty.detach().numpy(), tw.grad.numpy()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,pads,out_sp", CASES)
def test_fused_matches_numpy_and_torch(monkeypatch, count_calls, shape, pads, out_sp, dtype):
    x = rand(*shape, seed=1).astype(dtype)
    w = rand(10, shape[1], 3, 3, seed=2).astype(dtype)
    monkeypatch.setenv("EMBER_CPU_KERNELS", "0")
    y0, gw0, _, v0 = _run(x, w, pads, out_sp)
    monkeypatch.setenv("EMBER_CPU_KERNELS", "1")
    kernels = cpu_compile.load("winograd")
    calls = [count_calls(kernels, k) for k in ("input_transform", "output_transform")]
    calls.append(count_calls(kernels, "grad_transform"))
    y1, gw1, g, v1 = _run(x, w, pads, out_sp)
    assert all(calls), "the fused loops did not run"
    # the same adds in the same order: the transforms match the NumPy passes bit for bit, the
    # GEMMs (no junk tiles in the fused layout) to rounding
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y1, y0, **tol)
    np.testing.assert_allclose(gw1, gw0, **tol)
    assert v1.shape[1] < v0.shape[1]  # no junk tiles
    ty, tgw = _torch_conv(x, w, g, pads, out_sp)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(y1, ty, **tol)
    np.testing.assert_allclose(gw1, tgw, **tol)


@pytest.mark.parametrize("n,block_bytes", [(1, 1 << 21), (7, 1 << 21), (7, 1), (13, 1 << 14)])
def test_blocks_on_two_threads(monkeypatch, two_threads, kernels_on, count_calls, n, block_bytes):
    """One block, one image per block and uneven blocks, on two threads, through conv2d's
    forward, grad-input and grad-weight, against torch."""
    monkeypatch.setattr(W, "BLOCK_BYTES", block_bytes)
    kernels = cpu_compile.load("winograd")
    fwd = count_calls(kernels, "input_transform")
    grad = count_calls(kernels, "grad_transform")

    def fn(x, w, b, lib=F):
        return lib.conv2d(x, w, b, padding=1)

    inputs = [rand(n, 8, 10, 9, seed=4), rand(12, 8, 3, 3, seed=5), rand(12, seed=6)]
    check_op(fn, inputs, torch_fn=lambda *a: fn(*a, lib=TF), atol=1e-4, rtol=1e-4)
    # forward and grad-input; one call per block
    assert len(fwd) >= 2 and grad


@pytest.mark.parametrize("padding", [0, 1, 2, (2, 0), "same"])
@pytest.mark.parametrize("kernels", ["on", "off"])
def test_conv2d_and_transpose_match_torch(monkeypatch, kernels, padding):
    monkeypatch.setenv("EMBER_CPU_KERNELS", "1" if kernels == "on" else "0")

    def fn(x, w, lib=F):
        return lib.conv2d(x, w, padding=padding)

    inputs = [rand(3, 8, 7, 6, seed=7), rand(9, 8, 3, 3, seed=8)]
    check_op(fn, inputs, torch_fn=lambda *a: fn(*a, lib=TF), atol=1e-4, rtol=1e-4)
    if padding in (0, 1):  # conv_transpose: the stride-1 forward is a cropped Winograd conv

        def tfn(x, w, lib=F):
            return lib.conv_transpose2d(x, w, padding=padding)

        inputs = [rand(2, 8, 6, 7, seed=9), rand(8, 9, 3, 3, seed=10)]
        check_op(tfn, inputs, torch_fn=lambda *a: tfn(*a, lib=TF), atol=1e-4, rtol=1e-4)


def test_kernels_switched_off_between_forward_and_backward(monkeypatch):
    """v kept in the fused layout still gives the right weight gradient on the NumPy passes."""
    x, w = rand(3, 8, 7, 9, seed=11), rand(10, 8, 3, 3, seed=12)
    pads = ((1, 1), (1, 1))
    monkeypatch.setenv("EMBER_CPU_KERNELS", "1")
    y, v, block = W.conv3x3(x, w, pads, None, keep=True)
    g = rand(*y.shape, seed=13)
    fused = W.grad_weight(g, v, 8, block)
    monkeypatch.setenv("EMBER_CPU_KERNELS", "0")
    np.testing.assert_array_equal(W.grad_weight(g, v, 8, block), fused)


@pytest.mark.parametrize("kernels", ["on", "off"])
def test_transformed_bytes_is_the_kept_size(monkeypatch, kernels):
    monkeypatch.setenv("EMBER_CPU_KERNELS", "1" if kernels == "on" else "0")
    x, w = rand(4, 8, 9, 6, seed=14), rand(8, 8, 3, 3, seed=15)
    for pads, out_sp in (((1, 1), (1, 1)), None), (((2, 0), (0, 2)), (6, 5)):
        _, v, _ = W.conv3x3(x, w, pads, out_sp, keep=True)
        root = v
        while isinstance(root.base, np.ndarray):
            root = root.base
        assert W.transformed_bytes(x, pads, out_sp) == root.nbytes
        _workspace.give(v)


def test_row_stride_avoids_4k_multiples():
    for cols in (1, 1024, 4096 * 16, 12345):
        for itemsize in (4, 8):
            s = W._row_stride(cols, itemsize)
            assert s >= cols and (s * itemsize) % 4096 == 256


def test_training_step_uses_fused_kernels(kernels_on, count_calls):
    """conv2d inside autograd: all three fused loops run and the gradients match torch."""
    kernels = cpu_compile.load("winograd")
    calls = [count_calls(kernels, k) for k in ("input_transform", "output_transform")]
    calls.append(count_calls(kernels, "grad_transform"))
    xa, wa = rand(4, 16, 12, 12, seed=16), rand(16, 16, 3, 3, seed=17) * 0.1
    x = ember.tensor(xa, requires_grad=True)
    w = ember.tensor(wa, requires_grad=True)
    y = F.conv2d(x, w, padding=1)
    (y * y).sum().backward()
    tx, tw = torch.tensor(xa, requires_grad=True), torch.tensor(wa, requires_grad=True)
    ty = TF.conv2d(tx, tw, padding=1)
    (ty * ty).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), atol=2e-4, rtol=1e-4)
    np.testing.assert_allclose(w.grad.numpy(), tw.grad.numpy(), atol=2e-4, rtol=1e-4)
    assert all(calls), "the fused loops did not run"
