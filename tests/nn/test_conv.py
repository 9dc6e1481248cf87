"""Convolutions against torch (forward and every gradient over a grid of stride, padding,
dilation, groups and bias), against a direct-loop reference, gradcheck / gradgradcheck in
float64, the Conv modules (weights copied from torch, padding modes, init, repr, state dict)
and the error messages."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import ember
import ember.nn as enn
import ember.nn.functional as F
from ember.nn.functional import conv as conv_mod
from tests.oracle import check_op, gradcheck_op, rand, torch

tnn = torch.nn
TF = torch.nn.functional
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")


def _np(t):
    return t.detach().numpy() if hasattr(t, "detach") else np.asarray(t)


def close(a, b, atol=1e-4, rtol=1e-4, what=""):
    np.testing.assert_allclose(
        np.asarray(_np(a), np.float64),
        np.asarray(_np(b), np.float64),
        atol=atol,
        rtol=rtol,
        err_msg=what,
    )


# ------------------------------------------------------------- direct-loop reference
def ref_conv2d(x, w, b, stride, pads, dilation, groups):
    """A loop over output pixels and groups in float64: slow and obviously correct."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    (pt, pb), (pl, pr) = pads
    xp = np.zeros((n, c, h + pt + pb, wd + pl + pr))
    xp[:, :, pt : pt + h, pl : pl + wd] = x
    sh, sw = stride
    dh, dw = dilation
    oh = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    og = o // groups
    out = np.zeros((n, o, oh, ow))
    for i in range(oh):
        for j in range(ow):
            patch = xp[
                :,
                :,
                i * sh : i * sh + dh * (kh - 1) + 1 : dh,
                j * sw : j * sw + dw * (kw - 1) + 1 : dw,
            ]
            for g in range(groups):
                p = patch[:, g * cg : (g + 1) * cg]
                out[:, g * og : (g + 1) * og, i, j] = np.einsum(
                    "nckl,ockl->no", p, w[g * og : (g + 1) * og]
                )
    if b is not None:
        out += np.asarray(b, np.float64)[None, :, None, None]
    return out


def test_reference_agrees_with_torch():
    x, w, b = rand(2, 4, 7, 6, seed=1), rand(6, 2, 3, 2, seed=2), rand(6, seed=3)
    ref = ref_conv2d(x, w, b, (2, 1), ((1, 1), (0, 0)), (1, 2), 2)
    t = TF.conv2d(
        torch.tensor(x),
        torch.tensor(w),
        torch.tensor(b),
        stride=(2, 1),
        padding=(1, 0),
        dilation=(1, 2),
        groups=2,
    )
    close(ref, t, 1e-4)


@pytest.mark.parametrize(
    "stride,padding,dilation,groups",
    [
        (1, 0, 1, 1),
        (2, 1, 1, 1),
        ((2, 1), (1, 2), (2, 1), 2),
        (1, "same", 2, 4),
        (3, 2, 1, 4),
    ],
)
def test_conv2d_matches_direct_loop_reference(stride, padding, dilation, groups):
    x, w, b = rand(2, 4, 9, 8, seed=4), rand(8, 4 // groups, 3, 3, seed=5), rand(8, seed=6)
    out = F.conv2d(
        ember.tensor(x), ember.tensor(w), ember.tensor(b), stride, padding, dilation, groups
    )
    st = conv_mod.ntuple(stride, 2, "t", "stride")
    dl = conv_mod.ntuple(dilation, 2, "t", "dilation")
    pads = (
        conv_mod.same_pads((3, 3), dl)
        if padding == "same"
        else tuple((p, p) for p in conv_mod.ntuple(padding, 2, "t", "padding"))
    )
    close(out, ref_conv2d(x, w, b, st, pads, dl, groups), 1e-4)


# ------------------------------------------------------------------ conv2d vs torch
GRID = [
    (s, p, d, g, bias)
    for s, p, d, g, bias in itertools.product(
        [1, 2, (2, 1)], [0, 1, (1, 2), "same", "valid"], [1, 2], [1, 2], [True, False]
    )
    if not (p == "same" and s != 1)
]


@pytest.mark.parametrize("stride,padding,dilation,groups,bias", GRID)
def test_conv2d_grid_matches_torch(stride, padding, dilation, groups, bias):
    x = rand(2, 4, 9, 8, seed=7)
    w = rand(6, 4 // groups, 3, 2, seed=8)
    inputs = [x, w] + ([rand(6, seed=9)] if bias else [])

    def fn(x, w, b=None, lib=F):
        return lib.conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups)

    check_op(fn, inputs, torch_fn=lambda *a: fn(*a, lib=TF), atol=1e-4)


@pytest.mark.parametrize("mult", [1, 2])
@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 1), (1, "same")])
def test_depthwise_conv2d_matches_torch(mult, stride, padding):
    c = 5
    x, w, b = rand(3, c, 8, 7, seed=10), rand(c * mult, 1, 3, 3, seed=11), rand(c * mult, seed=12)
    check_op(
        lambda x, w, b: F.conv2d(x, w, b, stride, padding, groups=c),
        [x, w, b],
        torch_fn=lambda x, w, b: TF.conv2d(x, w, b, stride, padding, groups=c),
        atol=1e-4,
    )


