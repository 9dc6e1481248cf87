"""linear / bilinear and the Linear / Bilinear modules against torch (weights copied from
torch; forward and every gradient), the fused linear against its matmul composite, gradcheck
and double backward, init statistics, repr, state dict and the error messages."""

from __future__ import annotations

import math

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


@pytest.mark.parametrize("xshape", [(5, 4), (2, 3, 4), (4,), (0, 4), (2, 1, 3, 4)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_torch(xshape, bias):
    inputs = [rand(*xshape, seed=1), rand(3, 4, seed=2)] + ([rand(3, seed=3)] if bias else [])
    check_op(
        lambda x, w, b=None, lib=F: lib.linear(x, w, b),
        inputs,
        torch_fn=lambda x, w, b=None: TF.linear(x, w, b),
    )


def test_linear_noncontiguous_broadcast_bias_and_1d_weight():
    check_op(
        lambda x, w, b, lib=F: lib.linear(x, w, b),
        [rand(6, 4, seed=4), rand(3, 4, seed=5), rand(3, seed=6)],
        torch_fn=lambda x, w, b: TF.linear(x, w, b),
        noncontiguous=True,
    )
    check_op(
        lambda x, w, b, lib=F: lib.linear(x, w, b),
        [rand(2, 5, 4, seed=7), rand(3, 4, seed=8), rand(1, seed=9)],
        torch_fn=lambda x, w, b: TF.linear(x, w, b),
    )
    check_op(
        lambda x, w, lib=F: lib.linear(x, w),
        [rand(2, 4, seed=10), rand(4, seed=11)],
        torch_fn=lambda x, w: TF.linear(x, w),
    )


def test_fused_linear_matches_composite():
    """The fused Function against x @ w.T + b built from ember ops."""
    x, w, b = rand(7, 5, seed=12), rand(3, 5, seed=13), rand(3, seed=14)
    res = []
    for fn in (lambda x, w, b: F.linear(x, w, b), lambda x, w, b: x @ w.t() + b):
        ts = [ember.tensor(a, requires_grad=True) for a in (x, w, b)]
        y = fn(*ts)
        (y * y).sum().backward()
        res.append([_np(y)] + [_np(t.grad) for t in ts])
    for a, c in zip(*res):
        np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-5)


def test_linear_gradcheck_and_double_backward():
    inputs = [rand(3, 2, 4, seed=15), rand(5, 4, seed=16), rand(5, seed=17)]
    gradcheck_op(F.linear, inputs)
    args = [ember.tensor(a.astype(np.float64), requires_grad=True) for a in inputs]
    assert ember.autograd.gradgradcheck(lambda x, w, b: F.linear(x, w, b).tanh(), args)


def test_bilinear_matches_torch():
    for lead in [(4,), (2, 3)]:
        inputs = [
            rand(*lead, 3, seed=18),
            rand(*lead, 5, seed=19),
            rand(2, 3, 5, seed=20),
            rand(2, seed=21),
        ]
        check_op(
            lambda a, b, w, c, lib=F: lib.bilinear(a, b, w, c),
            inputs,
            torch_fn=lambda a, b, w, c: TF.bilinear(a, b, w, c),
        )
    emod, tmod = enn.Bilinear(3, 5, 2), tnn.Bilinear(3, 5, 2)
    emod.load_state_dict({k: v.detach().numpy().copy() for k, v in tmod.state_dict().items()})
    check_op(emod, [rand(4, 3, seed=22), rand(4, 5, seed=23)], torch_fn=tmod)
    assert repr(emod) == repr(tmod)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("xshape", [(8, 6), (2, 3, 6), (6,)])
def test_linear_module_matches_torch(bias, xshape):
    tmod, emod = tnn.Linear(6, 4, bias=bias), enn.Linear(6, 4, bias=bias)
    emod.load_state_dict({k: v.detach().numpy().copy() for k, v in tmod.state_dict().items()})
    assert list(emod.state_dict()) == list(tmod.state_dict())
    x = rand(*xshape, seed=24)
    for mode in ("train", "eval"):
        getattr(emod, mode)()
        getattr(tmod, mode)()
        xe, xt = ember.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        ye, yt = emod(xe), tmod(xt)
        np.testing.assert_allclose(_np(ye), _np(yt), rtol=1e-5, atol=1e-5)
        g = np.random.default_rng(1).standard_normal(tuple(yt.shape)).astype(np.float32)
        ye.backward(ember.tensor(g))
        yt.backward(torch.tensor(g))
        np.testing.assert_allclose(_np(xe.grad), _np(xt.grad), rtol=1e-5, atol=1e-5)
        for (name, pe), (_, pt) in zip(emod.named_parameters(), tmod.named_parameters()):
            np.testing.assert_allclose(
                _np(pe.grad), _np(pt.grad), rtol=1e-5, atol=1e-5, err_msg=name
            )
            pe.grad = pt.grad = None


def test_linear_init_statistics_repr_and_dtype():
    m = enn.Linear(784, 512)
    bound = 1 / math.sqrt(784)
    w, b = _np(m.weight), _np(m.bias)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    assert abs(w.std() - bound / math.sqrt(3)) < 0.01 * bound
    assert abs(w.mean()) < 0.01 * bound
    assert np.abs(b).max() <= bound and b.std() > 0.4 * bound
    assert w.dtype == np.float32 and w.shape == (512, 784)
    assert (
        repr(m) == repr(tnn.Linear(784, 512)) == "Linear(in_features=784, "
        "out_features=512, bias=True)"
    )
    assert repr(enn.Linear(3, 4, bias=False)) == repr(tnn.Linear(3, 4, bias=False))
    m64 = enn.Linear(3, 2, dtype=ember.float64)
    assert m64.weight.dtype == ember.float64 and m64.bias.dtype == ember.float64
    assert m64(ember.ones(4, 3, dtype=ember.float64)).dtype == ember.float64
    assert isinstance(enn.Identity(3, foo=1), enn.Module)


def test_error_messages():
    with pytest.raises(
        RuntimeError,
        match=r"Linear: expected input with last dimension 784 "
        r"\(in_features\), got input of shape \(128, 100\)",
    ):
        enn.Linear(784, 10)(ember.zeros(128, 100))
    with pytest.raises(
        RuntimeError,
        match=r"linear: expected input with last dimension 4, got "
        r"input of shape \(2, 5\) \(weight of shape \(3, 4\)",
    ):
        F.linear(ember.zeros(2, 5), ember.zeros(3, 4))
    with pytest.raises(
        RuntimeError,
        match=r"linear: expected input and weight to have the same "
        r"dtype",
    ):
        F.linear(ember.zeros(2, 4, dtype=ember.float64), ember.zeros(3, 4))
    with pytest.raises(RuntimeError, match=r"Linear: expected input with last dimension 4"):
        enn.Linear(4, 2)(ember.tensor(1.0))
    with pytest.raises(
        RuntimeError,
        match=r"Bilinear: expected input2 with last dimension 5, "
        r"got input2 of shape \(4, 6\)",
    ):
        enn.Bilinear(3, 5, 2)(ember.zeros(4, 3), ember.zeros(4, 6))
