"""The fused group-norm loops (ember/cpu/_groupnorm_kernels.py, run by
ember/nn/functional/_group_norm.py) against torch and against the composite path they replace:
every affine setting, 1, C and in-between groups, inputs of 2 to 5 dims (L = 1 included),
non-contiguous and half inputs, groups at 1e4 against float64, two threads giving the bits of
one, and double backward through the recorded closed form."""

from __future__ import annotations

import numpy as np
import pytest

import ember
import ember.nn.functional as F
from ember.cpu import compile as cpu_compile
from ember.nn.functional import _group_norm as GN
from ember.ops import parallel as P
from tests.oracle import torch

TF = torch.nn.functional

SHAPES = [(6, 8), (4, 8, 1), (3, 8, 7), (2, 8, 5, 6), (2, 8, 3, 2, 4)]
AFFINES = ["both", "weight", "bias", "none"]


def _inputs(shape, affine, seed, offset=0.5, spread=2.0):
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = (rng.standard_normal(shape) * spread + offset).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    w = rng.uniform(0.5, 1.5, c).astype(np.float32) if affine in ("both", "weight") else None
    b = rng.standard_normal(c).astype(np.float32) if affine in ("both", "bias") else None
    return x, g, w, b


def _ember(x, g, w, b, groups, eps=1e-5):
    """(out, [dx, dw, db]) of F.group_norm as float32 arrays (None where no argument)."""
    ts = [None if a is None else ember.tensor(a, requires_grad=True) for a in (x, w, b)]
    y = F.group_norm(ts[0], groups, ts[1], ts[2], eps)
    y.backward(ember.tensor(g).to(y.dtype))
    return y.detach().numpy(), [None if t is None else t.grad.numpy() for t in ts]


def _torch(x, g, w, b, groups, eps=1e-5):
    ts = [None if a is None else torch.tensor(a, requires_grad=True) for a in (x, w, b)]
    wt = ts[1]
    if wt is None and b is not None:  # torch 2.13's backward fails on a bias without weight
        wt = torch.ones(x.shape[1], dtype=ts[2].dtype)
    y = TF.group_norm(ts[0], groups, wt, ts[2], eps)
    y.backward(torch.tensor(g).to(y.dtype))
    return y.detach().numpy(), [None if t is None else t.grad.numpy() for t in ts]


def _assert_close(got, ref, atol, rtol):
    np.testing.assert_allclose(got[0], ref[0], rtol=rtol, atol=atol, err_msg="forward")
    for name, mine, theirs in zip(("dx", "dw", "db"), got[1], ref[1]):
        assert (mine is None) == (theirs is None), name
        if mine is not None:
            assert mine.dtype == theirs.dtype, name
            np.testing.assert_allclose(
                mine.astype(np.float32), theirs.astype(np.float32), rtol=rtol, atol=atol,
                err_msg=name,
            )  # fmt: skip


@pytest.fixture
def counted(kernels_on, count_calls):
    """The (forward, backward) call lists of the group-norm loops."""
    kernels = cpu_compile.load("groupnorm")
    return count_calls(kernels, "group_norm_forward"), count_calls(kernels, "group_norm_backward")


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("groups", [1, 2, 8])
@pytest.mark.parametrize("affine", AFFINES)
def test_matches_torch(shape, groups, affine, counted):
    x, g, w, b = _inputs(shape, affine, seed=0)
    got = _ember(x, g, w, b, groups)
    fused = x.size // (shape[0] * groups) >= 2  # one-element groups keep the composite
    assert (len(counted[0]), len(counted[1])) == ((1, 1) if fused else (0, 0))
    # one-element groups: torch's x - mean is a rounding error, scaled by 1/sqrt(eps) = 316
    _assert_close(got, _torch(x, g, w, b, groups), atol=2e-5 if fused else 3e-4, rtol=1e-4)