@pytest.mark.parametrize("padding", [0, 1, "same"])
def test_unbatched_conv2d_matches_torch(padding):
    check_op(
        lambda x, w, b, lib=F: lib.conv2d(x, w, b, padding=padding),
        [rand(3, 6, 5, seed=13), rand(4, 3, 3, 3, seed=14), rand(4, seed=15)],
        torch_fn=lambda x, w, b: TF.conv2d(x, w, b, padding=padding),
        atol=1e-4,
    )


def test_conv2d_noncontiguous_inputs_and_1x1_and_empty_batch():
    check_op(
        lambda x, w: F.conv2d(x, w, padding=1),
        [rand(4, 3, 6, 6, seed=16), rand(5, 3, 3, 3, seed=17)],
        torch_fn=lambda x, w: TF.conv2d(x, w, padding=1),
        noncontiguous=True,
        atol=1e-4,
    )
    check_op(
        lambda x, w: F.conv2d(x, w, stride=2),
        [rand(2, 3, 5, 5, seed=18), rand(7, 3, 1, 1, seed=19)],
        torch_fn=lambda x, w: TF.conv2d(x, w, stride=2),
        atol=1e-4,
    )
    out = F.conv2d(ember.zeros(0, 3, 5, 5), ember.ones(4, 3, 3, 3))
    assert tuple(out.shape) == (0, 4, 3, 3)


def test_conv2d_float64_and_weight_only_gradient():
    check_op(
        lambda x, w: F.conv2d(x, w, padding=1, stride=2),
        [rand(2, 3, 6, 5, seed=20, dtype=np.float64), rand(4, 3, 3, 3, seed=21, dtype=np.float64)],
        torch_fn=lambda x, w: TF.conv2d(x, w, padding=1, stride=2),
        atol=1e-10,
    )
    x = ember.tensor(rand(2, 3, 6, 6, seed=22))
    w = ember.tensor(rand(4, 3, 3, 3, seed=23), requires_grad=True)
    F.conv2d(x, w, padding=1).sum().backward()
    tw = torch.tensor(rand(4, 3, 3, 3, seed=23), requires_grad=True)
    TF.conv2d(torch.tensor(rand(2, 3, 6, 6, seed=22)), tw, padding=1).sum().backward()
    close(w.grad, tw.grad)
    assert x.grad is None


def test_weight_gradient_without_saved_columns(monkeypatch):
    """Past SAVE_COLS_BYTES backward rebuilds the columns from x: same gradients."""
    monkeypatch.setattr(conv_mod, "SAVE_COLS_BYTES", 0)
    check_op(
        lambda x, w, b, lib=F: lib.conv2d(x, w, b, stride=2, padding=1, groups=2),
        [rand(2, 4, 7, 7, seed=24), rand(6, 2, 3, 3, seed=25), rand(6, seed=26)],
        torch_fn=lambda x, w, b: TF.conv2d(x, w, b, stride=2, padding=1, groups=2),
        atol=1e-4,
    )


