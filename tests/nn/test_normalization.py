"""BatchNorm, LayerNorm, GroupNorm, RMSNorm and InstanceNorm against torch.nn, with the
weights and buffers copied across: forward, every gradient and the running statistics over
several training steps, then eval mode. The fused batch_norm / layer_norm Functions are also
held to their ember-op composites, gradchecked in float64 and double-differentiated."""

from __future__ import annotations

import numpy as np
import pytest

import ember
import ember.nn as enn
import ember.nn.functional as F
from tests.nn.norm_composites import batch_norm_composite, layer_norm_composite
from tests.oracle import gradcheck_op, rand, torch

tnn = torch.nn
TF = torch.nn.functional


@pytest.fixture(autouse=True)
def _torch_seed():
    torch.manual_seed(0)  # the torch layers' random affine parameters


def _np(t):
    if isinstance(t, np.ndarray):
        return t
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else t.detach().numpy()


def copy_state(emod, tmod):
    """torch module's parameters and buffers into the ember module (by state dict)."""
    emod.load_state_dict({k: _np(v).copy() for k, v in tmod.state_dict().items()})


def close(a, b, atol=1e-5, rtol=1e-4, what=""):
    np.testing.assert_allclose(
        np.asarray(_np(a), np.float64),
        np.asarray(_np(b), np.float64),
        atol=atol,
        rtol=rtol,
        err_msg=what,
    )


def run_steps(emod, tmod, shapes, steps=3, atol=1e-5, rtol=1e-4, seed=0):
    """Several forward/backward steps with fresh inputs; compare outputs, every gradient and
    every buffer after each step."""
    rng = np.random.default_rng(seed)
    for step in range(steps):
        shape = shapes[step % len(shapes)]
        x = (rng.standard_normal(shape) * 2 + 0.5).astype(np.float32)
        g = rng.standard_normal(shape).astype(np.float32)
        xe = ember.tensor(x, requires_grad=True)
        xt = torch.tensor(x, requires_grad=True)
        ye, yt = emod(xe), tmod(xt)
        close(ye, yt, atol, rtol, f"step {step}: forward")
        ye.backward(ember.tensor(g))
        yt.backward(torch.tensor(g))
        close(xe.grad, xt.grad, atol, rtol, f"step {step}: input grad")
        for (name, pe), (_, pt) in zip(emod.named_parameters(), tmod.named_parameters()):
            close(pe.grad, pt.grad, atol, rtol, f"step {step}: grad of {name}")
            pe.grad, pt.grad = None, None
        eb, tb = dict(emod.named_buffers()), dict(tmod.named_buffers())
        assert eb.keys() == tb.keys()
        for name in tb:
            assert eb[name].dtype.name == str(tb[name].dtype).removeprefix("torch."), name
            close(eb[name], tb[name], atol, rtol, f"step {step}: buffer {name}")


# ------------------------------------------------------------------------ batch norm
BN_CASES = [
    (enn.BatchNorm1d, tnn.BatchNorm1d, [(8, 4)]),
    (enn.BatchNorm1d, tnn.BatchNorm1d, [(6, 4, 7), (3, 4, 5)]),
    (enn.BatchNorm2d, tnn.BatchNorm2d, [(4, 4, 5, 3), (2, 4, 3, 3)]),
    (enn.BatchNorm3d, tnn.BatchNorm3d, [(2, 4, 3, 2, 3)]),
]


