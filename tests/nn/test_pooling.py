"""Pooling against torch: max / avg over a grid of kernel, stride, padding, dilation and
ceil_mode (forward, gradient, indices), adaptive pooling with non-divisible sizes, ties and
NaN, gradcheck / gradgradcheck in float64, the modules' reprs and the error messages."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import ember
import ember.nn as enn
import ember.nn.functional as F
from tests.oracle import check_op, gradcheck_op, rand, torch

tnn = torch.nn
TF = torch.nn.functional


def _np(t):
    return t.detach().numpy() if hasattr(t, "detach") else np.asarray(t)


def ref_max_pool2d(x, k, s, p, d, ceil_mode):
    """A loop over output pixels in float64 (torch's output-size rule), slow and plain."""
    n, c, h, w = x.shape

    def size(i, k, s, p, d):
        o = (i + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
        return o - 1 if ceil_mode and (o - 1) * s >= i + p else o

    oh, ow = size(h, k, s, p, d), size(w, k, s, p, d)
    out = np.full((n, c, oh, ow), -np.inf)
    for i in range(oh):
        for j in range(ow):
            for a in range(k):
                for b in range(k):
                    r, q = i * s - p + a * d, j * s - p + b * d
                    if 0 <= r < h and 0 <= q < w:
                        out[:, :, i, j] = np.maximum(out[:, :, i, j], x[:, :, r, q])
    return out


MAX_GRID = [
    (k, s, p, d, c)
    for k, s, p, d, c in itertools.product(
        [2, 3, (3, 2)], [None, 1, 2, (2, 3)], [0, 1], [1, 2], [False, True]
    )
    if p <= (d * ((k if isinstance(k, int) else min(k)) - 1) + 1) // 2
]


@pytest.mark.parametrize("kernel,stride,padding,dilation,ceil_mode", MAX_GRID)
def test_max_pool2d_grid_matches_torch(kernel, stride, padding, dilation, ceil_mode):
    x = rand(2, 3, 9, 8, seed=1)  # continuous values: no ties
    for ri in (False, True):
        check_op(
            lambda x, lib=F, ri=ri: lib.max_pool2d(
                x, kernel, stride, padding, dilation, ceil_mode, ri
            ),
            [x],
            torch_fn=lambda x, ri=ri: TF.max_pool2d(
                x, kernel, stride, padding, dilation, ceil_mode, ri
            ),
        )


@pytest.mark.parametrize(
    "k,s,p,d,ceil_mode",
    [(2, 2, 0, 1, False), (3, 2, 1, 1, True), (3, 1, 1, 2, False), (2, 3, 1, 1, True)],
)
def test_max_pool2d_matches_direct_loop_reference(k, s, p, d, ceil_mode):
    x = rand(2, 3, 10, 7, seed=2)
    out = F.max_pool2d(ember.tensor(x), k, s, p, d, ceil_mode)
    np.testing.assert_allclose(out.numpy(), ref_max_pool2d(x, k, s, p, d, ceil_mode))


@pytest.mark.parametrize(
    "kernel,stride,padding,dilation,ceil_mode",
    [
        (2, None, 0, 1, False),
        (3, 2, 1, 1, True),
        (4, 3, 2, 1, True),
        (3, 1, 1, 3, False),
        (2, 3, 0, 1, True),
    ],
)
def test_max_pool1d_matches_torch(kernel, stride, padding, dilation, ceil_mode):
    for shape in [(2, 3, 11), (3, 12)]:
        check_op(
            lambda x, lib=F: lib.max_pool1d(x, kernel, stride, padding, dilation, ceil_mode, True),
            [rand(*shape, seed=3)],
            torch_fn=lambda x: TF.max_pool1d(x, kernel, stride, padding, dilation, ceil_mode, True),
        )


def test_max_pool_ties_go_to_the_first_maximum():
    """ReLU outputs are full of equal zeros: the gradient goes to one element per window."""
    x = np.maximum(rand(2, 3, 8, 8, seed=4), 0)
    x[0, 0, :4, :4] = 0.0
    for kw in (dict(kernel_size=2), dict(kernel_size=3, stride=1, padding=1)):
        check_op(
            lambda x, lib=F, kw=kw: lib.max_pool2d(x, return_indices=True, **kw),
            [x],
            torch_fn=lambda x, kw=kw: TF.max_pool2d(x, return_indices=True, **kw),
        )


def test_max_pool_nan_propagates_like_torch():
    x = rand(1, 2, 4, 4, seed=5)
    x[0, 0, 1, 1] = np.nan
    x[0, 1, 0, 0] = np.nan
    e, ei = F.max_pool2d(ember.tensor(x), 2, return_indices=True)
    t, ti = TF.max_pool2d(torch.tensor(x), 2, return_indices=True)
    np.testing.assert_array_equal(e.numpy(), t.numpy())
    np.testing.assert_array_equal(ei.numpy(), ti.numpy())


def test_max_pool_integer_input_and_3d():
    x = (rand(2, 3, 6, 6, seed=6) * 10).astype(np.int64)
    e = F.max_pool2d(ember.tensor(x), 3, 2, 1)
    t = TF.max_pool2d(torch.tensor(x), 3, 2, 1)
    assert e.dtype == ember.int64
    np.testing.assert_array_equal(e.numpy(), t.numpy())
    check_op(
        lambda x, lib=F: lib.max_pool3d(x, 2, (1, 2, 2), 1, ceil_mode=True),
        [rand(2, 2, 4, 5, 6, seed=7)],
        torch_fn=lambda x: TF.max_pool3d(x, 2, (1, 2, 2), 1, ceil_mode=True),
    )


AVG_GRID = [
    (k, s, p, c, cip)
    for k, s, p, c, cip in itertools.product(
        [2, 3, (3, 2)], [None, 1, 2, (2, 3)], [0, 1], [False, True], [True, False]
    )
]


@pytest.mark.parametrize("kernel,stride,padding,ceil_mode,count_include_pad", AVG_GRID)
def test_avg_pool2d_grid_matches_torch(kernel, stride, padding, ceil_mode, count_include_pad):
    check_op(
        lambda x, lib=F: lib.avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad),
        [rand(2, 3, 9, 8, seed=8)],
        torch_fn=lambda x: TF.avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad),
    )


