"""The fused batch-norm channel loops (ember/cpu/_batchnorm_kernels.py) against torch and
against the NumPy path they replace: BatchNorm1d/2d modules over training steps then eval,
each affine and running-stat setting, each subset of wanted gradients, channels at 1e4, and
channel blocks on two threads giving the bits of one."""

from __future__ import annotations

import numpy as np
import pytest

import ember
import ember.nn as enn
import ember.nn.functional as F
from ember.cpu import compile as cpu_compile
from ember.nn.functional import normalization as N
from ember.ops import parallel as P
from tests.oracle import torch

tnn = torch.nn
TF = torch.nn.functional


def _close(mine, theirs, what, atol=1e-5, rtol=1e-4):
    if isinstance(theirs, torch.Tensor):
        theirs = theirs.detach().numpy()
    mine = mine.numpy() if isinstance(mine, ember.Tensor) else mine
    np.testing.assert_allclose(mine, theirs, rtol=rtol, atol=atol, err_msg=what)


def _grads(x, w, b, g, training=True, rm=None, rv=None, needs=(True, True, True), momentum=0.1):
    """(out, [dx, dw, db], running mean, running var) of F.batch_norm as raw arrays."""
    xe = ember.tensor(x, requires_grad=needs[0])
    we = None if w is None else ember.tensor(w, requires_grad=needs[1])
    be = None if b is None else ember.tensor(b, requires_grad=needs[2])
    rme = None if rm is None else ember.tensor(rm.copy())
    rve = None if rv is None else ember.tensor(rv.copy())
    y = F.batch_norm(xe, rme, rve, we, be, training, momentum, 1e-5)
    y.backward(ember.tensor(g))
    grads = [None if t is None or t.grad is None else t.grad.numpy() for t in (xe, we, be)]
    stats = [None if t is None else t.numpy() for t in (rme, rve)]
    return y.detach().numpy(), grads, stats


BN_CASES = [
    (enn.BatchNorm1d, tnn.BatchNorm1d, (16, 6)),  # L = 1: NumPy's path, kernels on or off
    (enn.BatchNorm1d, tnn.BatchNorm1d, (8, 6, 37)),
    (enn.BatchNorm2d, tnn.BatchNorm2d, (8, 6, 7, 9)),
]


@pytest.mark.parametrize("ecls,tcls,shape", BN_CASES)
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"affine": False},
        {"track_running_stats": False},
        {"momentum": None},
        {"affine": False, "track_running_stats": False},
    ],
)
def test_modules_match_torch_over_steps_then_eval(ecls, tcls, shape, kwargs, kernels_on):
    torch.manual_seed(0)
    tmod, emod = tcls(6, **kwargs), ecls(6, **kwargs)
    if tmod.weight is not None:
        with torch.no_grad():
            tmod.weight.uniform_(0.5, 1.5)
            tmod.bias.uniform_(-1, 1)
    emod.load_state_dict({k: v.detach().numpy().copy() for k, v in tmod.state_dict().items()})
    rng = np.random.default_rng(0)
    for step, training in enumerate([True] * 3 + [False] * 2):
        emod.train(training)
        tmod.train(training)
        x = (rng.standard_normal(shape) * 2 + 0.5).astype(np.float32)
        g = rng.standard_normal(shape).astype(np.float32)
        xe, xt = ember.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        ye, yt = emod(xe), tmod(xt)
        _close(ye.detach(), yt, f"step {step}: forward")
        ye.backward(ember.tensor(g))
        yt.backward(torch.tensor(g))
        _close(xe.grad, xt.grad, f"step {step}: input grad")
        for (name, pe), (_, pt) in zip(emod.named_parameters(), tmod.named_parameters()):
            _close(pe.grad, pt.grad, f"step {step}: grad of {name}")
            pe.grad, pt.grad = None, None
        tb = dict(tmod.named_buffers())
        for name, buf in emod.named_buffers():
            _close(buf, tb[name], f"step {step}: buffer {name}")


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape", [(4, 3, 5), (8, 16, 12, 11), (2, 5, 1, 64)])
def test_fused_matches_numpy_path(shape, affine, training, monkeypatch, count_calls):
    monkeypatch.setenv("EMBER_CPU_KERNELS", "1")
    kernels = cpu_compile.load("batchnorm")
    fwd = count_calls(kernels, "batch_norm_forward")
    bwd = count_calls(kernels, "batch_norm_backward")
    rng = np.random.default_rng(1)
    c = shape[1]
    x = (rng.standard_normal(shape) * 3 + 2).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    w, b = (rng.standard_normal(c).astype(np.float32) for _ in range(2)) if affine else (None,) * 2
    rm = rng.standard_normal(c).astype(np.float32)
    rv = rng.uniform(0.5, 2, c).astype(np.float32)
    got = _grads(x, w, b, g, training, rm, rv)
    assert fwd and bwd, "the fused loops did not run"
    monkeypatch.setenv("EMBER_CPU_KERNELS", "0")
    ref = _grads(x, w, b, g, training, rm, rv)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-5, atol=2e-6)
    for mine, theirs in zip(got[1] + got[2], ref[1] + ref[2]):
        assert (mine is None) == (theirs is None)
        if mine is not None:
            np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "needs",
    [(True, False, False), (False, True, False), (False, False, True), (False, True, True)],
)
@pytest.mark.parametrize("training", [True, False])
def test_each_subset_of_gradients(needs, training, kernels_on, monkeypatch):
    rng = np.random.default_rng(2)
    x, g = (rng.standard_normal((6, 5, 40)).astype(np.float32) for _ in range(2))
    w, b = (rng.standard_normal(5).astype(np.float32) for _ in range(2))
    rm, rv = np.zeros(5, np.float32), np.full(5, 2.0, np.float32)
    _, grads, _ = _grads(x, w, b, g, training, rm, rv, needs)
    monkeypatch.setenv("EMBER_CPU_KERNELS", "0")
    _, ref, _ = _grads(x, w, b, g, training, rm, rv, needs)
    for need, mine, theirs in zip(needs, grads, ref):
        assert (mine is None) == (not need)
        if need:
            np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-5)