@pytest.mark.parametrize("small_gw", [0, 10**9])
def test_weight_gradient_both_gemm_forms(monkeypatch, small_gw):
    """One big GEMM, or the per-image stacked matmul used for tiny weight gradients."""
    from ember.nn.functional import _im2col

    monkeypatch.setattr(_im2col, "SMALL_GW", small_gw)
    check_op(
        lambda x, w, lib=F: lib.conv2d(x, w, stride=2, padding=1),
        [rand(6, 3, 7, 7, seed=56), rand(8, 3, 3, 3, seed=57)],
        torch_fn=lambda x, w: TF.conv2d(x, w, stride=2, padding=1),
        atol=1e-4,
    )


# ------------------------------------------------------------------- conv1d / conv3d
@pytest.mark.parametrize(
    "stride,padding,dilation,groups,bias",
    [
        (1, 0, 1, 1, True),
        (2, 1, 1, 1, False),
        (1, "same", 2, 2, True),
        (3, 2, 2, 4, True),
        (1, "valid", 1, 4, False),
        (2, (3,), (1,), 1, True),
    ],
)
def test_conv1d_matches_torch(stride, padding, dilation, groups, bias):
    inputs = [rand(3, 4, 11, seed=27), rand(8, 4 // groups, 3, seed=28)]
    inputs += [rand(8, seed=29)] if bias else []

    def fn(x, w, b=None, lib=F):
        return lib.conv1d(x, w, b, stride, padding, dilation, groups)

    check_op(fn, inputs, torch_fn=lambda *a: fn(*a, lib=TF), atol=1e-4)
    check_op(fn, [inputs[0][0]] + inputs[1:], torch_fn=lambda *a: fn(*a, lib=TF), atol=1e-4)


def test_conv3d_matches_torch():
    check_op(
        lambda x, w, b, lib=F: lib.conv3d(x, w, b, stride=(1, 2, 1), padding=1, groups=2),
        [rand(2, 4, 5, 6, 4, seed=30), rand(4, 2, 3, 3, 2, seed=31), rand(4, seed=32)],
        torch_fn=lambda x, w, b: TF.conv3d(x, w, b, stride=(1, 2, 1), padding=1, groups=2),
        atol=1e-4,
    )


# ------------------------------------------------------------------ conv_transpose
CT_GRID = [
    (s, p, op, g, d, bias)
    for s, p, op, g, d, bias in itertools.product(
        [1, 2, (2, 3)], [0, 1], [0, 1], [1, 2], [1, 2], [True, False]
    )
    if all(o < si or o < d for o, si in zip((op, op), conv_mod.ntuple(s, 2, "t", "s")))
]


@pytest.mark.parametrize("stride,padding,output_padding,groups,dilation,bias", CT_GRID)
def test_conv_transpose2d_grid_matches_torch(
    stride, padding, output_padding, groups, dilation, bias
):
    inputs = [rand(2, 4, 5, 4, seed=33), rand(4, 6 // groups, 3, 2, seed=34)]
    inputs += [rand(6, seed=35)] if bias else []

    def fn(x, w, b=None, lib=F):
        return lib.conv_transpose2d(x, w, b, stride, padding, output_padding, groups, dilation)

    check_op(fn, inputs, torch_fn=lambda *a: fn(*a, lib=TF), atol=1e-4)


def test_conv_transpose_unbatched_and_1d_match_torch():
    check_op(
        lambda x, w, b, lib=F: lib.conv_transpose2d(x, w, b, stride=2, padding=1),
        [rand(3, 4, 5, seed=36), rand(3, 2, 3, 3, seed=37), rand(2, seed=38)],
        torch_fn=lambda x, w, b: TF.conv_transpose2d(x, w, b, stride=2, padding=1),
        atol=1e-4,
    )
    check_op(
        lambda x, w, lib=F: lib.conv_transpose1d(x, w, None, 3, 1, 2, 2, 1),
        [rand(2, 4, 6, seed=39), rand(4, 3, 4, seed=40)],
        torch_fn=lambda x, w: TF.conv_transpose1d(x, w, None, 3, 1, 2, 2, 1),
        atol=1e-4,
    )


# ----------------------------------------------------------- gradcheck / double backward
@pytest.mark.parametrize(
    "kw",
    [
        dict(stride=2, padding=1),
        dict(padding="same", dilation=2),
        dict(groups=2, stride=(1, 2)),
    ],
)
def test_conv2d_gradcheck_and_gradgradcheck(kw):
    inputs = [
        rand(2, 4, 5, 5, seed=41),
        rand(4, 4 // kw.get("groups", 1), 3, 2, seed=42),
        rand(4, seed=43),
    ]
    fn = lambda x, w, b: F.conv2d(x, w, b, **kw)  # noqa: E731
    gradcheck_op(fn, inputs)
    args = [ember.tensor(a.astype(np.float64), requires_grad=True) for a in inputs]
    assert ember.autograd.gradgradcheck(fn, args)


def test_conv_transpose2d_gradcheck_and_gradgradcheck():
    inputs = [rand(2, 4, 3, 4, seed=44), rand(4, 2, 3, 3, seed=45), rand(4, seed=46)]
    fn = lambda x, w, b: F.conv_transpose2d(x, w, b, 2, 1, 1, 2)  # noqa: E731
    gradcheck_op(fn, inputs)
    args = [ember.tensor(a.astype(np.float64), requires_grad=True) for a in inputs]
    assert ember.autograd.gradgradcheck(fn, args)


def test_double_backward_matches_torch():
    """A gradient penalty: d/d(x, w) of ||d conv / dx||^2, against torch."""
    x, w = rand(2, 3, 6, 6, seed=47), rand(4, 3, 3, 3, seed=48)
    res = []
    for lib, mk in (
        (F, lambda a: ember.tensor(a, requires_grad=True)),
        (TF, lambda a: torch.tensor(a, requires_grad=True)),
    ):
        xt, wt = mk(x), mk(w)
        y = lib.conv2d(xt, wt, stride=2, padding=1)
        gen = ember.autograd.grad if lib is F else torch.autograd.grad
        (gx,) = gen((y * y).sum(), [xt], create_graph=True)
        ((gx * gx).sum() + (y**3).sum()).backward()
        res.append((xt.grad, wt.grad))
    close(res[0][0], res[1][0], 1e-3)
    close(res[0][1], res[1][1], 1e-3)


# ------------------------------------------------------------------------- modules
def module_matches(emod, tmod, x, atol=1e-4):
    """Weights from torch into ember, then forward and every gradient in train and eval."""
    emod.load_state_dict({k: v.detach().numpy().copy() for k, v in tmod.state_dict().items()})
    assert list(emod.state_dict()) == list(tmod.state_dict())
    for mode in ("train", "eval"):
        getattr(emod, mode)()
        getattr(tmod, mode)()
        xe, xt = ember.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        ye, yt = emod(xe), tmod(xt)
        close(ye, yt, atol, what=f"{mode}: forward")
        g = np.random.default_rng(0).standard_normal(tuple(yt.shape)).astype(np.float32)
        ye.backward(ember.tensor(g))
        yt.backward(torch.tensor(g))
        close(xe.grad, xt.grad, atol, what=f"{mode}: input grad")
        for (name, pe), (_, pt) in zip(emod.named_parameters(), tmod.named_parameters()):
            close(pe.grad, pt.grad, atol, what=f"{mode}: grad of {name}")
            pe.grad = pt.grad = None


@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(padding=1, bias=False),
        dict(stride=2, padding=(1, 2), dilation=(2, 1)),
        dict(padding="same", groups=2),
        dict(padding="same", kernel_size=(4, 2), dilation=1),
        dict(padding=1, padding_mode="reflect"),
        dict(padding=(2, 1), padding_mode="replicate"),
        dict(padding=2, padding_mode="circular", stride=2),
        dict(padding="same", padding_mode="reflect"),
    ],
)
def test_conv2d_module_matches_torch(kw):
    kw = dict(kw)
    ks = kw.pop("kernel_size", 3)
    tmod, emod = tnn.Conv2d(4, 6, ks, **kw), enn.Conv2d(4, 6, ks, **kw)
    module_matches(emod, tmod, rand(2, 4, 8, 7, seed=49))
    module_matches(emod, tmod, rand(4, 8, 7, seed=50))  # unbatched
    assert repr(emod) == repr(tmod)


@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(padding="same", dilation=2, groups=3),
        dict(stride=2, padding=1, padding_mode="circular"),
    ],
)
def test_conv1d_module_matches_torch(kw):
    tmod, emod = tnn.Conv1d(3, 6, 3, **kw), enn.Conv1d(3, 6, 3, **kw)
    module_matches(emod, tmod, rand(2, 3, 10, seed=51))
    module_matches(emod, tmod, rand(3, 10, seed=52))
    assert repr(emod) == repr(tmod)


@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(stride=2, output_padding=1, bias=False),
        dict(stride=(2, 3), padding=1, groups=2, dilation=2),
    ],
)
def test_conv_transpose2d_module_matches_torch(kw):
    tmod, emod = tnn.ConvTranspose2d(4, 6, 3, **kw), enn.ConvTranspose2d(4, 6, 3, **kw)
    module_matches(emod, tmod, rand(2, 4, 5, 4, seed=53))
    module_matches(emod, tmod, rand(4, 5, 4, seed=54))
    assert repr(emod) == repr(tmod)