@pytest.mark.parametrize("divisor", [1, 3, 7])
def test_avg_pool2d_divisor_override(divisor):
    check_op(
        lambda x, lib=F: lib.avg_pool2d(x, 3, 2, 1, True, False, divisor),
        [rand(2, 3, 8, 7, seed=9)],
        torch_fn=lambda x: TF.avg_pool2d(x, 3, 2, 1, True, False, divisor),
    )


@pytest.mark.parametrize(
    "kernel,stride,padding,ceil_mode,cip",
    [
        (2, None, 0, False, True),
        (3, 2, 1, True, False),
        (4, 3, 2, True, True),
        (3, 1, 1, False, False),
    ],
)
def test_avg_pool1d_matches_torch(kernel, stride, padding, ceil_mode, cip):
    for shape in [(2, 3, 11), (3, 12)]:
        check_op(
            lambda x, lib=F: lib.avg_pool1d(x, kernel, stride, padding, ceil_mode, cip),
            [rand(*shape, seed=10)],
            torch_fn=lambda x: TF.avg_pool1d(x, kernel, stride, padding, ceil_mode, cip),
        )


def test_avg_pool_integer_input_truncates_like_torch():
    x = (rand(2, 3, 6, 6, seed=11) * 10).astype(np.int64)
    e = F.avg_pool2d(ember.tensor(x), 3, 2, 1)
    t = TF.avg_pool2d(torch.tensor(x), 3, 2, 1)
    np.testing.assert_array_equal(e.numpy(), t.numpy())


@pytest.mark.parametrize("size", [1, 2, 3, (5, 3), (None, 2), (4, 7), (9, 8), (13, 11)])
def test_adaptive_avg_pool2d_matches_torch(size):
    for shape in [(2, 3, 9, 8), (3, 9, 8)]:
        check_op(
            lambda x, lib=F: lib.adaptive_avg_pool2d(x, size),
            [rand(*shape, seed=12)],
            torch_fn=lambda x: TF.adaptive_avg_pool2d(x, size),
        )


@pytest.mark.parametrize("size", [1, 3, (5, 3), (None, 2), (4, 7), (13, 11)])
def test_adaptive_max_pool2d_matches_torch(size):
    for shape in [(2, 3, 9, 8), (3, 9, 8)]:
        check_op(
            lambda x, lib=F: lib.adaptive_max_pool2d(x, size, True),
            [rand(*shape, seed=13)],
            torch_fn=lambda x: TF.adaptive_max_pool2d(x, size, True),
        )


def test_adaptive_1d_pools_match_torch():
    for size in (1, 4, 7):
        check_op(
            lambda x, s=size: F.adaptive_avg_pool1d(x, s),
            [rand(2, 3, 10, seed=14)],
            torch_fn=lambda x, s=size: TF.adaptive_avg_pool1d(x, s),
        )
        check_op(
            lambda x, s=size: F.adaptive_max_pool1d(x, s),
            [rand(2, 3, 10, seed=15)],
            torch_fn=lambda x, s=size: TF.adaptive_max_pool1d(x, s),
        )


