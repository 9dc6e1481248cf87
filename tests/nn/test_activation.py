"""Activations, functional and module forms, against torch: forward and input gradient on
inputs that include the kinks (0, +-3, the thresholds) and large magnitudes, in-place
variants, non-contiguous inputs, float64 gradcheck, double backward, and torch's reprs."""

from __future__ import annotations

import numpy as np
import pytest

import ember
import ember.nn as enn
import ember.nn.functional as F
from tests.oracle import check_op, gradcheck_op, rand, torch

tnn = torch.nn
TF = torch.nn.functional


def inputs(seed=0, shape=(4, 6, 5)):
    """Random values plus the points where activations change formula, and large ones."""
    x = rand(*shape, seed=seed, low=-5, high=5)
    special = np.array(
        [
            0.0,
            -3.0,
            3.0,
            6.0,
            -1.0,
            1.0,
            0.5,
            20.0,
            25.0,
            -30.0,
            100.0,
            -100.0,
            1e-3,
            -1e-3,
            2.0,
            -2.0,
        ],
        np.float32,
    )
    flat = x.reshape(-1)
    flat[: special.size] = special
    return x


# name -> (ember callable, torch callable); both take (lib_F, tensor)
FUNCTIONAL = {
    "relu": lambda lib_f, t: lib_f.relu(t),
    "relu6": lambda lib_f, t: lib_f.relu6(t),
    "leaky_relu": lambda lib_f, t: lib_f.leaky_relu(t),
    "leaky_relu_0.2": lambda lib_f, t: lib_f.leaky_relu(t, 0.2),
    "leaky_relu_neg": lambda lib_f, t: lib_f.leaky_relu(t, -1.5),
    "elu": lambda lib_f, t: lib_f.elu(t),
    "elu_0.5": lambda lib_f, t: lib_f.elu(t, 0.5),
    "selu": lambda lib_f, t: lib_f.selu(t),
    "celu": lambda lib_f, t: lib_f.celu(t, 0.7),
    "gelu": lambda lib_f, t: lib_f.gelu(t),
    "gelu_tanh": lambda lib_f, t: lib_f.gelu(t, approximate="tanh"),
    "silu": lambda lib_f, t: lib_f.silu(t),
    "mish": lambda lib_f, t: lib_f.mish(t),
    "softplus": lambda lib_f, t: lib_f.softplus(t),
    "softplus_beta": lambda lib_f, t: lib_f.softplus(t, 2.0, 5.0),
    "sigmoid": lambda lib_f, t: lib_f.sigmoid(t),
    "tanh": lambda lib_f, t: lib_f.tanh(t),
    "hardtanh": lambda lib_f, t: lib_f.hardtanh(t),
    "hardtanh_range": lambda lib_f, t: lib_f.hardtanh(t, -2.0, 3.0),
    "hardsigmoid": lambda lib_f, t: lib_f.hardsigmoid(t),
    "hardswish": lambda lib_f, t: lib_f.hardswish(t),
    "logsigmoid": lambda lib_f, t: lib_f.logsigmoid(t),
    "softsign": lambda lib_f, t: lib_f.softsign(t),
    "tanhshrink": lambda lib_f, t: lib_f.tanhshrink(t),
    "threshold": lambda lib_f, t: lib_f.threshold(t, 1.0, -7.0),
    "glu": lambda lib_f, t: lib_f.glu(t, 1),
    "glu_last": lambda lib_f, t: lib_f.glu(t[..., :4]),
    "softmax": lambda lib_f, t: lib_f.softmax(t, dim=1),
    "log_softmax": lambda lib_f, t: lib_f.log_softmax(t, dim=-1),
    "softmin": lambda lib_f, t: lib_f.softmin(t, dim=0),
    "softmax_dtype": lambda lib_f, t: lib_f.softmax(
        t, dim=2, dtype=(ember.float64 if lib_f is F else torch.float64)
    ),
}


def _lib_call(fn):
    return (lambda t: fn(F, t)), (lambda t: fn(TF, t))


