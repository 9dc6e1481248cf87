"""The Winograd F(2x2, 3x3) path of conv2d (3x3, stride 1, dilation 1, one group, NumPy
float): forward, grad-input and the grad-weight from the saved transformed input, against
torch over odd and even sizes, paddings, batch 1, several image blocks and threads; the
fallbacks (groups, stride, few channels, half precision) and the saved-buffer lifecycle."""

from __future__ import annotations

import numpy as np
import pytest

import ember
import ember.nn.functional as F
from ember.nn.functional import _winograd
from ember.nn.functional import conv as conv_mod
from ember.ops import parallel
from tests.oracle import check_op, cpu_only, gradcheck_op, rand, torch

TF = torch.nn.functional
pytestmark = [
    pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning"),
    cpu_only("Winograd is the NumPy conv path; device arrays take im2col + GEMM"),
]


@pytest.fixture
def calls(monkeypatch):
    """Counts the Winograd forward / weight-gradient calls (to prove the path ran)."""
    seen = {"conv": 0, "grad_weight": 0}
    conv, gw = _winograd.conv3x3, _winograd.grad_weight

    def conv_spy(*a, **k):
        seen["conv"] += 1
        return conv(*a, **k)

    def gw_spy(*a, **k):
        seen["grad_weight"] += 1
        return gw(*a, **k)

    monkeypatch.setattr(_winograd, "conv3x3", conv_spy)
    monkeypatch.setattr(_winograd, "grad_weight", gw_spy)
    return seen


def _conv(stride=1, padding=1, dilation=1, groups=1):
    def fn(x, w, b=None, lib=F):
        return lib.conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups)

    return fn, (lambda *a: fn(*a, lib=TF))


@pytest.mark.parametrize(
    "shape,padding",
    [
        ((2, 8, 8, 8), 1),  # even output: the tiles cover it exactly
        ((3, 8, 7, 9), 1),  # odd output rows and columns
        ((1, 9, 5, 6), 1),  # batch 1
        ((2, 12, 6, 6), 1),  # more input than output channels (the other grad-weight GEMM)
        ((2, 8, 6, 5), 0),  # valid: output 4x3
        ((2, 8, 5, 7), 2),  # more padding than the kernel radius
        ((2, 8, 7, 6), (2, 0)),
        ((2, 8, 5, 5), "same"),
        ((2, 8, 3, 3), 0),  # a single output pixel
        ((2, 8, 1, 4), 1),  # one input row
    ],
)
@pytest.mark.parametrize("bias", [False, True])
def test_winograd_matches_torch(calls, shape, padding, bias):
    o = 10
    fn, tfn = _conv(padding=padding)
    inputs = [rand(*shape, seed=1), rand(o, shape[1], 3, 3, seed=2)]
    if bias:
        inputs.append(rand(o, seed=3))
    check_op(fn, inputs, torch_fn=tfn, atol=1e-4, rtol=1e-4)
    # forward, grad-input (a Winograd conv of g with the flipped kernel) and grad-weight
    assert calls["conv"] >= 2 and calls["grad_weight"] >= 1


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("block_bytes", [1, 1 << 21])
def test_blocks_and_threads(monkeypatch, calls, threads, block_bytes):
    """One image per block (ragged and many blocks, saved in blocks) and one big block, on
    one and two threads."""
    monkeypatch.setattr(_winograd, "BLOCK_BYTES", block_bytes)
    old = parallel.get_num_threads()
    parallel.set_num_threads(threads)
    try:
        fn, tfn = _conv()
        inputs = [rand(7, 8, 10, 9, seed=4), rand(12, 8, 3, 3, seed=5)]
        check_op(fn, inputs, torch_fn=tfn, atol=1e-4, rtol=1e-4)
    finally:
        parallel.set_num_threads(old)
    assert calls["grad_weight"] >= 1


def test_noncontiguous_inputs(calls):
    fn, tfn = _conv()
    inputs = [rand(3, 8, 6, 7, seed=27), rand(9, 8, 3, 3, seed=28), rand(9, seed=29)]
    check_op(fn, inputs, torch_fn=tfn, atol=1e-4, rtol=1e-4, noncontiguous=True)
    assert calls["grad_weight"] >= 1


def test_reference_cnn_shapes_accuracy(calls):
    """The benchmark's 32->32 layer at batch 4: float32 error stays at im2col's level."""
    x = rand(4, 32, 32, 32, seed=6)
    w = rand(32, 32, 3, 3, seed=7) * 0.1
    fn, tfn = _conv()
    check_op(fn, [x, w], torch_fn=tfn, atol=2e-4, rtol=1e-4)
    assert calls["conv"] >= 2


def test_float64_gradcheck_and_gradgradcheck(calls):
    inputs = [rand(2, 8, 4, 5, seed=8), rand(8, 8, 3, 3, seed=9), rand(8, seed=10)]
    fn = lambda x, w, b: F.conv2d(x, w, b, padding=1)  # noqa: E731
    gradcheck_op(fn, inputs)
    args = [ember.tensor(a.astype(np.float64), requires_grad=True) for a in inputs]
    assert ember.autograd.gradgradcheck(fn, args)
    assert calls["grad_weight"] >= 1