@pytest.mark.parametrize(
    "fn",
    [
        lambda x, lib=F: lib.adaptive_avg_pool2d(x, 1),  # the global pool of a CNN head
        lambda x, lib=F: lib.adaptive_avg_pool2d(x, (2, 4)),
        lambda x, lib=F: lib.avg_pool2d(x, 4),  # 18 = 4 * 4 + 2 left over (floor mode)
        lambda x, lib=F: lib.avg_pool2d(x, (8, 2)),
        lambda x, lib=F: lib.avg_pool2d(x, 4, divisor_override=3),
    ],
)
def test_large_side_by_side_windows_match_torch(fn):
    """Windows of >= 16 elements with stride = kernel take one reduction over a window view
    (and a broadcast copy back) instead of a loop over kernel offsets; uneven sizes leave the
    rows past the last window out of the forward and with a zero gradient."""
    for shape in [(2, 3, 16, 16), (2, 3, 18, 17), (3, 18, 17)]:
        check_op(fn, [rand(*shape, seed=19)], torch_fn=lambda x, f=fn: f(x, lib=TF))


def test_large_windows_in_1d_3d_integers_and_float64():
    check_op(
        lambda x, lib=F: lib.avg_pool1d(x, 16),
        [rand(2, 3, 35, seed=20)],
        torch_fn=lambda x: TF.avg_pool1d(x, 16),
    )
    check_op(
        lambda x, lib=F: lib.adaptive_avg_pool3d(x, 1),
        [rand(2, 2, 4, 4, 4, seed=21)],
        torch_fn=lambda x: TF.adaptive_avg_pool3d(x, 1),
    )
    x = (rand(2, 3, 8, 8, seed=22) * 10).astype(np.int64)
    e = F.avg_pool2d(ember.tensor(x), 4)
    np.testing.assert_array_equal(e.numpy(), TF.avg_pool2d(torch.tensor(x), 4).numpy())
    fn = lambda t: F.avg_pool2d(t, 4)  # noqa: E731
    gradcheck_op(fn, [rand(1, 2, 9, 8, seed=23)])
    t64 = ember.tensor(rand(1, 2, 9, 8, seed=23).astype(np.float64), requires_grad=True)
    assert ember.autograd.gradgradcheck(fn, [t64])


def test_noncontiguous_input():
    for fn in (
        lambda x, lib=F: lib.max_pool2d(x, 2),
        lambda x, lib=F: lib.avg_pool2d(x, 3, 2, 1),
        lambda x, lib=F: lib.adaptive_avg_pool2d(x, 3),
    ):
        check_op(
            fn,
            [rand(3, 4, 8, 6, seed=16)],
            torch_fn=lambda x, f=fn: f(x, lib=TF),
            noncontiguous=True,
        )


# ---------------------------------------------------------- gradcheck / double backward
@pytest.mark.parametrize(
    "fn",
    [
        lambda x: F.max_pool2d(x, 3, 2, 1, ceil_mode=True),
        lambda x: F.max_pool2d(x, 2, 1, dilation=2),
        lambda x: F.avg_pool2d(x, 3, 2, 1, True, False),
        lambda x: F.adaptive_avg_pool2d(x, (3, 2)),
        lambda x: F.adaptive_max_pool2d(x, (3, 2)),
    ],
)
def test_gradcheck_and_gradgradcheck(fn):
    x = rand(2, 2, 5, 6, seed=17)
    gradcheck_op(fn, [x])
    assert ember.autograd.gradgradcheck(
        fn, [ember.tensor(x.astype(np.float64), requires_grad=True)]
    )


def test_double_backward_matches_torch():
    x = rand(2, 3, 6, 6, seed=18)
    res = []
    for lib, mk in (
        (F, lambda a: ember.tensor(a, requires_grad=True)),
        (TF, lambda a: torch.tensor(a, requires_grad=True)),
    ):
        xt = mk(x)
        y = lib.max_pool2d(xt * xt, 3, 2, 1) + lib.avg_pool2d(xt**3, 2)[..., :3, :3]
        gen = ember.autograd.grad if lib is F else torch.autograd.grad
        (gx,) = gen((y * y).sum(), [xt], create_graph=True)
        (gx * gx).sum().backward()
        res.append(_np(xt.grad))
    np.testing.assert_allclose(res[0], res[1], rtol=1e-3, atol=1e-3)