def test_conv_transpose2d_output_size():
    tmod, emod = (
        tnn.ConvTranspose2d(3, 2, 3, stride=2, padding=1),
        enn.ConvTranspose2d(3, 2, 3, stride=2, padding=1),
    )
    emod.load_state_dict({k: v.detach().numpy().copy() for k, v in tmod.state_dict().items()})
    x = rand(1, 3, 4, 5, seed=55)
    for size in [(8, 10), (1, 2, 7, 9), (8, 9)]:
        ye = emod(ember.tensor(x), output_size=size)
        yt = tmod(torch.tensor(x), output_size=size)
        close(ye, yt)
    with pytest.raises(
        ValueError,
        match=r"requested an output size of \[10, 10\], but valid "
        r"sizes range from \[7, 9\] to \[8, 10\]",
    ):
        emod(ember.tensor(x), output_size=(10, 10))


def test_reprs_match_torch():
    cases = [
        ((3, 32, 3), dict(padding=1, bias=False)),
        ((3, 6, (3, 5)), dict(stride=(2, 1))),
        ((4, 8, 3), dict(padding="valid", dilation=2, groups=4, padding_mode="replicate")),
        ((4, 8, 3), dict(padding="same")),
    ]
    for args, kw in cases:
        assert repr(enn.Conv2d(*args, **kw)) == repr(tnn.Conv2d(*args, **kw))
    assert repr(enn.Conv2d(3, 32, 3, padding=1, bias=False)) == (
        "Conv2d(3, 32, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)"
    )
    assert repr(enn.ConvTranspose1d(2, 4, 3, stride=2)) == repr(
        tnn.ConvTranspose1d(2, 4, 3, stride=2)
    )
    assert repr(enn.Conv3d(2, 4, 3)) == repr(tnn.Conv3d(2, 4, 3))


