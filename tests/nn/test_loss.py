import warnings

import numpy as np
import pytest

import ember
import ember.nn as nn
import ember.nn.functional as F
from tests.oracle import check_op, gradcheck_op, torch
from tests.oracle import rand as _rand

TF = torch.nn.functional
REDUCTIONS = ["mean", "sum", "none"]


def rand(*shape, **kw):
    """tests.oracle.rand, but always an ndarray (a 0-d one for shape ())."""
    return np.asarray(_rand(*shape, **kw))


def targets(shape, c, seed, ignore=None, ignore_index=-100):
    y = np.random.default_rng(seed).integers(0, c, size=shape).astype(np.int64)
    if ignore is not None and y.size:
        y.reshape(-1)[ignore] = ignore_index
    return y


def probs(shape, seed, cdim=1):
    p = np.random.default_rng(seed).random(shape).astype(np.float32) + 0.05
    return p / p.sum(axis=cdim, keepdims=True)


def e_t(w):
    """The same constant as an ember and a torch tensor (or None twice)."""
    if w is None:
        return None, None
    return ember.tensor(w), torch.from_numpy(np.array(w))


# ------------------------------------------------------------------------ cross_entropy
CE_SHAPES = [((6, 5), (6,)), ((5,), ()), ((3, 4, 2, 3), (3, 2, 3)), ((0, 4), (0,))]


