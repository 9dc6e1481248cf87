"""F.interpolate and Upsample / UpsamplingNearest2d / UpsamplingBilinear2d against torch:
forward and input gradient over modes, 1d/2d/3d inputs, sizes vs scale factors (up, down,
non-integer, per-dim), recompute_scale_factor, align_corners True/False, float64 and
non-contiguous inputs; float64 gradcheck and double backward; reprs; error messages."""

from __future__ import annotations

import numpy as np
import pytest

import ember
import ember.nn as enn
import ember.nn.functional as F
from tests.oracle import check_op, cpu_only, gradcheck_op, rand, torch

tnn = torch.nn
TF = torch.nn.functional

RESIZES = [
    dict(scale_factor=2),
    dict(scale_factor=3.0),
    dict(scale_factor=0.5),
    dict(scale_factor=0.6),
    dict(scale_factor=1.7),
    dict(scale_factor=1.2),  # same size out: torch still maps with the given scale
    dict(scale_factor=1.2, recompute_scale_factor=True),
    dict(scale_factor=2.5, recompute_scale_factor=False),
    dict(scale_factor=2.1),  # doubles a size of 3 (nearest_idx's i // 2 shortcut)
    dict(size=7),
    dict(size=1),
    dict(size=4),  # one spatial dim keeps its size
    dict(size=3),
]
PER_DIM = {
    1: [dict(size=(9,)), dict(scale_factor=(1.5,))],
    2: [dict(size=(3, 9)), dict(scale_factor=(2.3, 0.5)), dict(size=(1, 8))],
    3: [dict(size=(3, 7, 4)), dict(scale_factor=(1.5, 2, 0.7))],
}
SHAPES = {1: (2, 3, 4), 2: (2, 3, 5, 4), 3: (2, 2, 3, 4, 5)}
LINEAR = {1: "linear", 2: "bilinear", 3: "trilinear"}


def interp(t, **kw):
    if isinstance(t, ember.Tensor):
        return F.interpolate(t, **kw)
    if kw.get("mode") == "nearest" and t.ndim != 4:
        return torch_nearest_via_2d(t, **kw)
    return TF.interpolate(t, **kw)


def torch_nearest_via_2d(t, size=None, scale_factor=None, recompute_scale_factor=None, **_):
    """torch 2.13's CPU 'nearest' is not consistent with itself when a scale_factor gives an
    unchanged or doubled size: its backward kernels and its 2-D forward on narrow inputs take
    ATen's nearest_idx shortcuts (a copy, i // 2), its 1-D/3-D forward and its 2-D forward
    on wide inputs (~127+) use floor(i / scale); e.g. length 4 with scale_factor=1.2 gives
    [0, 0, 1, 2] forward but an identity gradient. Ember follows nearest_idx everywhere (its
    forward and gradient agree), so the oracle for 1-D/3-D runs torch's 2-D kernel, one or
    two spatial dims at a time, on the narrow shapes these tests use."""
    nd = t.ndim - 2
    sizes = [size] * nd if isinstance(size, int) else list(size or [None] * nd)
    if isinstance(scale_factor, (int, float)):
        scales = [scale_factor] * nd
    else:
        scales = list(scale_factor or [None] * nd)
    if recompute_scale_factor:
        sizes, scales = [int(n * s) for n, s in zip(t.shape[2:], scales)], [None] * nd

    def two_d(x, pair_sizes, pair_scales):  # x: (B, C, a, b)
        if pair_sizes[0] is not None:
            return TF.interpolate(x, size=tuple(pair_sizes))
        return TF.interpolate(x, scale_factor=tuple(float(s) for s in pair_scales))

    n, c = t.shape[:2]
    if nd == 1:
        one = [1] if sizes[0] is not None else [None]
        out = two_d(t[:, :, None, :], one + sizes, [1.0] + scales)
        return out[:, :, 0, :]
    d, h, w = t.shape[2:]  # (H, W) with D folded into the batch, then D alone
    hw = two_d(t.permute(0, 2, 1, 3, 4).reshape(n * d, c, h, w), sizes[1:], scales[1:])
    oh, ow = hw.shape[2:]
    hw = hw.reshape(n, d, c, oh * ow).permute(0, 2, 1, 3)  # (N, C, D, OH*OW)
    one = [oh * ow] if sizes[0] is not None else [None]
    out = two_d(hw, sizes[:1] + one, scales[:1] + [1.0])
    return out.reshape(n, c, -1, oh, ow)