@pytest.mark.parametrize("ecls,tcls,shapes", BN_CASES)
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"momentum": None},
        {"momentum": 0.5},
        {"affine": False},
        {"track_running_stats": False},
        {"bias": False},
        {"eps": 1e-3, "momentum": None},
        {"affine": False, "track_running_stats": False},
    ],
)
def test_batch_norm_modules_train_then_eval(ecls, tcls, shapes, kwargs):
    tmod = tcls(4, **kwargs)
    emod = ecls(4, **kwargs)
    if tmod.weight is not None:  # non-trivial affine parameters
        with torch.no_grad():
            tmod.weight.uniform_(0.5, 1.5)
            if tmod.bias is not None:
                tmod.bias.uniform_(-1, 1)
    copy_state(emod, tmod)
    run_steps(emod, tmod, shapes, steps=4)
    emod.eval()
    tmod.eval()
    run_steps(emod, tmod, shapes, steps=2, seed=1)
    if kwargs.get("track_running_stats", True):
        assert emod.num_batches_tracked.item() == 4
        assert emod.num_batches_tracked.dtype is ember.int64


def test_batch_norm_eval_without_running_stats_uses_batch_stats():
    tmod, emod = (
        tnn.BatchNorm2d(3, track_running_stats=False),
        enn.BatchNorm2d(3, track_running_stats=False),
    )
    tmod.eval()
    emod.eval()
    run_steps(emod, tmod, [(4, 3, 2, 2)], steps=1)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape", [(5, 3), (4, 3, 6), (2, 3, 4, 5)])
def test_functional_batch_norm_matches_torch(training, affine, shape):
    x, g = rand(*shape, seed=1) * 3 + 1, rand(*shape, seed=2)
    w, b = rand(3, seed=3, positive=True), rand(3, seed=4)
    rm, rv = rand(3, seed=5), rand(3, seed=6, positive=True)
    out = {}
    for lib, lib_f in ((ember, F), (torch, TF)):
        xt = lib.tensor(x, requires_grad=True)
        wt = lib.tensor(w, requires_grad=True) if affine else None
        bt = lib.tensor(b, requires_grad=True) if affine else None
        rmt, rvt = lib.tensor(rm.copy()), lib.tensor(rv.copy())
        y = lib_f.batch_norm(xt, rmt, rvt, wt, bt, training, 0.3, 1e-4)
        y.backward(lib.tensor(g))
        out[lib] = [y, xt.grad, rmt, rvt] + ([wt.grad, bt.grad] if affine else [])
    for i, (a, b_) in enumerate(zip(out[ember], out[torch])):
        close(a, b_, what=f"item {i}")


def test_fused_batch_norm_matches_composite():
    x, g = rand(4, 3, 5, 6, seed=7) * 2 - 1, rand(4, 3, 5, 6, seed=8)
    w, b = rand(3, seed=9, positive=True), rand(3, seed=10)
    res = []
    for fn in (F.batch_norm, batch_norm_composite):
        xe = ember.tensor(x, requires_grad=True)
        we, be = ember.tensor(w, requires_grad=True), ember.tensor(b, requires_grad=True)
        rm, rv = ember.zeros(3), ember.ones(3)
        y = fn(xe, rm, rv, we, be, True, 0.1, 1e-5)
        y.backward(ember.tensor(g))
        res.append([y, xe.grad, we.grad, be.grad, rm, rv])
    for a, b_ in zip(*res):
        close(a, b_)


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_gradcheck_and_double_backward(training):
    x = rand(3, 2, 4, seed=11)
    w, b = rand(2, seed=12, positive=True), rand(2, seed=13)
    rm, rv = (
        ember.tensor(rand(2, seed=14).astype(np.float64)),
        ember.tensor(rand(2, seed=15, positive=True).astype(np.float64)),
    )

    def fn(x_, w_, b_):
        return F.batch_norm(
            x_, None if training else rm, None if training else rv, w_, b_, training
        )

    gradcheck_op(fn, [x, w, b])
    args = [ember.tensor(a.astype(np.float64), requires_grad=True) for a in (x, w, b)]
    assert ember.autograd.gradgradcheck(fn, args)


