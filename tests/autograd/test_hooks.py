"""Tensor hooks (leaves and non-leaves, replacing the gradient, removal) and retain_grad,
compared with torch."""

import numpy as np
import pytest

import ember

torch = pytest.importorskip("torch")


def run_both(build):
    """Run ``build(module, leaf)`` for ember and torch on the same leaf values."""
    out = []
    for m in (ember, torch):
        a = m.tensor([1.0, -2.0, 3.0], requires_grad=True)
        extra = build(m, a)
        out.append((a, extra))
    return out


def test_hook_on_leaf_replaces_the_accumulated_gradient():
    calls = []

    def build(m, a):
        a.register_hook(lambda g: calls.append(g.tolist()) or g * 10)
        (a * a).sum().backward()

    (ea, _), (ta, _) = run_both(build)
    np.testing.assert_allclose(ea.grad.numpy(), ta.grad.numpy())
    assert ea.grad.tolist() == [20.0, -40.0, 60.0]
    assert calls[0] == calls[1] == [2.0, -4.0, 6.0]


def test_hook_on_non_leaf_changes_what_flows_upstream():
    seen = []

    def build(m, a):
        h = a * 2
        h.register_hook(lambda g: g + 1)
        h.register_hook(lambda g: seen.append(g.tolist()))  # returns None: keeps g
        (h * h).sum().backward()
        return h

    (ea, eh), (ta, th) = run_both(build)
    np.testing.assert_allclose(ea.grad.numpy(), ta.grad.numpy())
    assert seen[0] == seen[1]  # hooks run in registration order, each sees the previous one
    assert eh.grad is None and not th.retains_grad


def test_retain_grad_on_non_leaf_sees_hooked_gradient():
    def build(m, a):
        h = a * 3
        h.retain_grad()
        h.register_hook(lambda g: g * 2)
        y = h * a
        y.retain_grad()
        y.sum().backward()
        return h, y

    (ea, (eh, ey)), (ta, (th, ty)) = run_both(build)
    assert eh.retains_grad and th.retains_grad
    np.testing.assert_allclose(eh.grad.numpy(), th.grad.numpy())
    np.testing.assert_allclose(ey.grad.numpy(), ty.grad.numpy())
    np.testing.assert_allclose(ea.grad.numpy(), ta.grad.numpy())


def test_retain_grad_accumulates_and_is_a_copy():
    a = ember.tensor([1.0, 2.0], requires_grad=True)
    h = a * 2
    h.retain_grad()
    y = (h * h).sum()
    y.backward(retain_graph=True)
    first = h.grad.tolist()
    y.backward()
    assert h.grad.tolist() == [2 * v for v in first]
    assert not np.shares_memory(h.grad.data, a.grad.data)


def test_retain_grad_on_leaf_is_a_no_op():
    a = ember.ones(2, requires_grad=True)
    a.retain_grad()
    (a * 2).sum().backward()
    assert a.grad.tolist() == [2.0, 2.0]


def test_retain_grad_on_root():
    a = ember.ones(2, requires_grad=True)
    y = (a * 2).sum()
    y.retain_grad()
    y.backward()
    assert y.grad.item() == 1.0


def test_hook_handle_remove():
    a = ember.ones(2, requires_grad=True)
    handle = a.register_hook(lambda g: g * 100)
    handle.remove()
    handle.remove()  # removing twice is harmless
    (a * 2).sum().backward()
    assert a.grad.tolist() == [2.0, 2.0]
    h = a * 1
    hh = h.register_hook(lambda g: g * 100)
    hh.remove()
    a.grad = None
    (h * 2).sum().backward()
    assert a.grad.tolist() == [2.0, 2.0]


def test_hook_and_retain_grad_need_requires_grad():
    x = ember.ones(2)
    with pytest.raises(RuntimeError, match="doesn't require gradient"):
        x.register_hook(lambda g: g)
    with pytest.raises(RuntimeError, match="requires_grad=False"):
        x.retain_grad()


def test_hooks_also_run_for_autograd_grad():
    a = ember.ones(2, requires_grad=True)
    h = a * 2
    h.register_hook(lambda g: g * 5)
    (g,) = ember.autograd.grad((h * 1).sum(), a)
    assert g.tolist() == [10.0, 10.0] and a.grad is None


def test_hook_on_multiply_used_non_leaf_sees_the_summed_gradient():
    seen = []

    def build(m, a):
        h = a * 1
        h.register_hook(lambda g: seen.append(g.tolist()))
        (h * 2 + h * 3).sum().backward()

    run_both(build)
    assert seen[0] == seen[1] == [5.0, 5.0, 5.0]