@pytest.mark.parametrize("name", sorted(FUNCTIONAL))
def test_functional_matches_torch(name):
    e_fn, t_fn = _lib_call(FUNCTIONAL[name])
    check_op(e_fn, [inputs()], torch_fn=t_fn, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "name",
    ["leaky_relu", "elu", "mish", "hardswish", "softsign", "threshold", "glu", "softmin", "selu"],
)
def test_functional_noncontiguous(name):
    e_fn, t_fn = _lib_call(FUNCTIONAL[name])
    check_op(e_fn, [inputs(1)], torch_fn=t_fn, noncontiguous=True, atol=2e-5)


@pytest.mark.parametrize(
    "name",
    [
        "leaky_relu_0.2",
        "elu_0.5",
        "selu",
        "celu",
        "mish",
        "hardtanh_range",
        "hardsigmoid",
        "hardswish",
        "logsigmoid",
        "softsign",
        "tanhshrink",
        "threshold",
        "glu",
        "softmin",
    ],
)
def test_gradcheck_float64(name):
    fn = FUNCTIONAL[name]
    x = rand(3, 4, 4, seed=2, low=-4, high=4)
    x[np.abs(x - np.round(x)) < 0.05] += 0.1  # away from the kinks (finite differences)
    gradcheck_op(lambda t: fn(F, t), [x])


@pytest.mark.parametrize(
    "name",
    [
        "leaky_relu_0.2",
        "elu",
        "selu",
        "celu",
        "mish",
        "hardswish",
        "logsigmoid",
        "softsign",
        "glu",
        "hardtanh",
        "threshold",
    ],
)
def test_double_backward_matches_torch(name):
    fn = FUNCTIONAL[name]
    x = np.clip(inputs(3, (3, 4, 4)), -10, 10)  # torch's mish double backward is NaN at 100
    res = []
    for lib, lib_f in ((ember, F), (torch, TF)):
        t = lib.tensor(x, requires_grad=True)
        y = fn(lib_f, t)
        (gx,) = (ember.autograd if lib is ember else torch.autograd).grad(
            (y * y).sum(), [t], create_graph=True
        )
        (gx * gx).sum().backward()
        res.append((gx.detach().numpy(), t.grad.detach().numpy()))
    for a, b in zip(*res):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


INPLACE = {
    "relu": (lambda lib_f, t: lib_f.relu(t, inplace=True)),
    "relu_": (lambda lib_f, t: lib_f.relu_(t)),
    "relu6": (lambda lib_f, t: lib_f.relu6(t, inplace=True)),
    "leaky_relu": (lambda lib_f, t: lib_f.leaky_relu(t, 0.3, inplace=True)),
    "leaky_relu_": (lambda lib_f, t: lib_f.leaky_relu_(t, 0.3)),
    "elu": (lambda lib_f, t: lib_f.elu(t, inplace=True)),
    "elu_": (lambda lib_f, t: lib_f.elu_(t, 0.5)),
    "selu": (lambda lib_f, t: lib_f.selu(t, inplace=True)),
    "celu": (lambda lib_f, t: lib_f.celu(t, 1.5, inplace=True)),
    "silu": (lambda lib_f, t: lib_f.silu(t, inplace=True)),
    "mish": (lambda lib_f, t: lib_f.mish(t, inplace=True)),
    "hardtanh": (lambda lib_f, t: lib_f.hardtanh(t, -2.0, 2.0, inplace=True)),
    "hardtanh_": (lambda lib_f, t: lib_f.hardtanh_(t)),
    "hardsigmoid": (lambda lib_f, t: lib_f.hardsigmoid(t, inplace=True)),
    "hardswish": (lambda lib_f, t: lib_f.hardswish(t, inplace=True)),
    "threshold": (lambda lib_f, t: lib_f.threshold(t, 0.5, 2.0, inplace=True)),
    "threshold_": (lambda lib_f, t: lib_f.threshold_(t, 0.5, 2.0)),
}