def test_batch_norm_double_backward_matches_torch():
    x, w = rand(4, 3, 5, seed=16), rand(3, seed=17, positive=True)
    res = []
    for lib, lib_f in ((ember, F), (torch, TF)):
        xt, wt = lib.tensor(x, requires_grad=True), lib.tensor(w, requires_grad=True)
        y = lib_f.batch_norm(xt, None, None, wt, None, True)
        (gx,) = (ember.autograd if lib is ember else torch.autograd).grad(
            (y * y * y).sum(), [xt], create_graph=True
        )
        (gx * gx).sum().backward()
        res.append([gx, xt.grad, wt.grad])
    for a, b_ in zip(*res):
        close(a, b_, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_batch_norm_half_inputs_use_float32_statistics(dtype):
    x = rand(8, 3, 6, 6, seed=18) * 4 + 10  # large mean: float16 statistics would be poor
    tmod, emod = tnn.BatchNorm2d(3), enn.BatchNorm2d(3)
    xe = ember.tensor(x).to(dtype).requires_grad_()
    xt = torch.tensor(x).to(getattr(torch, dtype)).requires_grad_()
    ye, yt = emod(xe), tmod(xt)
    assert ye.dtype.name == dtype
    close(ye.float(), yt.float(), atol=2e-2, rtol=2e-2)
    ye.float().sum().backward()
    yt.float().sum().backward()
    close(xe.grad.float(), xt.grad.float(), atol=2e-2, rtol=2e-2)
    close(emod.weight.grad, tmod.weight.grad, atol=0.5, rtol=2e-2)
    close(emod.running_mean, tmod.running_mean, atol=1e-2, rtol=1e-3)
    close(emod.running_var, tmod.running_var, atol=1e-2, rtol=1e-2)


def test_batch_norm_noncontiguous_and_broadcast_grad():
    x = rand(3, 5, 4, 2, seed=19)
    base = ember.tensor(np.ascontiguousarray(x.transpose(1, 0, 2, 3)), requires_grad=True)
    xe = base.transpose(0, 1)
    assert not xe.is_contiguous()
    xt = torch.tensor(x, requires_grad=True)
    ye = F.batch_norm(xe, None, None, None, None, True)
    yt = TF.batch_norm(xt, None, None, None, None, True)
    close(ye, yt)
    (ye * ember.tensor(x)).sum().backward()  # a plain sum would give a zero gradient
    (yt * torch.tensor(x)).sum().backward()
    close(base.grad.transpose(0, 1), xt.grad)


def test_batch_norm_empty_batch():
    emod, tmod = enn.BatchNorm2d(3), tnn.BatchNorm2d(3)
    xe = ember.zeros(0, 3, 4, 4, requires_grad=True)
    ye, yt = emod(xe), tmod(torch.zeros(0, 3, 4, 4))
    assert tuple(ye.shape) == tuple(yt.shape) == (0, 3, 4, 4)
    ye.sum().backward()
    assert tuple(xe.grad.shape) == (0, 3, 4, 4)
    close(emod.running_mean, tmod.running_mean)
    close(emod.running_var, tmod.running_var)
    assert emod.num_batches_tracked.item() == tmod.num_batches_tracked.item() == 1


def test_batch_norm_errors_name_layer_and_shapes():
    with pytest.raises(
        ValueError,
        match=r"BatchNorm2d: expected 4D input \(N, C, H, W\), got "
        r"shape \(8, 32\)",
    ):
        enn.BatchNorm2d(32)(ember.zeros(8, 32))
    with pytest.raises(
        RuntimeError,
        match=r"BatchNorm2d: expected 32 channels, got input of "
        r"shape \(8, 16, 4, 4\)",
    ):
        enn.BatchNorm2d(32)(ember.zeros(8, 16, 4, 4))
    with pytest.raises(
        ValueError,
        match=r"BatchNorm1d: expected 2D or 3D input .*got shape "
        r"\(2, 3, 4, 5\)",
    ):
        enn.BatchNorm1d(3)(ember.zeros(2, 3, 4, 5))
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        enn.BatchNorm1d(3)(ember.zeros(1, 3))
    with pytest.raises(
        RuntimeError,
        match=r"batch_norm: running_mean should have shape "
        r"\(4,\).*got \(3,\)",
    ):
        F.batch_norm(ember.zeros(2, 4), ember.zeros(3), ember.ones(4))
    with pytest.raises(RuntimeError, match="running_mean and running_var must be given"):
        F.batch_norm(ember.zeros(2, 4), None, None, training=False)
    with pytest.raises(ValueError, match="eps must be positive"):
        F.batch_norm(ember.zeros(2, 4), None, None, training=True, eps=0.0)


def test_batch_norm_state_dict_and_repr_match_torch():
    for kwargs in (
        {},
        {"affine": False},
        {"momentum": None, "track_running_stats": False},
        {"bias": False, "eps": 1e-3},
    ):
        for ecls, tcls in (
            (enn.BatchNorm1d, tnn.BatchNorm1d),
            (enn.BatchNorm2d, tnn.BatchNorm2d),
            (enn.BatchNorm3d, tnn.BatchNorm3d),
        ):
            emod, tmod = ecls(32, **kwargs), tcls(32, **kwargs)
            assert repr(emod) == repr(tmod)
            es, ts = emod.state_dict(), tmod.state_dict()
            assert list(es) == list(ts)
            for k in ts:
                close(es[k], ts[k])
    assert repr(enn.BatchNorm2d(32)) == (
        "BatchNorm2d(32, eps=1e-05, momentum=0.1, affine=True, bias=True, track_running_stats=True)"
    )


def test_batch_norm_loads_old_checkpoint_without_num_batches_tracked():
    from collections import OrderedDict

    emod = enn.BatchNorm2d(3)
    emod.num_batches_tracked.fill_(7)
    state = OrderedDict(
        (k, v) for k, v in enn.BatchNorm2d(3).state_dict().items() if k != "num_batches_tracked"
    )
    state._metadata = {"": {"version": 1}}  # what torch writes for version-1 modules
    emod.load_state_dict(state)
    assert emod.num_batches_tracked.item() == 7
    tmod = tnn.BatchNorm2d(3)
    tstate = OrderedDict((k, v) for k, v in tmod.state_dict().items() if k != "num_batches_tracked")
    tstate._metadata = {"": {"version": 2}}  # a current checkpoint must have the key
    state._metadata = {"": {"version": 2}}
    with pytest.raises(RuntimeError, match="num_batches_tracked"):
        tmod.load_state_dict(tstate)
    with pytest.raises(RuntimeError, match="num_batches_tracked"):
        enn.BatchNorm2d(3).load_state_dict(state)


def test_batch_norm_reset_and_running_stats_are_buffers_not_graph():
    emod = enn.BatchNorm1d(3)
    emod(ember.randn(4, 3, requires_grad=True)).sum().backward()
    assert not emod.running_mean.requires_grad and emod.running_mean.grad_fn is None
    emod.reset_running_stats()
    close(emod.running_mean, np.zeros(3))
    close(emod.running_var, np.ones(3))
    assert emod.num_batches_tracked.item() == 0


# ------------------------------------------------------------------------ layer norm
@pytest.mark.parametrize(
    "shape,normalized",
    [
        ((4, 16), 16),
        ((2, 3, 8), (8,)),
        ((2, 3, 4, 5), (4, 5)),
        ((6, 2, 3), (6, 2, 3)),
        ((5,), [5]),
        ((0, 7), 7),
    ],
)
@pytest.mark.parametrize(
    "kwargs", [{}, {"elementwise_affine": False}, {"bias": False}, {"eps": 1e-3}]
)
def test_layer_norm_module_matches_torch(shape, normalized, kwargs):
    tmod, emod = tnn.LayerNorm(normalized, **kwargs), enn.LayerNorm(normalized, **kwargs)
    if tmod.weight is not None:
        with torch.no_grad():
            tmod.weight.uniform_(0.5, 1.5)
            if tmod.bias is not None:
                tmod.bias.uniform_(-1, 1)
    copy_state(emod, tmod)
    assert repr(emod) == repr(tmod)
    assert list(emod.state_dict()) == list(tmod.state_dict())
    run_steps(emod, tmod, [shape], steps=2)
    emod.eval()
    tmod.eval()
    run_steps(emod, tmod, [shape], steps=1)


def test_layer_norm_repr_and_error():
    assert repr(enn.LayerNorm(128)) == (
        "LayerNorm((128,), eps=1e-05, elementwise_affine=True, bias=True)"
    )
    with pytest.raises(
        RuntimeError,
        match=r"LayerNorm: expected input with trailing shape "
        r"\(128,\), got shape \(4, 64\)",
    ):
        enn.LayerNorm(128)(ember.zeros(4, 64))
    with pytest.raises(
        RuntimeError,
        match=r"layer_norm: expected input with trailing shape "
        r"\(4, 5\), got shape \(5, 4\)",
    ):
        F.layer_norm(ember.zeros(5, 4), (4, 5))
    with pytest.raises(RuntimeError, match=r"layer_norm: weight should have shape \(4,\)"):
        F.layer_norm(ember.zeros(5, 4), (4,), ember.ones(5))


def test_layer_norm_noncontiguous_input():
    x, g = rand(4, 6, seed=20), rand(4, 6, seed=37)
    base = ember.tensor(np.ascontiguousarray(x.T), requires_grad=True)
    xe = base.T
    assert not xe.is_contiguous()
    w = rand(6, seed=21, positive=True)
    we, wt = ember.tensor(w, requires_grad=True), torch.tensor(w, requires_grad=True)
    xt = torch.tensor(x, requires_grad=True)
    ye, yt = F.layer_norm(xe, (6,), we), TF.layer_norm(xt, (6,), wt)
    close(ye, yt)
    ye.backward(ember.tensor(np.ascontiguousarray(g.T)).T)  # a non-contiguous gradient too
    yt.backward(torch.tensor(g))
    close(base.grad.T, xt.grad)
    close(we.grad, wt.grad)


@pytest.mark.parametrize("affine", [True, False])
def test_fused_layer_norm_matches_composite(affine):
    x, g = rand(5, 3, 8, seed=22) * 3 + 2, rand(5, 3, 8, seed=23)
    w, b = rand(3, 8, seed=24, positive=True), rand(3, 8, seed=25)
    res = []
    for fn in (F.layer_norm, layer_norm_composite):
        xe = ember.tensor(x, requires_grad=True)
        we = ember.tensor(w, requires_grad=True) if affine else None
        be = ember.tensor(b, requires_grad=True) if affine else None
        y = fn(xe, (3, 8), we, be, 1e-5)
        y.backward(ember.tensor(g))
        res.append([y, xe.grad] + ([we.grad, be.grad] if affine else []))
    for a, b_ in zip(*res):
        close(a, b_)


@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_gradcheck_and_double_backward(affine):
    x, w, b = rand(3, 2, 4, seed=26), rand(2, 4, seed=27, positive=True), rand(2, 4, seed=28)
    if affine:

        def fn(x_, w_, b_):
            return F.layer_norm(x_, (2, 4), w_, b_)

        arrays = [x, w, b]
    else:

        def fn(x_):
            return F.layer_norm(x_, (4,))

        arrays = [x]
    gradcheck_op(fn, arrays)
    args = [ember.tensor(a.astype(np.float64), requires_grad=True) for a in arrays]
    assert ember.autograd.gradgradcheck(fn, args)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_layer_norm_half_inputs(dtype):
    x = rand(6, 32, seed=29) * 3 + 50
    tmod, emod = tnn.LayerNorm(32).to(getattr(torch, dtype)), enn.LayerNorm(32).to(dtype)
    xe = ember.tensor(x).to(dtype).requires_grad_()
    xt = torch.tensor(x).to(getattr(torch, dtype)).requires_grad_()
    ye, yt = emod(xe), tmod(xt)
    assert ye.dtype.name == dtype
    close(ye.float(), yt.float(), atol=3e-2, rtol=3e-2)
    g = rand(6, 32, seed=30)
    ye.backward(ember.tensor(g).to(dtype))
    yt.backward(torch.tensor(g).to(getattr(torch, dtype)))
    close(xe.grad.float(), xt.grad.float(), atol=0.1, rtol=5e-2)
    assert emod.weight.grad.dtype.name == dtype
    close(emod.weight.grad.float(), tmod.weight.grad.float(), atol=0.1, rtol=5e-2)


# ------------------------------------------------------------------------ group norm
@pytest.mark.parametrize(
    "groups,channels,shape",
    [
        (1, 6, (3, 6, 4)),
        (2, 6, (2, 6, 3, 3)),
        (3, 6, (2, 6, 5)),
        (6, 6, (4, 6, 2, 2)),
        (2, 8, (3, 8)),
        (2, 4, (2, 4, 2, 3, 2)),
    ],
)
@pytest.mark.parametrize("kwargs", [{}, {"affine": False}, {"bias": False}, {"eps": 1e-2}])
def test_group_norm_matches_torch(groups, channels, shape, kwargs):
    tmod, emod = (
        tnn.GroupNorm(groups, channels, **kwargs),
        enn.GroupNorm(groups, channels, **kwargs),
    )
    if tmod.weight is not None:
        with torch.no_grad():
            tmod.weight.uniform_(0.5, 1.5)
            if tmod.bias is not None:
                tmod.bias.uniform_(-1, 1)
    copy_state(emod, tmod)
    assert repr(emod) == repr(tmod)
    run_steps(emod, tmod, [shape], steps=2)


def test_group_norm_gradcheck_double_backward_and_errors():
    x, w, b = rand(2, 4, 3, seed=31), rand(4, seed=32, positive=True), rand(4, seed=33)

    def fn(x_, w_, b_):
        return F.group_norm(x_, 2, w_, b_)

    gradcheck_op(fn, [x, w, b])
    args = [ember.tensor(a.astype(np.float64), requires_grad=True) for a in (x, w, b)]
    assert ember.autograd.gradgradcheck(fn, args)
    with pytest.raises(
        ValueError,
        match=r"num_channels \(6\) must be divisible by num_groups "
        r"\(4\)",
    ):
        enn.GroupNorm(4, 6)
    with pytest.raises(
        RuntimeError,
        match=r"GroupNorm: expected 6 channels, got input of "
        r"shape \(2, 4, 3\)",
    ):
        enn.GroupNorm(2, 6)(ember.zeros(2, 4, 3))
    with pytest.raises(
        RuntimeError,
        match=r"group_norm: .*divisible by num_groups.*shape "
        r"\(2, 6, 3\) and num_groups=4",
    ):
        F.group_norm(ember.zeros(2, 6, 3), 4)


# -------------------------------------------------------------------------- rms norm
@pytest.mark.parametrize("shape,normalized", [((4, 16), 16), ((2, 3, 4, 5), (4, 5)), ((3, 6), [6])])
@pytest.mark.parametrize("kwargs", [{}, {"eps": 1e-3}, {"elementwise_affine": False}])
def test_rms_norm_matches_torch(shape, normalized, kwargs):
    tmod, emod = tnn.RMSNorm(normalized, **kwargs), enn.RMSNorm(normalized, **kwargs)
    if tmod.weight is not None:
        with torch.no_grad():
            tmod.weight.uniform_(0.5, 1.5)
    copy_state(emod, tmod)
    assert repr(emod) == repr(tmod)
    run_steps(emod, tmod, [shape], steps=2)


def test_rms_norm_default_eps_half_gradcheck_and_error():
    x = np.full((2, 4), 1e-5, np.float32)  # eps matters: finfo(float32).eps, as torch
    close(F.rms_norm(ember.tensor(x), (4,)), TF.rms_norm(torch.tensor(x), (4,)))
    xh = rand(3, 8, seed=34)
    for dtype in ("float16", "bfloat16"):
        ye = F.rms_norm(ember.tensor(xh).to(dtype), (8,), ember.ones(8).to(dtype))
        yt = TF.rms_norm(
            torch.tensor(xh).to(getattr(torch, dtype)),
            (8,),
            torch.ones(8).to(getattr(torch, dtype)),
        )
        assert ye.dtype.name == dtype
        close(ye.float(), yt.float(), atol=1e-2, rtol=1e-2)
    gradcheck_op(lambda x_, w_: F.rms_norm(x_, (4,), w_), [rand(3, 4, seed=35), rand(4, seed=36)])
    with pytest.raises(
        RuntimeError,
        match=r"RMSNorm: expected input with trailing shape "
        r"\(8,\), got shape \(3, 4\)",
    ):
        enn.RMSNorm(8)(ember.zeros(3, 4))


# --------------------------------------------------------------------- instance norm
@pytest.mark.parametrize(
    "ecls,tcls,shape",
    [
        (enn.InstanceNorm1d, tnn.InstanceNorm1d, (3, 4, 6)),
        (enn.InstanceNorm2d, tnn.InstanceNorm2d, (2, 4, 3, 5)),
        (enn.InstanceNorm2d, tnn.InstanceNorm2d, (4, 3, 5)),  # unbatched
    ],
)
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"affine": True},
        {"track_running_stats": True},
        {"affine": True, "track_running_stats": True, "momentum": 0.3},
    ],
)
def test_instance_norm_matches_torch(ecls, tcls, shape, kwargs):
    tmod, emod = tcls(4, **kwargs), ecls(4, **kwargs)
    if tmod.weight is not None:
        with torch.no_grad():
            tmod.weight.uniform_(0.5, 1.5)
            tmod.bias.uniform_(-1, 1)
    copy_state(emod, tmod)
    assert repr(emod) == repr(tmod)
    run_steps(emod, tmod, [shape], steps=3)
    emod.eval()
    tmod.eval()
    run_steps(emod, tmod, [shape], steps=1)