def test_conv_transpose_stride1_uses_winograd(calls):
    fn = lambda x, w, b, lib=F: lib.conv_transpose2d(x, w, b, padding=1)  # noqa: E731
    inputs = [rand(2, 8, 6, 7, seed=11), rand(8, 9, 3, 3, seed=12), rand(9, seed=13)]
    check_op(fn, inputs, torch_fn=lambda *a: fn(*a, lib=TF), atol=1e-4, rtol=1e-4)
    assert calls["conv"] >= 1


@pytest.mark.parametrize(
    "kw,shape",
    [
        (dict(groups=2, padding=1), (2, 16, 6, 6)),
        (dict(stride=2, padding=1), (2, 8, 7, 7)),
        (dict(dilation=2, padding=2), (2, 8, 7, 7)),
        (dict(padding=1), (2, 3, 6, 6)),  # an RGB input: too few channels
    ],
)
def test_fallbacks_match_torch(calls, kw, shape):
    fn, tfn = _conv(**kw)
    w = rand(8, shape[1] // kw.get("groups", 1), 3, 3, seed=14)
    check_op(fn, [rand(*shape, seed=15), w], torch_fn=tfn, atol=1e-4, rtol=1e-4)
    assert calls["grad_weight"] == 0


def test_supported_rules():
    x = np.zeros((2, 8, 5, 5), np.float32)
    w = np.zeros((8, 8, 3, 3), np.float32)
    ok = ((3, 3), (1, 1), (1, 1), 1)
    assert _winograd.supported(x, w, *ok)
    assert not _winograd.supported(x.astype(np.float16), w.astype(np.float16), *ok)
    assert not _winograd.supported(x, w, (3, 3), (2, 1), (1, 1), 1)
    assert not _winograd.supported(x, w, (3, 3), (1, 1), (1, 2), 1)
    assert not _winograd.supported(x, w, (3, 3), (1, 1), (1, 1), 2)
    assert not _winograd.supported(x[:, :4], w[:, :4], *ok)
    assert not _winograd.supported(x[:0], w, *ok)


def test_unsaved_transform_falls_back_to_im2col(monkeypatch, calls):
    """Past SAVE_COLS_BYTES the transformed input is not kept: the weight gradient is
    rebuilt from x by im2col, and matches."""
    monkeypatch.setattr(conv_mod, "SAVE_COLS_BYTES", 0)
    fn, tfn = _conv()
    check_op(fn, [rand(2, 8, 6, 6, seed=16), rand(8, 8, 3, 3, seed=17)], torch_fn=tfn, atol=1e-4)
    assert calls["conv"] >= 1 and calls["grad_weight"] == 0


def test_retain_graph_and_buffer_reuse(calls):
    """The kept transform survives a retained graph while other convs of the same size
    take and return pooled buffers, and goes back to the pool when the node is released."""
    from ember.nn.functional import _workspace

    old = _workspace.MIN_BYTES
    _workspace.MIN_BYTES = 0
    try:
        xa = rand(2, 8, 8, 8, seed=18)
        wa = rand(8, 8, 3, 3, seed=19)
        tw = torch.tensor(wa, requires_grad=True)
        ty = TF.conv2d(torch.tensor(xa), tw, padding=1)
        (ty * ty).sum().backward()
        w = ember.tensor(wa, requires_grad=True)
        y = F.conv2d(ember.tensor(xa), w, padding=1)
        loss = (y * y).sum()
        loss.backward(retain_graph=True)
        first = w.grad.numpy().copy()
        np.testing.assert_allclose(first, tw.grad.numpy(), atol=1e-4, rtol=1e-4)
        for seed in (20, 21):
            F.conv2d(ember.tensor(rand(2, 8, 8, 8, seed=seed)), w, padding=1).sum().backward()
        w.grad = None
        loss.backward()
        np.testing.assert_allclose(w.grad.numpy(), first, atol=1e-6)
        assert _workspace._idle[0] > 0  # the released transform went back to the pool
    finally:
        _workspace.MIN_BYTES = old
        _workspace.clear()


def test_half_precision_takes_the_im2col_path(calls):
    x = ember.tensor(rand(2, 8, 6, 6, seed=22)).half().requires_grad_()
    w = ember.tensor(rand(8, 8, 3, 3, seed=23)).half().requires_grad_()
    y = F.conv2d(x, w, padding=1)
    y.sum().backward()
    assert y.dtype == ember.float16 and w.grad.dtype == ember.float16
    assert calls["conv"] == 0


@pytest.mark.parametrize("setting", [("CACHE_BYTES", 0), ("ZERO_KEEP", 1)])
def test_uncached_scratch_and_kernel_transform(monkeypatch, calls, setting):
    """Scratch arrays past CACHE_BYTES are made fresh per block (the zero borders too), an
    evicted zero-bordered block is rebuilt, and the kernel transform is G w G^T."""
    monkeypatch.setattr(_winograd, *setting)
    fn, tfn = _conv(padding=(2, 1))
    check_op(fn, [rand(3, 8, 7, 6, seed=24), rand(9, 8, 3, 3, seed=25)], torch_fn=tfn, atol=1e-4)
    assert calls["grad_weight"] >= 1
    w = rand(5, 8, 3, 3, seed=26).astype(np.float64)
    g = _winograd._G
    ref = np.einsum("ai,ocij,bj->aboc", g, w, g).reshape(16, 5, 8)
    np.testing.assert_allclose(_winograd.transform_kernel(w), ref, rtol=1e-12, atol=1e-12)