@pytest.mark.parametrize("shapes", CE_SHAPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_cross_entropy_index_targets(shapes, reduction, weighted, smoothing):
    xshape, yshape = shapes
    c = xshape[0] if len(xshape) == 1 else xshape[1]
    x = rand(*xshape, seed=1, low=-3, high=3)
    y = targets(yshape, c, 2, ignore=[1] if len(yshape) and yshape[0] else None)
    ew, tw = e_t(rand(c, seed=3, positive=True) if weighted else None)
    kw = dict(reduction=reduction, label_smoothing=smoothing)
    check_op(
        lambda a, t: F.cross_entropy(a, t, weight=ew, **kw),
        [x, y],
        torch_fn=lambda a, t: TF.cross_entropy(a, t, weight=tw, **kw),
    )


@pytest.mark.parametrize("ignore_index", [0, 2, -1])
def test_cross_entropy_custom_ignore_index(ignore_index):
    x = rand(8, 4, seed=4)
    y = targets((8,), 4, 5)
    y[[0, 3]] = ignore_index
    ew, tw = e_t(rand(4, seed=6, positive=True))
    for red in REDUCTIONS:
        check_op(
            lambda a, t, red=red: F.cross_entropy(
                a, t, ew, ignore_index=ignore_index, reduction=red, label_smoothing=0.1
            ),
            [x, y],
            torch_fn=lambda a, t, red=red: TF.cross_entropy(
                a, t, tw, ignore_index=ignore_index, reduction=red, label_smoothing=0.1
            ),
        )


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("fn", ["cross_entropy", "nll_loss"])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_all_ignored_is_nan_with_zero_gradient_like_torch(reduction, fn, smoothing):
    x = rand(3, 4, seed=7)
    y = np.full(3, -100, dtype=np.int64)
    kw = dict(reduction=reduction)
    if fn == "cross_entropy":
        kw["label_smoothing"] = smoothing
    res = []
    for lib, mod in ((ember, F), (torch, TF)):
        xt = lib.tensor(x, requires_grad=True)
        out = getattr(mod, fn)(xt, lib.tensor(y), **kw)
        out.sum().backward()
        res.append((out.detach().numpy(), xt.grad.numpy()))
    np.testing.assert_array_equal(res[0][0], res[1][0])
    np.testing.assert_array_equal(res[0][1], res[1][1])


@pytest.mark.parametrize("shape", [(6, 5), (5,), (2, 4, 3, 2), (0, 3)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_cross_entropy_probability_targets(shape, reduction, weighted, smoothing):
    cdim = 0 if len(shape) == 1 else 1
    x = rand(*shape, seed=8)
    p = probs(shape, 9, cdim)
    ew, tw = e_t(rand(shape[cdim], seed=10, positive=True) if weighted else None)
    kw = dict(reduction=reduction, label_smoothing=smoothing)
    # the target as a constant (the fused path) ...
    check_op(
        lambda a: F.cross_entropy(a, ember.tensor(p), ew, **kw),
        [x],
        torch_fn=lambda a: TF.cross_entropy(a, torch.from_numpy(p), tw, **kw),
    )
    # ... and as an input that needs its own gradient (the composite path)
    check_op(
        lambda a, t: F.cross_entropy(a, t, ew, **kw),
        [x, p],
        torch_fn=lambda a, t: TF.cross_entropy(a, t, tw, **kw),
    )


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_extreme_logits_stay_finite(smoothing):
    x = np.array(
        [
            [1000.0, -1000.0, 0.0],
            [-1000.0, -1000.0, -999.0],
            [0.0, 1000.0, 1000.0],
            [-1000.0, -1000.0, -1000.0],
        ],
        dtype=np.float32,
    )
    y = np.array([1, 2, 0, 1])
    out = check_op(
        lambda a, t: F.cross_entropy(a, t, label_smoothing=smoothing),
        [x, y],
        torch_fn=lambda a, t: TF.cross_entropy(a, t, label_smoothing=smoothing),
    )
    assert np.isfinite(out[0].detach().numpy()).all()
    xe = ember.tensor(x, requires_grad=True)
    F.cross_entropy(xe, ember.tensor(y), reduction="none").sum().backward()
    assert np.isfinite(xe.grad.numpy()).all()
    check_op(
        lambda a: F.cross_entropy(a, ember.tensor(probs((4, 3), 1))),
        [x],
        torch_fn=lambda a: TF.cross_entropy(a, torch.from_numpy(probs((4, 3), 1))),
    )


def test_cross_entropy_rows_far_below_the_batch_max():
    """Rows 60 below the batch max take the per-row rescue path; they must stay exact."""
    x = rand(16, 7, seed=11)
    x[::3] -= 60.0
    x[1] += 30.0
    y = targets((16,), 7, 12)
    for red in REDUCTIONS:
        check_op(
            lambda a, t, red=red: F.cross_entropy(a, t, reduction=red, label_smoothing=0.2),
            [x, y],
            torch_fn=lambda a, t, red=red: TF.cross_entropy(
                a, t, reduction=red, label_smoothing=0.2
            ),
        )


def test_cross_entropy_noncontiguous_and_uint8_targets():
    x = rand(5, 6, seed=13)
    y = targets((5,), 6, 14)
    check_op(
        lambda a, t: F.cross_entropy(a, t),
        [x, y],
        noncontiguous=True,
        torch_fn=lambda a, t: TF.cross_entropy(a, t),
    )
    check_op(
        lambda a: F.cross_entropy(a, ember.tensor(y.astype(np.uint8))),
        [x],
        torch_fn=lambda a: TF.cross_entropy(a, torch.from_numpy(y.astype(np.uint8))),
    )


def test_cross_entropy_dtypes():
    for dt, tdt in [(ember.float64, torch.float64), (ember.float16, torch.float16)]:
        x = rand(4, 3, seed=15)
        y = targets((4,), 3, 16)
        e = F.cross_entropy(ember.tensor(x).to(dt).requires_grad_(), ember.tensor(y))
        assert e.dtype is dt
        t = TF.cross_entropy(torch.from_numpy(x).to(tdt), torch.from_numpy(y))
        np.testing.assert_allclose(float(e.item()), float(t.item()), rtol=2e-3)


# --- the fused Function against the composite (log_softmax + gather) it replaces
def composite_ce(x, y, weight=None, ignore_index=-100, reduction="mean", eps=0.0):
    """cross_entropy from plain ember ops: the oracle of the fused kernel."""
    c = x.shape[1]
    logp = ember.log_softmax(x, 1)
    valid = y != ignore_index
    safe = ember.where(valid, y, ember.zeros_like(y))
    w = ember.ones(c, dtype=x.dtype) if weight is None else weight
    wy = w[safe] * valid.to(x.dtype)
    nll = -logp.gather(1, safe.unsqueeze(1)).squeeze(1) * wy
    smooth = -(logp * w).sum(1) * valid.to(x.dtype)
    loss = nll * (1 - eps) + smooth * (eps / c)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / wy.sum()


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.25])
def test_fused_cross_entropy_matches_composite(reduction, weighted, smoothing):
    x = rand(12, 9, seed=17, dtype=np.float64, low=-5, high=5)
    x[2] -= 50.0
    y = targets((12,), 9, 18, ignore=[4, 7])
    w = ember.tensor(rand(9, seed=19, positive=True, dtype=np.float64)) if weighted else None
    g = rand(*((12,) if reduction == "none" else ()), seed=20, dtype=np.float64)
    outs, grads = [], []
    for fn in (F.cross_entropy, composite_ce):
        xe = ember.tensor(x, requires_grad=True)
        if fn is F.cross_entropy:
            out = fn(xe, ember.tensor(y), w, reduction=reduction, label_smoothing=smoothing)
        else:
            out = fn(xe, ember.tensor(y), w, reduction=reduction, eps=smoothing)
        out.backward(ember.tensor(g))
        outs.append(out.detach().numpy())
        grads.append(xe.grad.numpy())
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-10, atol=1e-12)
    if not smoothing:  # and the library's own composite: nll_loss(log_softmax(x))
        xe = ember.tensor(x, requires_grad=True)
        out = F.nll_loss(ember.log_softmax(xe, 1), ember.tensor(y), w, reduction=reduction)
        out.backward(ember.tensor(g))
        np.testing.assert_allclose(out.detach().numpy(), outs[0], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(xe.grad.numpy(), grads[0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "kw",
    [dict(), dict(label_smoothing=0.2, reduction="sum"), dict(reduction="none", ignore_index=1)],
)
def test_cross_entropy_double_backward_matches_torch(kw):
    x = rand(5, 4, seed=21, dtype=np.float64)
    y = targets((5,), 4, 22)
    w = rand(4, seed=23, positive=True, dtype=np.float64)
    v = rand(5, 4, seed=24, dtype=np.float64)
    res = []
    for lib, fn in ((ember, F.cross_entropy), (torch, TF.cross_entropy)):
        xt = lib.tensor(x, requires_grad=True)
        loss = fn(xt, lib.tensor(y), lib.tensor(w), **kw).sum()
        (gx,) = lib.autograd.grad(loss, xt, create_graph=True)
        (hv,) = lib.autograd.grad((gx * lib.tensor(v)).sum(), xt)
        res.append((gx.detach().numpy(), hv.detach().numpy()))
    np.testing.assert_allclose(res[0][0], res[1][0], atol=1e-12)
    np.testing.assert_allclose(res[0][1], res[1][1], atol=1e-12)


def test_cross_entropy_gradcheck_and_gradgradcheck():
    y = ember.tensor(targets((4,), 3, 25, ignore=[2]))
    w = ember.tensor(rand(3, seed=26, positive=True, dtype=np.float64))
    p = ember.tensor(probs((4, 3), 27).astype(np.float64))
    for red in REDUCTIONS:
        gradcheck_op(
            lambda a, r=red: F.cross_entropy(a, y, w, reduction=r, label_smoothing=0.3),
            [rand(4, 3, seed=28)],
        )
        gradcheck_op(
            lambda a, r=red: F.cross_entropy(a, p, w, reduction=r, label_smoothing=0.1),
            [rand(4, 3, seed=29)],
        )
        gradcheck_op(
            lambda a, t, r=red: F.cross_entropy(a, t, reduction=r),
            [rand(4, 3, seed=30), probs((4, 3), 31)],
        )
    x = ember.tensor(rand(4, 3, seed=32, dtype=np.float64), requires_grad=True)
    assert ember.autograd.gradgradcheck(
        lambda a: F.cross_entropy(a, y, w, label_smoothing=0.2), [x]
    )
    assert ember.autograd.gradgradcheck(lambda a: F.cross_entropy(a, p, w), [x])


def test_cross_entropy_errors():
    x = ember.zeros(128, 10)
    with pytest.raises(
        ValueError,
        match=r"^cross_entropy: expected target of shape \(128,\) "
        r"for input of shape \(128, 10\), got \(64,\)$",
    ):
        F.cross_entropy(x, ember.zeros(64, dtype=ember.int64))
    with pytest.raises(
        RuntimeError,
        match=r"expected target of shape \(2, 4\) for input of "
        r"shape \(2, 3, 4\), got \(2, 3\)",
    ):
        F.cross_entropy(ember.zeros(2, 3, 4), ember.zeros(2, 3, dtype=ember.int64))
    y = ember.tensor([0, 12, 3])
    with pytest.raises(
        IndexError, match="cross_entropy: target 12 is out of bounds for input with 10 classes"
    ):
        F.cross_entropy(ember.zeros(3, 10), y)
    with pytest.raises(IndexError, match="target -1 is out of bounds"):
        F.cross_entropy(ember.zeros(3, 10), ember.tensor([0, -1, 3]))
    with pytest.raises(RuntimeError, match="expected target dtype to be int64"):
        F.cross_entropy(ember.zeros(3, 10), ember.tensor([0, 1, 3], dtype=ember.int32))
    with pytest.raises(RuntimeError, match="label_smoothing must be between 0.0 and 1.0"):
        F.cross_entropy(ember.zeros(3, 10), ember.tensor([0, 1, 3]), label_smoothing=1.5)
    with pytest.raises(RuntimeError, match="for all 10 classes or no classes"):
        F.cross_entropy(ember.zeros(3, 10), ember.tensor([0, 1, 3]), weight=ember.ones(4))
    with pytest.raises(RuntimeError, match="floating point type for target with class prob"):
        F.cross_entropy(ember.zeros(3), ember.tensor([0, 1, 2]))
    with pytest.raises(RuntimeError, match="expected a floating point input"):
        F.cross_entropy(ember.zeros(3, 2, dtype=ember.int64), ember.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="foo is not a valid value for reduction"):
        F.cross_entropy(ember.zeros(3, 10), ember.tensor([0, 1, 3]), reduction="foo")


def test_cross_entropy_second_backward_raises():
    x = ember.tensor(rand(3, 4, seed=33), requires_grad=True)
    loss = F.cross_entropy(x, ember.tensor([0, 1, 2]))
    loss.backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        loss.backward()


# ------------------------------------------------------------------------------ nll_loss
@pytest.mark.parametrize("shapes", CE_SHAPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_nll_loss(shapes, reduction, weighted):
    xshape, yshape = shapes
    c = xshape[0] if len(xshape) == 1 else xshape[1]
    x = rand(*xshape, seed=34)
    y = targets(yshape, c, 35, ignore=[0] if len(yshape) and yshape[0] else None)
    ew, tw = e_t(rand(c, seed=36, positive=True) if weighted else None)
    check_op(
        lambda a, t: F.nll_loss(a, t, ew, reduction=reduction),
        [x, y],
        torch_fn=lambda a, t: TF.nll_loss(a, t, tw, reduction=reduction),
    )
    y = targets(yshape, c, 35)
    check_op(
        lambda a, t: F.nll_loss(a, t, ew, ignore_index=1, reduction=reduction),
        [x, y],
        torch_fn=lambda a, t: TF.nll_loss(a, t, tw, ignore_index=1, reduction=reduction),
    )


def test_nll_loss_gradcheck_and_errors():
    y = ember.tensor(targets((2, 3), 4, 37, ignore=[1]))
    w = ember.tensor(rand(4, seed=38, positive=True, dtype=np.float64))
    for red in REDUCTIONS:
        gradcheck_op(lambda a, r=red: F.nll_loss(a, y, w, reduction=r), [rand(2, 4, 3, seed=39)])
    with pytest.raises(
        RuntimeError,
        match=r"nll_loss: expected target of shape \(2, 4\) for "
        r"input of shape \(2, 3, 4\), got \(2, 3\)",
    ):
        F.nll_loss(ember.zeros(2, 3, 4), ember.zeros(2, 3, dtype=ember.int64))
    with pytest.raises(IndexError, match="nll_loss: target 5 is out of bounds"):
        F.nll_loss(ember.zeros(2, 4), ember.tensor([0, 5]))


# ------------------------------------------------------------------ regression losses
REGRESSION = [
    ("mse_loss", {}),
    ("l1_loss", {}),
    ("smooth_l1_loss", {}),
    ("smooth_l1_loss", {"beta": 0.5}),
    ("smooth_l1_loss", {"beta": 0.0}),
    ("huber_loss", {}),
    ("huber_loss", {"delta": 0.4}),
    ("huber_loss", {"delta": 2.5}),
]


@pytest.mark.parametrize("name,kw", REGRESSION)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(4, 5), (), (0, 3), (2, 3, 4)])
def test_regression_losses(name, kw, reduction, shape):
    x, t = rand(*shape, seed=40), rand(*shape, seed=41)
    if x.size:
        t.reshape(-1)[0] = x.reshape(-1)[0]  # a zero difference: the kink of |d|
    check_op(
        lambda a, b: getattr(F, name)(a, b, reduction=reduction, **kw),
        [x, t],
        torch_fn=lambda a, b: getattr(TF, name)(a, b, reduction=reduction, **kw),
    )
    gradcheck_op(
        lambda a, b: getattr(F, name)(a, b, reduction=reduction, **kw),
        [rand(*shape, seed=42), rand(*shape, seed=43)],
    )


@pytest.mark.parametrize("name", ["mse_loss", "l1_loss", "huber_loss"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_regression_losses_with_weight(name, reduction):
    x, t, w = rand(3, 4, seed=44), rand(3, 4, seed=45), rand(3, 4, seed=46, positive=True)
    check_op(
        lambda a, b, c: getattr(F, name)(a, b, reduction=reduction, weight=c),
        [x, t, w],
        torch_fn=lambda a, b, c: getattr(TF, name)(a, b, reduction=reduction, weight=c),
    )
    with pytest.raises(ValueError, match="Weights and input must have the same size"):
        getattr(F, name)(ember.tensor(x), ember.tensor(t), weight=ember.ones(4))


@pytest.mark.filterwarnings("ignore:Using a target size:UserWarning")  # torch's own warning
def test_regression_losses_broadcast_with_a_warning():
    x, t = rand(3, 4, seed=47), rand(4, seed=48)
    with pytest.warns(
        UserWarning,
        match=r"mse_loss: Using a target size \(4,\) that is "
        r"different to the input size \(3, 4\)",
    ):
        check_op(lambda a, b: F.mse_loss(a, b), [x, t], torch_fn=TF.mse_loss)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        F.l1_loss(ember.tensor(x), ember.tensor(x))


@pytest.mark.parametrize(
    "name,kw", [("smooth_l1_loss", {"beta": 0.5}), ("huber_loss", {"delta": 2.5})]
)
def test_quadratic_then_linear_losses_large_and_double_backward(name, kw):
    """smooth_l1 / huber run as one Function (k m (|d| - m / 2), m = min(|d|, cut)): against
    torch on 100K differences spanning both branches, and its recorded gradient against
    torch's double backward and a float64 gradgradcheck."""
    x, t = rand(200, 500, seed=49) * 3, rand(200, 500, seed=50)
    fn = lambda lib: lambda a, b: getattr(lib, name)(a, b, **kw)  # noqa: E731
    check_op(fn(F), [x, t], torch_fn=fn(TF))
    x64, t64 = rand(3, 4, seed=51).astype(np.float64) * 3, rand(3, 4, seed=52).astype(np.float64)
    assert ember.autograd.gradgradcheck(
        lambda a: fn(F)(a, ember.tensor(t64)), [ember.tensor(x64, requires_grad=True)]
    )
    grads = []
    for lib, mk, grad in (
        (F, lambda a: ember.tensor(a, requires_grad=True), ember.autograd.grad),
        (TF, lambda a: torch.tensor(a, requires_grad=True), torch.autograd.grad),
    ):
        a = mk(x64)
        (g,) = grad(fn(lib)(a, mk(t64)), a, create_graph=True)
        (gg,) = grad((g * g).sum(), a)
        grads.append((g.detach().numpy(), gg.detach().numpy()))
    for e, t_ in zip(*grads):
        np.testing.assert_allclose(e, t_, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_mse_loss_fused_large_and_double_backward(reduction):
    """Same-shaped float arrays with a mean or sum take SquaredError (one difference and its
    dot product): against torch on 100K elements, gradients for both operands, and its
    recorded gradient against torch's double backward and a float64 gradgradcheck."""
    x, t = rand(200, 500, seed=53), rand(200, 500, seed=54)
    fn = lambda lib: lambda a, b: lib.mse_loss(a, b, reduction=reduction)  # noqa: E731
    check_op(fn(F), [x, t], torch_fn=fn(TF), rtol=1e-5)
    x64, t64 = rand(3, 4, seed=55).astype(np.float64), rand(3, 4, seed=56).astype(np.float64)
    assert ember.autograd.gradgradcheck(
        fn(F), [ember.tensor(x64, requires_grad=True), ember.tensor(t64, requires_grad=True)]
    )
    grads = []
    for lib, mk, grad in (
        (F, lambda a: ember.tensor(a, requires_grad=True), ember.autograd.grad),
        (TF, lambda a: torch.tensor(a, requires_grad=True), torch.autograd.grad),
    ):
        a, b = mk(x64), mk(t64)
        ga, gb = grad(fn(lib)(a, b), (a, b), create_graph=True)
        (gg,) = grad((ga * gb).sum(), a)
        grads.append([v.detach().numpy() for v in (ga, gb, gg)])
    for e, t_ in zip(*grads):
        np.testing.assert_allclose(e, t_, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("beta", [0.3, 0.1, 1e-3])
def test_smooth_l1_linear_part_is_torch_to_the_bit(beta):
    """The fused form keeps torch's slope * (|d| - cut / 2) outside the quadratic part (a
    rounded slope / cut times cut would be 1 ulp off on a third of the elements)."""
    d = (np.random.default_rng(57).standard_normal(100_000) * 3).astype(np.float32)
    got = F.smooth_l1_loss(ember.tensor(d), ember.zeros(d.size), reduction="none", beta=beta)
    want = TF.smooth_l1_loss(torch.tensor(d), torch.zeros(d.size), reduction="none", beta=beta)
    outside = np.abs(d) > beta
    np.testing.assert_array_equal(got.numpy()[outside], want.numpy()[outside])
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6, atol=1e-7)


def test_smooth_l1_with_a_beta_too_small_for_its_reciprocal():
    """1 / beta overflows float32: k is capped, which changes only differences below beta
    (subnormal here); 0 keeps gradient 0, the rest is |d| - beta / 2 with slope +-1."""
    d = np.array([0.0, 3e-30, 0.5, -2.0], np.float32)
    check_op(
        lambda a, b: F.smooth_l1_loss(a, b, reduction="none", beta=1e-39),
        [d, np.zeros(4, np.float32)],
        torch_fn=lambda a, b: TF.smooth_l1_loss(a, b, reduction="none", beta=1e-39),
    )


def test_regression_extreme_values_and_errors():
    x = np.array([1e30, -1e30, 0.0], dtype=np.float32)
    check_op(F.smooth_l1_loss, [x, np.zeros(3, np.float32)], torch_fn=TF.smooth_l1_loss)
    check_op(F.huber_loss, [x, np.zeros(3, np.float32)], torch_fn=TF.huber_loss)
    with pytest.raises(RuntimeError, match="negative values for beta"):
        F.smooth_l1_loss(ember.zeros(2), ember.zeros(2), beta=-1.0)
    with pytest.raises(RuntimeError, match="non-positive values for delta"):
        F.huber_loss(ember.zeros(2), ember.zeros(2), delta=0.0)
    with pytest.warns(UserWarning, match="size_average and reduce args will be deprecated"):
        out = F.mse_loss(ember.ones(2), ember.zeros(2), size_average=False)
    assert out.item() == 2.0


# ------------------------------------------------------------------ binary cross-entropy
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weight_shape", [None, (3, 4), (4,)])
def test_binary_cross_entropy(reduction, weight_shape):
    x = rand(3, 4, seed=49, low=0.02, high=0.98)
    t = rand(3, 4, seed=50, low=0.0, high=1.0)
    ew, tw = e_t(None if weight_shape is None else rand(*weight_shape, seed=51, positive=True))
    check_op(
        lambda a, b: F.binary_cross_entropy(a, b, ew, reduction=reduction),
        [x, t],
        torch_fn=lambda a, b: TF.binary_cross_entropy(a, b, tw, reduction=reduction),
    )
    gradcheck_op(
        lambda a, b: F.binary_cross_entropy(a, b, reduction=reduction),
        [rand(3, 4, seed=52, low=0.1, high=0.9), rand(3, 4, seed=53, low=0, high=1)],
    )


def test_binary_cross_entropy_edges_clamp_like_torch():
    x = np.array([0.0, 1.0, 0.0, 1.0, 1e-30, 0.5], dtype=np.float32)
    t = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 0.5], dtype=np.float32)
    out = check_op(
        lambda a, b: F.binary_cross_entropy(a, b, reduction="none"),
        [x, t],
        torch_fn=lambda a, b: TF.binary_cross_entropy(a, b, reduction="none"),
    )
    assert np.isfinite(out[0].detach().numpy()).all()
    with pytest.raises(RuntimeError, match="all elements of input should be between 0 and 1"):
        F.binary_cross_entropy(ember.tensor([1.5]), ember.tensor([1.0]))
    with pytest.raises(RuntimeError, match="all elements of target should be between 0 and 1"):
        F.binary_cross_entropy(ember.tensor([0.5]), ember.tensor([1.5]))
    with pytest.raises(
        ValueError,
        match=r"binary_cross_entropy: expected target of shape "
        r"\(2, 3\) for input of shape \(2, 3\), got \(3,\)",
    ):
        F.binary_cross_entropy(ember.full((2, 3), 0.5), ember.zeros(3))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("pos", [None, (4,), (3, 4)])
def test_binary_cross_entropy_with_logits(reduction, weighted, pos):
    x = rand(3, 4, seed=54, low=-4, high=4)
    x[0, 0] = 0.0  # the gradient must be exact at a zero logit
    t = rand(3, 4, seed=55, low=0, high=1)
    ew, tw = e_t(rand(3, 4, seed=56, positive=True) if weighted else None)
    ep, tp = e_t(None if pos is None else rand(*pos, seed=57, positive=True))
    kw = dict(reduction=reduction)
    check_op(
        lambda a, b: F.binary_cross_entropy_with_logits(a, b, ew, pos_weight=ep, **kw),
        [x, t],
        torch_fn=lambda a, b: TF.binary_cross_entropy_with_logits(a, b, tw, pos_weight=tp, **kw),
    )
    ew64 = None if ew is None else ew.double()
    ep64 = None if ep is None else ep.double()
    gradcheck_op(
        lambda a, b: F.binary_cross_entropy_with_logits(a, b, ew64, pos_weight=ep64, **kw),
        [rand(3, 4, seed=58), rand(3, 4, seed=59, low=0, high=1)],
    )


def test_binary_cross_entropy_with_logits_extremes_and_errors():
    x = np.array([1000.0, -1000.0, 88.0, -88.0, 0.0], dtype=np.float32)
    t = np.array([0.0, 1.0, 1.0, 0.0, 1.0], dtype=np.float32)
    pw = ember.tensor(np.full(5, 3.0, np.float32))
    out = check_op(
        lambda a, b: F.binary_cross_entropy_with_logits(a, b, reduction="none"),
        [x, t],
        torch_fn=lambda a, b: TF.binary_cross_entropy_with_logits(a, b, reduction="none"),
    )
    assert np.isfinite(out[0].detach().numpy()).all()
    check_op(
        lambda a, b: F.binary_cross_entropy_with_logits(a, b, pos_weight=pw),
        [x, t],
        torch_fn=lambda a, b: TF.binary_cross_entropy_with_logits(
            a, b, pos_weight=torch.full((5,), 3.0)
        ),
    )
    with pytest.raises(
        ValueError,
        match=r"binary_cross_entropy_with_logits: expected target "
        r"of shape \(1,\) for input of shape \(1,\), got \(2,\)",
    ):
        F.binary_cross_entropy_with_logits(ember.zeros(1), ember.zeros(2))


def test_bce_double_backward_matches_torch():
    x = rand(2, 3, seed=60, dtype=np.float64)
    t = rand(2, 3, seed=61, low=0, high=1, dtype=np.float64)
    pw = rand(3, seed=62, positive=True, dtype=np.float64)
    for name in ("binary_cross_entropy", "binary_cross_entropy_with_logits"):
        res = []
        for lib, mod in ((ember, F), (torch, TF)):
            a = lib.tensor(
                1 / (1 + np.exp(-x)) if name == "binary_cross_entropy" else x, requires_grad=True
            )
            b = lib.tensor(t, requires_grad=True)
            kw = {} if name == "binary_cross_entropy" else {"pos_weight": lib.tensor(pw)}
            loss = getattr(mod, name)(a, b, **kw)
            ga, gb = lib.autograd.grad(loss, (a, b), create_graph=True)
            (hh,) = lib.autograd.grad((ga * ga).sum() + (ga * gb).sum(), a)
            res.append([ga.detach().numpy(), gb.detach().numpy(), hh.detach().numpy()])
        for e, tt in zip(*res):
            np.testing.assert_allclose(e, tt, rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------------------ kl_div
@pytest.mark.parametrize("reduction", REDUCTIONS + ["batchmean"])
@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize("shape", [(4, 5), (3,), ()])
def test_kl_div(reduction, log_target, shape):
    x = np.log(probs(shape + (2,), 63, cdim=-1))[..., 0] if shape else np.float32(-0.5)
    x = np.asarray(x, dtype=np.float32)
    t = rand(*shape, seed=64, low=0.05, high=1.0)
    if log_target:
        t = np.asarray(np.log(t))
    kw = dict(reduction=reduction, log_target=log_target)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_op(
            lambda a, b: F.kl_div(a, b, **kw), [x, t], torch_fn=lambda a, b: TF.kl_div(a, b, **kw)
        )
        gradcheck_op(lambda a, b: F.kl_div(a, b, **kw), [x, t])


def test_kl_div_zero_targets_and_mean_warning():
    x = rand(2, 3, seed=65)
    t = np.array([[0.0, 0.5, 0.5], [1.0, 0.0, 0.0]], dtype=np.float32)
    check_op(
        lambda a: F.kl_div(a, ember.tensor(t), reduction="batchmean"),
        [x],
        torch_fn=lambda a: TF.kl_div(a, torch.from_numpy(t), reduction="batchmean"),
    )
    te = ember.tensor(t, requires_grad=True)
    F.kl_div(ember.tensor(x), te, reduction="sum").backward()
    assert np.isfinite(te.grad.numpy()).all()
    with pytest.warns(UserWarning, match="'mean' divides the total loss by both"):
        F.kl_div(ember.tensor(x), ember.tensor(t))


# ------------------------------------------------------------------------ loss modules
MODULES = [
    ("CrossEntropyLoss", dict(label_smoothing=0.1, ignore_index=2), "ce"),
    ("NLLLoss", dict(ignore_index=0), "ce"),
    ("MSELoss", {}, "reg"),
    ("L1Loss", {}, "reg"),
    ("SmoothL1Loss", dict(beta=0.5), "reg"),
    ("HuberLoss", dict(delta=0.7), "reg"),
    ("BCELoss", {}, "prob"),
    ("BCEWithLogitsLoss", {}, "reg01"),
    ("KLDivLoss", dict(log_target=True), "reg"),
]


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides:UserWarning")
@pytest.mark.parametrize("name,kw,kind", MODULES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_loss_modules_match_torch(name, kw, kind, reduction):
    em = getattr(nn, name)(reduction=reduction, **kw)
    tm = getattr(torch.nn, name)(reduction=reduction, **kw)
    assert repr(em) == repr(tm)
    if kind == "ce":
        x, t = rand(6, 4, seed=66), targets((6,), 4, 67)
    elif kind == "prob":
        x, t = rand(6, 4, seed=68, low=0.05, high=0.95), rand(6, 4, seed=69, low=0, high=1)
    else:
        x, t = rand(6, 4, seed=70), rand(6, 4, seed=71, low=0, high=1)
    check_op(lambda a, b: em(a, b), [x, t], torch_fn=lambda a, b: tm(a, b))


def test_weighted_loss_modules_keep_weights_as_buffers():
    w = rand(4, seed=72, positive=True)
    for name in ("CrossEntropyLoss", "NLLLoss", "BCELoss"):
        em = getattr(nn, name)(weight=ember.tensor(w))
        tm = getattr(torch.nn, name)(weight=torch.from_numpy(w))
        assert list(em.state_dict()) == list(tm.state_dict()) == ["weight"]
    em = nn.BCEWithLogitsLoss(weight=ember.tensor(w), pos_weight=ember.tensor(w))
    tm = torch.nn.BCEWithLogitsLoss(weight=torch.from_numpy(w), pos_weight=torch.from_numpy(w))
    assert list(em.state_dict()) == list(tm.state_dict())
    assert list(nn.CrossEntropyLoss().state_dict()) == []
    x, y = rand(6, 4, seed=73), targets((6,), 4, 74)
    em, tm = (
        nn.CrossEntropyLoss(weight=ember.tensor(w)),
        torch.nn.CrossEntropyLoss(weight=torch.from_numpy(w)),
    )
    check_op(lambda a, b: em(a, b), [x, y], torch_fn=lambda a, b: tm(a, b))
    with pytest.warns(UserWarning, match="size_average and reduce"):
        assert nn.MSELoss(reduce=False).reduction == "none"