@pytest.mark.parametrize(
    "cls,args",
    [
        (enn.Conv2d, (16, 32, 3)),
        (enn.Conv1d, (64, 8, 5)),
        (enn.ConvTranspose2d, (32, 16, 3)),
        (enn.Conv2d, (16, 32, 3, 1, 0, 1, 4)),
    ],
)
def test_default_init_statistics(cls, args):
    """kaiming_uniform_(a=sqrt(5)) is U(-1/sqrt(fan_in), 1/sqrt(fan_in)), bias likewise."""
    m = cls(*args)
    w = m.weight.detach().numpy()
    fan_in = w.shape[1] * int(np.prod(w.shape[2:]))
    bound = 1 / math.sqrt(fan_in)
    assert np.abs(w).max() <= bound
    assert np.abs(w).max() > 0.95 * bound
    assert abs(w.std() - bound / math.sqrt(3)) < 0.05 * bound
    assert abs(w.mean()) < 0.05 * bound
    b = m.bias.detach().numpy()
    assert np.abs(b).max() <= bound and b.std() > 0
    assert w.dtype == np.float32


def test_module_dtype_and_parameters():
    m = enn.Conv2d(2, 4, 3, dtype=ember.float64, bias=False)
    assert m.weight.dtype == ember.float64 and m.bias is None
    assert [n for n, _ in m.named_parameters()] == ["weight"]
    assert tuple(enn.ConvTranspose2d(4, 6, 3, groups=2).weight.shape) == (4, 3, 3, 3)