@pytest.mark.parametrize("name", sorted(INPLACE))
def test_inplace_variants_match_torch(name):
    fn = INPLACE[name]
    x, g = inputs(4), rand(4, 6, 5, seed=5)
    res = []
    for lib, lib_f in ((ember, F), (torch, TF)):
        leaf = lib.tensor(x, requires_grad=True)
        h = leaf * 2  # a non-leaf: in-place on it is allowed
        out = fn(lib_f, h)
        assert out is h
        out.backward(lib.tensor(g))
        res.append((h.detach().numpy(), leaf.grad.detach().numpy()))
        plain = lib.tensor(x)
        assert fn(lib_f, plain) is plain  # no grad: writes straight into the tensor
        res.append((plain.numpy(),))
    for a, b in zip(res[0] + res[1], res[2] + res[3]):
        np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-4)
    with pytest.raises(RuntimeError, match="leaf Variable"):
        fn(F, ember.tensor(x, requires_grad=True))


MODULES = [
    ("ReLU", (), {}),
    ("ReLU", (True,), {}),
    ("ReLU6", (), {}),
    ("ReLU6", (True,), {}),
    ("LeakyReLU", (), {}),
    ("LeakyReLU", (0.2, True), {}),
    ("ELU", (), {}),
    ("ELU", (0.5, True), {}),
    ("SELU", (), {}),
    ("CELU", (0.7,), {}),
    ("GELU", (), {}),
    ("GELU", ("tanh",), {}),
    ("SiLU", (), {}),
    ("SiLU", (True,), {}),
    ("Mish", (), {}),
    ("Softplus", (), {}),
    ("Softplus", (2, 10), {}),
    ("Sigmoid", (), {}),
    ("Tanh", (), {}),
    ("Hardtanh", (), {}),
    ("Hardtanh", (-2, 2, True), {}),
    ("Hardsigmoid", (), {}),
    ("Hardswish", (), {}),
    ("LogSigmoid", (), {}),
    ("Softsign", (), {}),
    ("Tanhshrink", (), {}),
    ("Threshold", (0.1, 20), {}),
    ("GLU", (), {"dim": 1}),
    ("Softmax", (1,), {}),
    ("LogSoftmax", (-1,), {}),
    ("Softmin", (), {"dim": 0}),
    ("PReLU", (), {}),
    ("PReLU", (6,), {"init": 0.1}),
]


@pytest.mark.parametrize("name,args,kwargs", MODULES)
def test_modules_match_torch(name, args, kwargs):
    emod, tmod = getattr(enn, name)(*args, **kwargs), getattr(tnn, name)(*args, **kwargs)
    assert repr(emod) == repr(tmod)
    assert list(emod.state_dict()) == list(tmod.state_dict())
    x, g = inputs(6), rand(4, 6, 5, seed=7)
    xe = ember.tensor(x, requires_grad=True)
    xt = torch.tensor(x, requires_grad=True)
    he, ht = xe * 1, xt * 1  # non-leaf, so inplace=True modules may write into it
    ye, yt = emod(he), tmod(ht)
    np.testing.assert_allclose(ye.detach().numpy(), yt.detach().numpy(), atol=2e-5, rtol=1e-4)
    ye.backward(ember.tensor(g[tuple(slice(0, s) for s in ye.shape)]))
    yt.backward(torch.tensor(g[tuple(slice(0, s) for s in yt.shape)]))
    np.testing.assert_allclose(xe.grad.numpy(), xt.grad.numpy(), atol=2e-5, rtol=1e-4)
    for pe, pt in zip(emod.parameters(), tmod.parameters()):
        np.testing.assert_allclose(pe.grad.numpy(), pt.grad.numpy(), atol=1e-4, rtol=1e-4)
    emod.eval()
    np.testing.assert_allclose(
        emod(ember.tensor(x)).detach().numpy(), yt.detach().numpy(), atol=2e-5, rtol=1e-4
    )


def test_module_reprs_are_torchs():
    assert repr(enn.GELU()) == "GELU(approximate='none')"
    assert repr(enn.LeakyReLU(0.2, True)) == "LeakyReLU(negative_slope=0.2, inplace=True)"
    assert repr(enn.Softmax(dim=1)) == "Softmax(dim=1)"
    assert repr(enn.Softplus()) == "Softplus(beta=1.0, threshold=20.0)"


