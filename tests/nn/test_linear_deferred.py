"""Linear's deferred parameter gradients: in a plain backward on two threads, the weight and
bias gradients of a large enough linear are computed by a pool thread (``Deferred``) while
the engine runs the rest of the graph, then delivered before backward returns. These tests
check that the values (against torch), accumulation, tied weights, hooks and the paths that
must not defer all behave exactly as without it."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest

import ember
import ember.nn as enn
from ember.autograd import engine
from ember.ops import parallel
from tests.oracle import cpu_only, torch

lin_mod = sys.modules["ember.nn.functional.linear"]
pytestmark = cpu_only("the deferred weight gradient is the NumPy raw backward on CPU threads")


@pytest.fixture
def deferring(monkeypatch):
    """Two threads, every product large enough to defer; records the tasks submitted and the
    thread each ran on."""
    before = parallel.get_num_threads()
    parallel.set_num_threads(2)
    monkeypatch.setattr(lin_mod, "GEMM_MIN_MACS", 1)
    ran = []
    real = parallel.submit

    def submit(fn):
        def run(threads):
            ran.append(threading.current_thread().name)
            return fn(threads)

        return real(run)

    monkeypatch.setattr(lin_mod, "submit", submit)
    yield ran
    parallel.set_num_threads(before)


def _pair(seed=0, bias=True):
    rng = np.random.default_rng(seed)
    tm = torch.nn.Sequential(
        torch.nn.Linear(12, 16, bias=bias), torch.nn.ReLU(), torch.nn.Linear(16, 5, bias=bias)
    )
    em = enn.Sequential(enn.Linear(12, 16, bias=bias), enn.ReLU(), enn.Linear(16, 5, bias=bias))
    em.load_state_dict({k: ember.tensor(v.detach().numpy()) for k, v in tm.state_dict().items()})
    x = rng.standard_normal((7, 3, 12)).astype(np.float32)
    return tm, em, x


def _check(tm, em, x, steps=1):
    """Backward ``steps`` times in both (x requires grad, so every layer has an input
    gradient to compute beside its weight's); compare every gradient."""
    xt, xe = torch.tensor(x, requires_grad=True), ember.tensor(x, requires_grad=True)
    for _ in range(steps):
        tm(xt).square().sum().backward()
        em(xe).square().sum().backward()
    want = {k: p.grad.numpy() for k, p in tm.named_parameters()}
    for k, p in em.named_parameters():
        np.testing.assert_allclose(p.grad.data, want[k], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(xe.grad.data, xt.grad.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bias", [True, False])
def test_deferred_gradients_match_torch(deferring, bias):
    _check(*_pair(bias=bias))
    assert len(deferring) == 2  # both layers' weights went to the pool


def test_a_layer_whose_input_needs_no_gradient_does_not_defer(deferring):
    """Nothing would run beside its weight gradient: that product is split over the threads."""
    tm, em, x = _pair()
    tm(torch.from_numpy(x)).sum().backward()
    em(ember.tensor(x)).sum().backward()
    assert len(deferring) == 1  # the second layer only
    for k, p in tm.named_parameters():
        got = dict(em.named_parameters())[k].grad.data
        np.testing.assert_allclose(got, p.grad.numpy(), rtol=1e-5, atol=1e-5)


def test_deferred_gradients_accumulate_over_two_backwards(deferring):
    _check(*_pair(), steps=2)
    assert len(deferring) == 4


def test_tied_weight_sums_the_deferred_and_the_direct_gradient(deferring):
    rng = np.random.default_rng(1)
    w0 = rng.standard_normal((6, 6)).astype(np.float32)
    x0 = rng.standard_normal((4, 6)).astype(np.float32)
    tw, tx = torch.tensor(w0, requires_grad=True), torch.tensor(x0, requires_grad=True)
    (torch.nn.functional.linear(tx, tw) + tw.sum() * tw[0]).sum().backward()
    ew, ex = ember.tensor(w0, requires_grad=True), ember.tensor(x0, requires_grad=True)
    (enn.functional.linear(ex, ew) + ew.sum() * ew[0]).sum().backward()
    assert deferring
    np.testing.assert_allclose(ew.grad.data, tw.grad.numpy(), rtol=1e-5, atol=1e-5)


def test_hooked_leaves_get_their_gradient_at_once_and_hooks_see_it(deferring):
    tm, em, x = _pair()
    seen, post = [], []
    w = em[0].weight
    w.register_hook(lambda g: seen.append(g.data.copy()))
    em[2].weight.register_post_accumulate_grad_hook(lambda p: post.append(p.grad.data.copy()))
    tm(torch.tensor(x, requires_grad=True)).sum().backward()
    em(ember.tensor(x, requires_grad=True)).sum().backward()
    # the products still ran beside the input gradients, but the engine waited for them at
    # once: the hooks ran during backward, as without the pool thread
    assert len(deferring) == 2
    np.testing.assert_allclose(seen[0], tm[0].weight.grad.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(post[0], tm[2].weight.grad.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(w.grad.data, tm[0].weight.grad.numpy(), rtol=1e-5, atol=1e-5)


def test_grad_and_create_graph_do_not_defer(deferring):
    tm, em, x = _pair()
    xe = ember.tensor(x, requires_grad=True)
    out = em(xe).square().sum()
    (gw,) = ember.autograd.grad(out, [em[0].weight], retain_graph=True)
    out.backward(create_graph=True)
    assert not deferring
    xt = torch.tensor(x, requires_grad=True)
    tm(xt).square().sum().backward()
    np.testing.assert_allclose(gw.data, tm[0].weight.grad.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(xe.grad.data, xt.grad.numpy(), rtol=1e-5, atol=1e-5)


def test_deferral_is_off_outside_backward_and_with_one_thread(monkeypatch):
    assert not engine.deferring()
    before = parallel.get_num_threads()
    parallel.set_num_threads(1)
    monkeypatch.setattr(lin_mod, "GEMM_MIN_MACS", 1)
    try:
        tm, em, x = _pair()
        tm(torch.from_numpy(x)).sum().backward()
        em(ember.tensor(x)).sum().backward()
    finally:
        parallel.set_num_threads(before)
    for k, p in tm.named_parameters():
        got = dict(em.named_parameters())[k].grad
        assert isinstance(got, ember.Tensor)
        np.testing.assert_allclose(got.data, p.grad.numpy(), rtol=1e-5, atol=1e-5)


def test_an_error_in_the_deferred_product_reaches_the_caller(deferring, monkeypatch):
    def broken(g2, x2, out_f, with_b):
        def run(threads):
            raise FloatingPointError("weight gradient failed")

        return run

    monkeypatch.setattr(lin_mod, "_param_grads", broken)
    _, em, x = _pair()
    loss = em(ember.tensor(x)).sum()
    with pytest.raises(FloatingPointError, match="weight gradient failed"):
        loss.backward()
    assert not engine.deferring()  # the flag was restored


def test_the_weight_gradient_summed_in_row_steps_matches_torch(deferring, monkeypatch):
    monkeypatch.setattr(lin_mod, "K_STEP", 4)  # 21 rows: steps of 4, 4, 4, 4, 4, 1
    _check(*_pair(seed=3))
    assert len(deferring) == 2