# --------------------------------------------------------------------------- errors
def test_error_messages_name_the_layer_and_shapes():
    conv = enn.Conv2d(3, 32, 3)
    with pytest.raises(
        RuntimeError,
        match=r"Conv2d: expected a 3D or 4D input \(C, H, W\) or "
        r"\(N, C, H, W\), got shape \(8, 32\)",
    ):
        conv(ember.zeros(8, 32))
    with pytest.raises(
        RuntimeError,
        match=r"Conv2d: expected input with 3 channels, got "
        r"input of shape \(8, 4, 32, 32\)",
    ):
        conv(ember.zeros(8, 4, 32, 32))
    with pytest.raises(
        RuntimeError,
        match=r"Conv2d: kernel size \(3, 3\) can't be greater "
        r"than the padded input size \(2, 2\)",
    ):
        conv(ember.zeros(1, 3, 2, 2))
    with pytest.raises(RuntimeError, match=r"Conv2d: expected input with 3 channels"):
        enn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")(ember.zeros(1, 5, 6, 6))
    with pytest.raises(
        RuntimeError,
        match=r"Conv1d: expected a 2D or 3D input \(C, L\) or "
        r"\(N, C, L\), got shape \(2, 3, 4, 5\)",
    ):
        enn.Conv1d(3, 4, 3)(ember.zeros(2, 3, 4, 5))
    with pytest.raises(
        RuntimeError,
        match=r"ConvTranspose2d: expected input with 4 channels, "
        r"got input of shape \(1, 3, 5, 5\)",
    ):
        enn.ConvTranspose2d(4, 2, 3)(ember.zeros(1, 3, 5, 5))