# ------------------------------------------------------------------------- modules
@pytest.mark.parametrize(
    "ecls,tcls,args,kw,shape",
    [
        (enn.MaxPool2d, tnn.MaxPool2d, (2,), {}, (2, 3, 8, 8)),
        (
            enn.MaxPool2d,
            tnn.MaxPool2d,
            ((3, 2),),
            dict(stride=2, padding=1, ceil_mode=True),
            (3, 9, 7),
        ),
        (enn.MaxPool1d, tnn.MaxPool1d, (3,), dict(stride=2, dilation=2), (2, 3, 11)),
        (
            enn.AvgPool2d,
            tnn.AvgPool2d,
            (3,),
            dict(stride=2, padding=1, count_include_pad=False),
            (2, 3, 8, 8),
        ),
        (enn.AvgPool1d, tnn.AvgPool1d, (2,), dict(ceil_mode=True), (2, 3, 9)),
        (enn.AdaptiveAvgPool2d, tnn.AdaptiveAvgPool2d, ((5, None),), {}, (2, 3, 9, 8)),
        (enn.AdaptiveAvgPool2d, tnn.AdaptiveAvgPool2d, (1,), {}, (2, 3, 9, 8)),
        (enn.AdaptiveMaxPool2d, tnn.AdaptiveMaxPool2d, (3,), {}, (2, 3, 9, 8)),
    ],
)
def test_modules_match_torch(ecls, tcls, args, kw, shape):
    emod, tmod = ecls(*args, **kw), tcls(*args, **kw)
    assert repr(emod) == repr(tmod)
    for mode in ("train", "eval"):
        getattr(emod, mode)()
        getattr(tmod, mode)()
        check_op(emod, [rand(*shape, seed=19)], torch_fn=tmod)


def test_max_pool_module_return_indices():
    emod, tmod = enn.MaxPool2d(2, return_indices=True), tnn.MaxPool2d(2, return_indices=True)
    check_op(emod, [rand(2, 3, 6, 6, seed=20)], torch_fn=tmod)


def test_reprs():
    assert repr(enn.MaxPool2d(2)) == (
        "MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)"
    )
    assert repr(enn.AvgPool2d(2)) == "AvgPool2d(kernel_size=2, stride=2, padding=0)"
    assert repr(enn.AvgPool1d(2)) == repr(tnn.AvgPool1d(2))
    assert repr(enn.AdaptiveAvgPool2d((5, None))) == repr(tnn.AdaptiveAvgPool2d((5, None)))
    assert repr(enn.MaxPool1d(3, 1, 1)) == repr(tnn.MaxPool1d(3, 1, 1))


# --------------------------------------------------------------------------- errors
def test_error_messages():
    with pytest.raises(
        RuntimeError,
        match=r"MaxPool2d: expected a 3D or 4D input \(C, H, W\) "
        r"or \(N, C, H, W\), got shape \(8, 32\)",
    ):
        enn.MaxPool2d(2)(ember.zeros(8, 32))
    with pytest.raises(RuntimeError, match=r"avg_pool1d: expected a 2D or 3D input"):
        F.avg_pool1d(ember.zeros(8), 2)
    with pytest.raises(
        RuntimeError,
        match=r"AdaptiveAvgPool2d: expected a 3D or 4D input .* "
        r"got shape \(8,\)",
    ):
        enn.AdaptiveAvgPool2d(2)(ember.zeros(8))
    with pytest.raises(
        RuntimeError,
        match=r"max_pool2d: pad should be at most half of effective "
        r"kernel size, but got pad=2, kernel_size=2",
    ):
        F.max_pool2d(ember.zeros(1, 1, 4, 4), 2, padding=2)
    with pytest.raises(
        RuntimeError,
        match=r"MaxPool2d: input of shape \(1, 1, 1, 1\) is too "
        r"small for kernel_size \(2, 2\)",
    ):
        enn.MaxPool2d(2)(ember.zeros(1, 1, 1, 1))
    with pytest.raises(RuntimeError, match="stride must be greater than zero"):
        F.max_pool2d(ember.zeros(1, 1, 4, 4), 2, stride=0)
    with pytest.raises(RuntimeError, match="divisor must be not zero"):
        F.avg_pool2d(ember.zeros(1, 1, 4, 4), 2, divisor_override=0)
    with pytest.raises(RuntimeError, match="non-zero channel and spatial sizes"):
        F.max_pool2d(ember.zeros(1, 0, 4, 4), 2)


def test_max_pool_non_finite_gradient_goes_to_the_winner_only():
    x = rand(1, 2, 4, 4, seed=21)
    g = np.ones((1, 2, 2, 2), np.float32)
    g[0, 0, 0, 0] = np.inf
    xe, xt = ember.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    F.max_pool2d(xe, 2).backward(ember.tensor(g))
    TF.max_pool2d(xt, 2).backward(torch.tensor(g))
    np.testing.assert_array_equal(_np(xe.grad), _np(xt.grad))