def cases():
    for nd in (1, 2, 3):
        for kw in RESIZES + PER_DIM[nd]:
            for mode in ("nearest", "nearest-exact"):
                yield nd, dict(kw, mode=mode)
            for ac in (False, True):
                yield nd, dict(kw, mode=LINEAR[nd], align_corners=ac)
            if "recompute_scale_factor" not in kw:
                yield nd, dict(kw, mode="area")


@pytest.mark.parametrize("nd,kw", list(cases()), ids=str)
def test_interpolate_matches_torch(nd, kw):
    check_op(lambda t: interp(t, **kw), [rand(*SHAPES[nd], seed=nd)])


def test_nearest_follows_aten_nearest_idx():
    """Unchanged size: a copy; doubled size: i // 2 (also when the given scale is not 2)."""
    x = ember.arange(3.0).reshape(1, 1, 3)
    np.testing.assert_array_equal(
        F.interpolate(x, scale_factor=2.1).numpy()[0, 0], [0, 0, 1, 1, 2, 2]
    )
    y = ember.arange(4.0).reshape(1, 1, 4)
    np.testing.assert_array_equal(F.interpolate(y, scale_factor=1.2).numpy()[0, 0], [0, 1, 2, 3])
    np.testing.assert_array_equal(F.interpolate(y, scale_factor=0.6).numpy()[0, 0], [0, 1])


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_interpolate_float64_noncontiguous_and_empty_batch(mode):
    x = rand(3, 2, 4, 5, seed=4)
    check_op(lambda t: interp(t, size=(6, 3), mode=mode), [x.astype(np.float64)], atol=1e-12)
    check_op(lambda t: interp(t, scale_factor=1.5, mode=mode), [x], noncontiguous=True)
    out = F.interpolate(ember.zeros(0, 2, 3, 3), scale_factor=2, mode=mode)
    assert tuple(out.shape) == (0, 2, 6, 6)


def test_interpolate_keeps_bfloat16_and_copies_an_identity_resize():
    x = ember.randn(1, 2, 3, 3).to(ember.bfloat16)
    assert F.interpolate(x, scale_factor=2, mode="bilinear").dtype == ember.bfloat16
    y = ember.randn(1, 2, 3, 3, requires_grad=True)
    same = F.interpolate(y, size=3)
    assert same is not y and same.grad_fn is not None
    np.testing.assert_array_equal(same.detach().numpy(), y.detach().numpy())
    ints = ember.arange(9).reshape(1, 1, 3, 3)
    got = F.interpolate(ints, scale_factor=2).numpy()
    assert got.dtype == np.int64
    np.testing.assert_array_equal(
        got, np.arange(9).reshape(3, 3).repeat(2, 0).repeat(2, 1)[None, None]
    )


@pytest.mark.parametrize("low", ["float16", "bfloat16"])
@pytest.mark.parametrize(
    "shape, mode",
    [((2, 3, 9), "linear"), ((2, 3, 6, 7), "bilinear"), ((1, 2, 3, 4, 5), "trilinear")],
)
def test_half_linear_modes_accumulate_in_float32(low, shape, mode):
    """Half inputs are resampled in float32 and rounded once. torch's CPU bilinear kernel
    does the same (bitwise equal); its linear and trilinear kernels compute in the half dtype,
    which is less accurate, so those are compared with torch's float32 result rounded."""
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    tlow, elow = getattr(torch, low), getattr(ember, low)
    xt = torch.tensor(x).to(tlow)
    rounded = TF.interpolate(xt.float(), scale_factor=1.7, mode=mode).to(tlow).float().numpy()
    xe = ember.tensor(x).to(elow).requires_grad_()
    got = F.interpolate(xe, scale_factor=1.7, mode=mode)
    assert got.dtype == elow
    got32 = got.detach().float().numpy()
    # separable float32 passes vs torch's one weighted sum: at most a rare 1-ulp tie-break
    np.testing.assert_allclose(got32, rounded, rtol=2.0 ** (-7 if low == "bfloat16" else -10))
    assert (got32 != rounded).mean() < 0.01
    if mode == "bilinear":
        want = TF.interpolate(xt, scale_factor=1.7, mode=mode).float().numpy()
        np.testing.assert_array_equal(rounded, want)
    got.sum().backward()
    assert xe.grad.dtype == elow and xe.grad.shape == xe.shape