def test_half_precision_activations():
    x = inputs(8)
    for dt in ("float16", "bfloat16"):
        for name in ("leaky_relu", "elu", "hardswish", "hardsigmoid", "relu6", "mish"):
            fn = FUNCTIONAL[name]
            ye = fn(F, ember.tensor(x).to(dt))
            yt = fn(TF, torch.tensor(x).to(getattr(torch, dt)))
            assert ye.dtype.name == dt, name
            np.testing.assert_allclose(
                ye.float().numpy(), yt.float().numpy(), atol=5e-2, rtol=2e-2, err_msg=f"{name} {dt}"
            )


def test_prelu_per_channel_and_errors():
    x, w = inputs(9), rand(6, seed=10)
    check_op(lambda t, a: F.prelu(t, a), [x, w], torch_fn=lambda t, a: TF.prelu(t, a))
    check_op(lambda t, a: F.prelu(t, a), [x, w[:1]], torch_fn=lambda t, a: TF.prelu(t, a))
    with pytest.raises(
        RuntimeError,
        match=r"prelu: expected weight with 1 element or one per "
        r"channel, got weight of shape \(4,\)",
    ):
        F.prelu(ember.tensor(x), ember.ones(4))


def test_activation_errors():
    with pytest.raises(
        RuntimeError,
        match=r"glu: Halving dimension must be even, but "
        r"dimension 1 is size 5",
    ):
        F.glu(ember.ones(2, 5), 1)
    with pytest.raises(ValueError, match="min_val cannot be greater than max_val"):
        F.hardtanh(ember.ones(2), 2.0, 1.0)
    with pytest.raises(RuntimeError, match="leaky_relu: not implemented for 'int64'"):
        F.leaky_relu(ember.tensor([1, 2]))
    with pytest.raises(
        RuntimeError, match="gelu: approximate argument must be either none or tanh"
    ):
        enn.GELU("fast")(ember.ones(2))


def test_empty_and_scalar_inputs():
    for name in (
        "leaky_relu",
        "elu",
        "hardtanh",
        "hardsigmoid",
        "hardswish",
        "mish",
        "threshold",
        "relu6",
    ):
        e_fn, t_fn = _lib_call(FUNCTIONAL[name])
        check_op(e_fn, [np.zeros((0, 3), np.float32)], torch_fn=t_fn)
        check_op(e_fn, [np.array(-0.7, np.float32)], torch_fn=t_fn)


@pytest.mark.parametrize("name", ["elu", "elu_0.5", "selu", "celu"])
def test_elu_family_large_with_edges_matches_torch(name):
    """One Function (EluFn) on arrays large enough for the branch-free select: values and
    gradients against torch, with inf, -inf, NaN, -0.0 and huge inputs included (torch's
    elu_backward gives the positive slope at NaN)."""
    fn = FUNCTIONAL[name]
    x = rand(64, 1024, seed=9, low=-6, high=6)
    x[0, :6] = [np.inf, -np.inf, np.nan, -0.0, 1e30, -1e30]
    e = ember.tensor(x, requires_grad=True)
    t = torch.tensor(x, requires_grad=True)
    ye, yt = fn(F, e), fn(TF, t)
    g = rand(64, 1024, seed=10)
    ye.backward(ember.tensor(g))
    yt.backward(torch.tensor(g))
    for a, b in ((ye.detach().numpy(), yt.detach().numpy()), (e.grad.numpy(), t.grad.numpy())):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-6)
    np.testing.assert_array_equal(  # -0.0 stays -0.0 (the sign of zero), as torch
        np.signbit(ye.detach().numpy()[0, :6]), np.signbit(yt.detach().numpy()[0, :6])
    )
    half = fn(F, ember.tensor(x[1:]).half()).float().numpy()
    want = fn(TF, torch.tensor(x[1:]).half()).float().numpy()
    np.testing.assert_allclose(half, want, rtol=1e-3, atol=1e-3)