def test_functional_errors():
    x, w = ember.zeros(1, 4, 5, 5), ember.zeros(6, 2, 3, 3)
    with pytest.raises(
        RuntimeError,
        match=r"conv2d: expected input with 6 channels, got input "
        r"of shape \(1, 4, 5, 5\) \(groups=3",
    ):
        F.conv2d(x, ember.zeros(6, 2, 3, 3), groups=3)
    with pytest.raises(
        RuntimeError,
        match=r"conv2d: expected weight of shape \(4, 2, 3, 3\) to "
        r"have out channels divisible by groups=3",
    ):
        F.conv2d(ember.zeros(1, 6, 5, 5), ember.zeros(4, 2, 3, 3), groups=3)
    with pytest.raises(RuntimeError, match=r"conv2d: expected bias of shape \(6,\), got \(5,\)"):
        F.conv2d(x, w, ember.zeros(5), groups=2)
    with pytest.raises(RuntimeError, match="padding='same' is not supported for strided"):
        F.conv2d(x, w, stride=2, padding="same", groups=2)
    with pytest.raises(RuntimeError, match="invalid padding string 'full'"):
        F.conv2d(x, w, padding="full", groups=2)
    with pytest.raises(
        RuntimeError,
        match=r"input type \(ember.float64\) and weight type "
        r"\(ember.float32\) should be the same",
    ):
        F.conv2d(ember.zeros(1, 4, 5, 5, dtype=ember.float64), w, groups=2)
    with pytest.raises(RuntimeError, match="expected a 4D weight"):
        F.conv2d(x, ember.zeros(6, 4, 3))
    with pytest.raises(RuntimeError, match="non-positive stride"):
        F.conv2d(x, w, stride=0, groups=2)
    with pytest.raises(
        RuntimeError, match="output padding must be smaller than either stride or dilation"
    ):
        F.conv_transpose2d(ember.zeros(1, 2, 3, 3), ember.zeros(2, 2, 3, 3), output_padding=1)
    with pytest.raises(ValueError, match="in_channels must be divisible by groups"):
        enn.Conv2d(3, 6, 3, groups=2)
    with pytest.raises(ValueError, match="padding='same' is not supported for strided"):
        enn.Conv2d(3, 6, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        enn.Conv2d(3, 6, 3, padding_mode="mirror")
    with pytest.raises(
        ValueError, match='Only "zeros" padding mode is supported for ConvTranspose2d'
    ):
        enn.ConvTranspose2d(3, 6, 3, padding_mode="reflect")


# ------------------------------------------------------------- column buffer recycling
def test_retain_graph_keeps_columns_and_pool_reuse_is_safe():
    """Saved columns go back to the workspace pool only when autograd releases the node: a
    retained graph backpropagates twice with intact columns, and a second forward that
    reuses the pooled buffer does not disturb the first graph."""
    from ember.nn.functional import _workspace

    old = _workspace.MIN_BYTES
    _workspace.MIN_BYTES = 0  # pool even these small buffers
    try:
        x = ember.tensor(rand(2, 3, 8, 8, seed=60))
        w = ember.tensor(rand(4, 3, 3, 3, seed=61), requires_grad=True)
        tw = torch.tensor(rand(4, 3, 3, 3, seed=61), requires_grad=True)
        ty = TF.conv2d(torch.tensor(rand(2, 3, 8, 8, seed=60)), tw, padding=1)
        (ty * ty).sum().backward()
        y = F.conv2d(x, w, padding=1)
        loss = (y * y).sum()
        loss.backward(retain_graph=True)
        first = _np(w.grad).copy()
        close(first, tw.grad)
        # another graph takes (and releases) buffers of the same size in between
        for _ in range(2):
            F.conv2d(ember.tensor(rand(2, 3, 8, 8, seed=62)), w, padding=1).sum().backward()
        w.grad = None
        loss.backward()
        close(w.grad, first)
    finally:
        _workspace.MIN_BYTES = old
        _workspace.clear()


def test_workspace_take_and_give():
    from ember.nn.functional import _workspace

    _workspace.clear()
    a = _workspace.take(np, (1024, 1100), np.float32)
    root = a.base
    _workspace.give(a.reshape(-1)[:10])  # any view finds its root
    b = _workspace.take(np, (1100, 1024), np.float32)
    assert b.base is root
    _workspace.give(np.empty(5))  # small or foreign arrays are ignored
    _workspace.give(np.zeros((2048, 2048), np.float32))
    assert _workspace._idle[0] == 0
    _workspace.clear()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_stays_half(dtype):
    x, w, b = rand(2, 3, 6, 6, seed=63), rand(4, 3, 3, 3, seed=64), rand(4, seed=65)
    ref = F.conv2d(ember.tensor(x), ember.tensor(w), ember.tensor(b), padding=1).numpy()
    dt = getattr(ember, dtype)
    xs = [ember.tensor(a).to(dt).requires_grad_() for a in (x, w, b)]
    y = F.conv2d(*xs, padding=1)
    y.sum().backward()
    assert y.dtype == dt and all(t.grad.dtype == dt for t in xs)
    np.testing.assert_allclose(y.float().detach().numpy(), ref, atol=0.3, rtol=0.05)