def test_interpolate_gradcheck_and_double_backward():
    x = rand(1, 2, 3, 4, seed=5)
    gradcheck_op(lambda t: F.interpolate(t, size=(5, 3), mode="bilinear"), [x])
    gradcheck_op(
        lambda t: F.interpolate(t, scale_factor=1.5, mode="bilinear", align_corners=True), [x]
    )
    gradcheck_op(lambda t: F.interpolate(t, size=(5, 7), mode="nearest"), [x])
    gradcheck_op(lambda t: F.interpolate(t, scale_factor=(2, 3)), [x])  # the repeat path
    gradcheck_op(lambda t: F.interpolate(t, size=4, mode="linear"), [rand(2, 2, 3)])
    gradcheck_op(
        lambda t: F.interpolate(t, size=(2, 3, 2), mode="trilinear"), [rand(1, 1, 3, 2, 3)]
    )
    t64 = ember.tensor(x.astype(np.float64), requires_grad=True)
    assert ember.autograd.gradgradcheck(lambda t: F.interpolate(t, scale_factor=2) ** 2, [t64])
    assert ember.autograd.gradgradcheck(
        lambda t: F.interpolate(t, size=(5, 3), mode="bilinear") ** 2, [t64]
    )


@cpu_only("the dense products are a NumPy path")
@pytest.mark.parametrize("mode", ["linear", "bilinear", "trilinear"])
def test_dense_products_equal_the_gathers(mode, monkeypatch):
    """Short NumPy axes resample as BLAS products with the weight matrix (forward and input
    gradient); with the products switched off (every axis longer than DENSE_MAX_IN) the
    gather / scatter-add path must give the same values. Long axes always take the gathers."""
    from ember.nn.functional import _resample

    nd = {"linear": 1, "bilinear": 2, "trilinear": 3}[mode]
    x = rand(*((2, 3) + (5, 7, 4)[:nd]), seed=3)
    g = rand(*((2, 3) + (9, 13, 6)[:nd]), seed=4)

    def run():
        t = ember.tensor(x, requires_grad=True)
        out = F.interpolate(t, size=(9, 13, 6)[:nd], mode=mode)
        out.backward(ember.tensor(g))
        return out.detach().numpy(), t.grad.numpy()

    dense = run()
    monkeypatch.setattr(_resample, "DENSE_MAX_IN", 0)
    gathered = run()
    for a, b in zip(dense, gathered):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    long_axis = rand(2, 3, 300, seed=5)  # 300 > DENSE_MAX_IN: the gathers, against torch
    monkeypatch.undo()
    check_op(lambda t: interp(t, scale_factor=1.5, mode="linear"), [long_axis])


@pytest.mark.parametrize("low, big", [("float16", 2048.0), ("bfloat16", 256.0)])
def test_half_nearest_gradient_adds_in_float32(low, big):
    """A run of 16 gradients into one half-precision input adds up in float32 and rounds
    once, as torch does (adding in the half dtype loses the small terms: 2060 for 2064)."""
    g = np.ones((1, 1, 4, 4), np.float32)
    g[0, 0, 0, 0] = big
    x = ember.zeros(1, 1, 1, 1, dtype=getattr(ember, low), requires_grad=True)
    F.interpolate(x, scale_factor=4).backward(ember.tensor(g).to(getattr(ember, low)))
    tx = torch.zeros(1, 1, 1, 1, dtype=getattr(torch, low), requires_grad=True)
    TF.interpolate(tx, scale_factor=4).backward(torch.tensor(g).to(getattr(torch, low)))
    assert x.grad.float().item() == tx.grad.float().item()


def test_non_finite_values_keep_the_gathers():
    """A zero weight times inf is NaN, so an inf must not reach the dense product: the output
    and the gradient keep torch's inf/NaN pattern (NaN only where torch has it)."""
    x = rand(1, 2, 4, 5, seed=7)
    x[0, 1, 2, 3] = np.inf
    x[0, 0, 0, 0] = np.nan
    g = rand(1, 2, 8, 10, seed=8)
    g[0, 0, 5, 5] = -np.inf
    t = ember.tensor(x, requires_grad=True)
    out = F.interpolate(t, scale_factor=2, mode="bilinear")
    out.backward(ember.tensor(g))
    tt = torch.tensor(x, requires_grad=True)
    want = TF.interpolate(tt, scale_factor=2, mode="bilinear")
    want.backward(torch.tensor(g))
    for got, ref in ((out.detach().numpy(), want.detach().numpy()), (t.grad, tt.grad.numpy())):
        got = np.asarray(got.numpy() if isinstance(got, ember.Tensor) else got)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)  # infs compared by sign
    assert np.isnan(out.detach().numpy()).any() and np.isinf(t.grad.numpy()).any()