@pytest.mark.parametrize("shape", [(4, 32, 1), (3, 8, 7), (2, 8, 5, 6), (2, 16, 3, 2, 4)])
@pytest.mark.parametrize("groups", [1, 4, 8])
@pytest.mark.parametrize("affine", ["both", "none"])
def test_matches_composite_path(shape, groups, affine, counted, monkeypatch):
    x, g, w, b = _inputs(shape, affine, seed=1, offset=2.0, spread=3.0)
    got = _ember(x, g, w, b, groups)
    assert counted[0] and counted[1], "the fused loops did not run"
    monkeypatch.setenv("EMBER_CPU_KERNELS", "0")
    ref = _ember(x, g, w, b, groups)
    assert len(counted[0]) == 1, "kernels off still ran the loops"
    _assert_close(got, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("needs", [(True, False, False), (False, True, False), (False, True, True)])
def test_each_subset_of_gradients(needs, counted):
    x, g, w, b = _inputs((3, 8, 10), "both", seed=2)
    ts = [ember.tensor(a, requires_grad=need) for a, need in zip((x, w, b), needs)]
    F.group_norm(ts[0], 4, ts[1], ts[2]).backward(ember.tensor(g))
    _, ref = _torch(x, g, w, b, 4)
    for need, t, theirs in zip(needs, ts, ref):
        assert (t.grad is None) == (not need)
        if need:
            np.testing.assert_allclose(t.grad.numpy(), theirs, rtol=1e-4, atol=2e-5)
    assert counted[1]


def test_large_offset_keeps_its_precision(counted):
    """Groups at 1e4 with a spread of 1: the corrected two-pass variance and the mean kept in
    two float32 parts hold float32 precision against float64 in the output and dx (a float32
    mean alone is half an ulp of 1e4 off, ~5e-4 of the spread)."""
    x, g, w, b = _inputs((4, 8, 6, 6), "both", seed=3, offset=1e4, spread=1.0)
    out, (dx, dw, db) = _ember(x, g, w, b, 2)
    x64, g64 = x.astype(np.float64).reshape(4, 2, -1), g.astype(np.float64)
    mean, var = x64.mean(2, keepdims=True), x64.var(2, keepdims=True)
    rstd = 1 / np.sqrt(var + 1e-5)
    xhat = ((x64 - mean) * rstd).reshape(x.shape)
    view = (1, 8, 1, 1)
    exact_out = xhat * w.reshape(view) + b.reshape(view)
    dxhat = (g64 * w.reshape(view)).reshape(4, 2, -1)
    xh = xhat.reshape(4, 2, -1)
    exact_dx = rstd * (
        dxhat - dxhat.mean(2, keepdims=True) - xh * (dxhat * xh).mean(2, keepdims=True)
    )
    np.testing.assert_allclose(out, exact_out, rtol=1e-5, atol=3e-6)
    np.testing.assert_allclose(dx, exact_dx.reshape(x.shape), rtol=1e-5, atol=3e-6)
    np.testing.assert_allclose(dw, (g64 * xhat).sum((0, 2, 3)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(db, g64.sum((0, 2, 3)), rtol=1e-6, atol=1e-6)
    assert counted[0] and counted[1]


def test_constant_group_normalises_to_the_bias(counted):
    x = np.full((2, 4, 5), 0.1, np.float32)
    x[:, 2:] = np.linspace(-1, 1, 20, dtype=np.float32).reshape(2, 2, 5)
    b = np.array([0.5, -0.5, 0.0, 0.0], np.float32)
    out, _ = _ember(x, np.ones_like(x), np.ones(4, np.float32), b, 2)
    np.testing.assert_allclose(out[:, 0], 0.5, atol=1e-5)
    np.testing.assert_allclose(out[:, 1], -0.5, atol=1e-5)
    assert np.isfinite(out).all()


def test_two_threads_give_the_bits_of_one(counted, monkeypatch):
    x, g, w, b = _inputs((12, 16, 9, 10), "both", seed=4, offset=3.0)
    monkeypatch.setattr(GN, "_GN_BLOCK", 4 * 90 * 5)  # 5 rows a block: 10 blocks
    before = P.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            P.set_num_threads(threads)
            results.append(_ember(x, g, w, b, 4))
    finally:
        P.set_num_threads(before)
    (o1, g1), (o2, g2) = results
    np.testing.assert_array_equal(o1, o2)
    for a, c in zip(g1, g2):
        np.testing.assert_array_equal(a, c)
    assert len(counted[0]) == len(counted[1]) == 20  # 10 blocks, twice


def test_noncontiguous_input(counted):
    rng = np.random.default_rng(5)
    base = rng.standard_normal((3, 6, 8, 5)).astype(np.float32)
    g = rng.standard_normal((3, 6, 5, 8)).astype(np.float32)
    w, b = rng.uniform(0.5, 1.5, 6).astype(np.float32), rng.standard_normal(6).astype(np.float32)
    xe = ember.tensor(base, requires_grad=True)
    xt = torch.tensor(base, requires_grad=True)
    ye = F.group_norm(xe.transpose(2, 3), 3, ember.tensor(w), ember.tensor(b))
    yt = TF.group_norm(xt.transpose(2, 3), 3, torch.tensor(w), torch.tensor(b))
    ye.backward(ember.tensor(g))
    yt.backward(torch.tensor(g))
    np.testing.assert_allclose(ye.detach().numpy(), yt.detach().numpy(), rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(xe.grad.numpy(), xt.grad.numpy(), rtol=1e-4, atol=2e-5)
    assert counted[0] and counted[1]


def test_half_input_keeps_the_composite(counted):
    x, g, w, b = _inputs((4, 8, 6), "both", seed=6)
    x, g, w, b = (a.astype(np.float16) for a in (x, g, w, b))
    got = _ember(x, g, w, b, 4)
    ref = _torch(x, g, w, b, 4)
    assert got[0].dtype == ref[0].dtype == np.float16
    _assert_close(got, ref, atol=2e-2, rtol=1e-2)
    assert not counted[0] and not counted[1]


def test_zero_size_and_float64_keep_the_composite(counted):
    x = ember.zeros(0, 4, 3, requires_grad=True)
    y = F.group_norm(x, 2, ember.ones(4), ember.zeros(4))
    assert y.shape == (0, 4, 3)
    y.sum().backward()
    assert x.grad.shape == (0, 4, 3)
    x64 = ember.tensor(np.arange(24.0).reshape(2, 4, 3), requires_grad=True)
    assert F.group_norm(x64, 2).dtype == ember.float64
    assert not counted[0]


def test_double_backward_matches_torch(counted):
    x, g, w, b = _inputs((2, 6, 5), "both", seed=7)
    ex, ew, eb = (ember.tensor(a, requires_grad=True) for a in (x, w, b))
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ye, yt = F.group_norm(ex, 3, ew, eb), TF.group_norm(tx, 3, tw, tb)
    ge, gt = ember.tensor(g), torch.tensor(g)
    de = ember.autograd.grad(ye, [ex, ew], ge, create_graph=True)
    dt = torch.autograd.grad(yt, [tx, tw], gt, create_graph=True)
    for a, c in zip(de, dt):
        np.testing.assert_allclose(a.detach().numpy(), c.detach().numpy(), rtol=1e-4, atol=2e-5)
    ((de[0] * de[0]).sum() + (de[1] * de[1]).sum()).backward()
    ((dt[0] * dt[0]).sum() + (dt[1] * dt[1]).sum()).backward()
    for e, t in ((ex, tx), (ew, tw), (eb, tb)):
        theirs = None if t.grad is None else t.grad.numpy()
        mine = None if e.grad is None else e.grad.numpy()
        if theirs is None or not np.any(theirs):
            assert mine is None or not np.any(np.abs(mine) > 1e-5)
        else:
            np.testing.assert_allclose(mine, theirs, rtol=1e-3, atol=1e-4)
    assert counted[0], "the fused forward did not run"