@pytest.mark.parametrize("training", [True, False])
def test_norm_gradients_of_parameters_only(training):
    """An input that needs no gradient (the first layer of a model): only weight and bias."""
    x, g = rand(6, 3, 4, seed=38), rand(6, 3, 4, seed=39)
    res = []
    for lib, nn_ in ((ember, enn), (torch, tnn)):
        bn, ln = nn_.BatchNorm1d(3), nn_.LayerNorm(4)
        bn.train(training)
        y = ln(bn(lib.tensor(x)))
        y.backward(lib.tensor(g))
        res.append(
            [
                bn.weight.grad,
                bn.bias.grad,
                ln.weight.grad,
                ln.bias.grad,
                bn.running_mean,
                bn.running_var,
            ]
        )
    for a, b_ in zip(*res):
        close(a, b_)


def test_norm_layers_in_float64_and_after_to():
    x = rand(4, 3, 5, seed=40).astype(np.float64)
    for emod, tmod in (
        (enn.BatchNorm1d(3).double(), tnn.BatchNorm1d(3).double()),
        (enn.LayerNorm(5).to(ember.float64), tnn.LayerNorm(5).double()),
        (enn.GroupNorm(3, 3).double(), tnn.GroupNorm(3, 3).double()),
    ):
        xe, xt = ember.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        ye, yt = emod(xe), tmod(xt)
        assert ye.dtype is ember.float64
        close(ye, yt, atol=1e-12, rtol=1e-10)
        (ye * ye).sum().backward()
        (yt * yt).sum().backward()
        close(xe.grad, xt.grad, atol=1e-10, rtol=1e-8)
    bn = enn.BatchNorm2d(2).double()
    assert bn.running_mean.dtype is ember.float64
    assert bn.num_batches_tracked.dtype is ember.int64