def test_upsample_modules_match_torch():
    mods = [
        ({"scale_factor": 2}, {}),
        ({"size": (3, 7), "mode": "bilinear"}, {}),
        ({"scale_factor": (1.5, 2.0), "mode": "bilinear", "align_corners": True}, {}),
        ({"scale_factor": 0.5, "mode": "nearest-exact"}, {}),
        ({"size": 5, "mode": "area"}, {}),
    ]
    x = rand(2, 3, 4, 6, seed=6)
    for kw, _ in mods:
        em, tm = enn.Upsample(**kw), tnn.Upsample(**kw)
        assert repr(em) == repr(tm)
        check_op(lambda t, em=em, tm=tm: (em if isinstance(t, ember.Tensor) else tm)(t), [x])
    for name, kw in [
        ("UpsamplingNearest2d", {"scale_factor": 2}),
        ("UpsamplingBilinear2d", {"size": (5, 3)}),
    ]:
        em, tm = getattr(enn, name)(**kw), getattr(tnn, name)(**kw)
        assert repr(em) == repr(tm)
        check_op(lambda t, em=em, tm=tm: (em if isinstance(t, ember.Tensor) else tm)(t), [x])
    up = enn.Upsample(scale_factor=2, mode="bilinear")
    assert (up.scale_factor, up.mode, up.align_corners, up.size) == (2.0, "bilinear", None, None)


def test_interpolate_errors():
    x = ember.randn(1, 2, 3, 3)
    with pytest.raises(ValueError, match="only one of size or scale_factor"):
        F.interpolate(x, size=2, scale_factor=2)
    with pytest.raises(ValueError, match="either size or scale_factor should be defined"):
        F.interpolate(x)
    with pytest.raises(ValueError, match="align_corners option can only be set"):
        F.interpolate(x, size=2, align_corners=True)
    with pytest.raises(ValueError, match="recompute_scale_factor is not meaningful"):
        F.interpolate(x, size=2, recompute_scale_factor=True)
    with pytest.raises(ValueError, match=r"spatial dimensions of \[3, 3\] and output size of \(2,"):
        F.interpolate(x, size=(2,))
    with pytest.raises(ValueError, match=r"spatial dimensions of \[3, 3\] and scale_factor"):
        F.interpolate(x, scale_factor=(2, 2, 2))
    with pytest.raises(TypeError, match="expected size to be one of int"):
        F.interpolate(x, size=(2, 2.0))
    with pytest.raises(NotImplementedError, match="mode 'bicubic' is not implemented in Ember"):
        F.interpolate(x, size=4, mode="bicubic")
    with pytest.raises(NotImplementedError, match=r"Only 3D, 4D and 5D input .*\(got foo\)"):
        F.interpolate(x, size=4, mode="foo")
    with pytest.raises(NotImplementedError, match=r"Only 3D, 4D and 5D input .*\(got 2D\)"):
        F.interpolate(ember.randn(2, 3), size=2)
    with pytest.raises(NotImplementedError, match="Got 4D input, but linear mode needs 3D input"):
        F.interpolate(x, size=4, mode="linear")
    with pytest.raises(NotImplementedError, match="Got 3D input, but bilinear mode needs 4D"):
        F.interpolate(ember.randn(1, 2, 3), size=4, mode="bilinear")
    with pytest.raises(
        RuntimeError,
        match=r"upsample_nearest2d: Input and output sizes should be"
        r" greater than 0, but got input \(H: 3, W: 3\) output \(H: 0, W: 0\)",
    ):
        F.interpolate(x, scale_factor=0.2)
    with pytest.raises(RuntimeError, match=r"upsample_linear1d: Input and output sizes"):
        F.interpolate(ember.randn(1, 2, 3), size=0, mode="linear")
    with pytest.raises(RuntimeError, match=r"Non-empty 4D data tensor expected .*\[1, 0, 3, 3\]"):
        F.interpolate(ember.randn(1, 0, 3, 3), size=2)
    with pytest.raises(
        NotImplementedError, match="upsample_bilinear2d\" not implemented for 'int64'"
    ):
        F.interpolate(ember.ones(1, 1, 2, 2, dtype=ember.int64), size=3, mode="bilinear")
    with pytest.raises(ValueError, match="Anti-alias option is restricted"):
        F.interpolate(x, size=2, antialias=True)
    with pytest.raises(NotImplementedError, match="antialias=True is not implemented"):
        F.interpolate(x, size=2, mode="bilinear", antialias=True)
    with pytest.raises(TypeError, match="argument 'input' must be Tensor"):
        F.interpolate(np.ones((1, 1, 2, 2)), size=2)