def test_large_mean_keeps_its_precision(kernels_on):
    """Channels at 1e4 with a spread of 1: the corrected two-pass variance and the mean kept
    in two float32 parts hold float32 precision (float64 is the oracle) in the output, the
    running statistics and dx. NumPy's path is ~2e-3 off in the output here, torch ~8e-4
    (half an ulp of 1e4 in a float32 mean)."""
    rng = np.random.default_rng(3)
    x = (1e4 + rng.standard_normal((16, 4, 8, 8))).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    rm, rv = np.zeros(4, np.float32), np.ones(4, np.float32)
    out, (dx, _, _), (rm1, rv1) = _grads(x, None, None, g, True, rm, rv, momentum=1.0)
    x64, g64 = x.astype(np.float64), g.astype(np.float64)
    mean = x64.mean((0, 2, 3), keepdims=True)
    var = x64.var((0, 2, 3), keepdims=True)
    rstd = 1 / np.sqrt(var + 1e-5)
    xhat = (x64 - mean) * rstd
    exact_dx = rstd * (
        g64
        - g64.mean((0, 2, 3), keepdims=True)
        - xhat * (g64 * xhat).mean((0, 2, 3), keepdims=True)
    )
    np.testing.assert_allclose(out, xhat, rtol=1e-5, atol=2e-6)
    np.testing.assert_allclose(rm1, mean.ravel(), rtol=1e-7)
    np.testing.assert_allclose(rv1, x64.var((0, 2, 3), ddof=1), rtol=1e-6)
    np.testing.assert_allclose(dx, exact_dx, rtol=1e-5, atol=2e-6)


def test_constant_channel_normalises_to_the_bias(kernels_on):
    x = np.full((4, 3, 10), 0.1, np.float32)
    x[:, 1] = np.linspace(-1, 1, 40, dtype=np.float32).reshape(4, 10)
    b = np.array([0.5, 0.0, -0.5], np.float32)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    out, _, (_, rv1) = _grads(x, np.ones(3, np.float32), b, np.ones_like(x), True, rm, rv)
    np.testing.assert_allclose(out[:, 0], 0.5, atol=1e-5)
    np.testing.assert_allclose(out[:, 2], -0.5, atol=1e-5)
    assert (rv1 >= 0).all()


def test_two_threads_give_the_bits_of_one(kernels_on, monkeypatch):
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((32, 24, 9, 10)) * 2 + 3).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    w, b = (rng.standard_normal(24).astype(np.float32) for _ in range(2))
    rm, rv = np.zeros(24, np.float32), np.ones(24, np.float32)
    monkeypatch.setattr(N, "_BN_BLOCK", 32 * 90 * 5)  # blocks of 5 channels: 5 blocks
    before = P.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            P.set_num_threads(threads)
            results.append(_grads(x, w, b, g, True, rm, rv))
    finally:
        P.set_num_threads(before)
    (o1, g1, s1), (o2, g2, s2) = results
    np.testing.assert_array_equal(o1, o2)
    for a, c in zip(g1 + s1, g2 + s2):
        np.testing.assert_array_equal(a, c)


def test_noncontiguous_and_half_inputs(kernels_on, count_calls):
    calls = count_calls(cpu_compile.load("batchnorm"), "batch_norm_forward")
    rng = np.random.default_rng(5)
    base = rng.standard_normal((6, 4, 8, 5)).astype(np.float32)
    x = base.transpose(0, 1, 3, 2)  # not contiguous
    xe = ember.tensor(base, requires_grad=True)
    xt = torch.tensor(base, requires_grad=True)
    ye = F.batch_norm(xe.transpose(2, 3), None, None, None, None, True)
    yt = TF.batch_norm(xt.transpose(2, 3), None, None, None, None, True)
    g = rng.standard_normal(x.shape).astype(np.float32)
    ye.backward(ember.tensor(g))
    yt.backward(torch.tensor(g))
    _close(ye.detach(), yt, "forward")
    _close(xe.grad, xt.grad, "input grad")
    h = ember.tensor(base.astype(np.float16))
    y = F.batch_norm(h, None, None, None, None, True)
    assert y.dtype == ember.float16
    ref = TF.batch_norm(torch.tensor(base.astype(np.float16)).float(), None, None, training=True)
    _close(y.numpy().astype(np.float32), ref, "half forward", atol=3e-3, rtol=1e-3)
    assert len(calls) == 2
