"""Tensor.register_post_accumulate_grad_hook and engine.queue_callback (torch semantics)."""

from __future__ import annotations

import numpy as np
import pytest

import ember
from ember.autograd.engine import queue_callback
from ember.autograd.function import Function

torch = pytest.importorskip("torch")


class Probe(Function):
    """Identity that logs when its backward runs."""

    def __init__(self, log, name):
        self.log, self.tag = log, name

    def forward(self, x):
        return x.copy()

    def backward(self, g):
        self.log.append(self.tag)
        return g


def test_hook_sees_final_grad_before_backward_ends():
    log = []
    w1 = ember.tensor(np.ones((3, 3), np.float32), requires_grad=True)
    w2 = ember.tensor(np.full((3, 3), 2.0, np.float32), requires_grad=True)
    x = ember.tensor(np.arange(9.0, dtype=np.float32).reshape(3, 3))
    h = Probe(log, "early-layer").apply(x @ w1)
    out = (h @ w2) @ w2  # w2 used twice: its hook waits for both contributions
    w1.register_post_accumulate_grad_hook(lambda t: log.append(("w1", t.grad.data.copy())))
    w2.register_post_accumulate_grad_hook(lambda t: log.append(("w2", t.grad.data.copy())))
    out.sum().backward()
    names = [e if isinstance(e, str) else e[0] for e in log]
    assert names == ["w2", "early-layer", "w1"]  # w2 is final before the early layer runs

    tw1 = torch.ones(3, 3, requires_grad=True)
    tw2 = torch.full((3, 3), 2.0, requires_grad=True)
    tx = torch.arange(9.0).reshape(3, 3)
    ((tx @ tw1) @ tw2 @ tw2).sum().backward()
    np.testing.assert_allclose(log[0][1], tw2.grad.numpy(), rtol=1e-6)
    np.testing.assert_allclose(log[2][1], tw1.grad.numpy(), rtol=1e-6)


def test_hook_sees_accumulated_grad_and_runs_once_per_backward():
    w = ember.tensor(np.ones(2, np.float32), requires_grad=True)
    seen = []
    handle = w.register_post_accumulate_grad_hook(lambda t: seen.append(t.grad.data.copy()))
    (w * 3).sum().backward()
    (w * w).sum().backward()
    assert len(seen) == 2
    np.testing.assert_array_equal(seen[1], [5.0, 5.0])  # 3 + 2w: the accumulated .grad
    handle.remove()
    (w * 1).sum().backward()
    assert len(seen) == 2


def test_tensor_hook_runs_before_and_no_hook_without_grad():
    w = ember.tensor(np.ones(2, np.float32), requires_grad=True)
    unused = ember.tensor(np.ones(2, np.float32), requires_grad=True)
    order = []
    w.register_hook(lambda g: order.append("pre") or g * 2)
    w.register_post_accumulate_grad_hook(lambda t: order.append(("post", t.grad.tolist())))
    unused.register_post_accumulate_grad_hook(lambda t: order.append("unused"))
    (w * 1 + unused.detach()).sum().backward()
    assert order == ["pre", ("post", [2.0, 2.0])]


def test_not_for_autograd_grad_nor_unlisted_inputs():
    w = ember.tensor(np.ones(2, np.float32), requires_grad=True)
    v = ember.tensor(np.ones(2, np.float32), requires_grad=True)
    fired = []
    w.register_post_accumulate_grad_hook(lambda t: fired.append("w"))
    v.register_post_accumulate_grad_hook(lambda t: fired.append("v"))
    ember.autograd.grad((w * v).sum(), [w])
    assert fired == []
    (w * v).sum().backward(inputs=[v])
    assert fired == ["v"]


def test_root_leaf_and_errors():
    w = ember.tensor(np.ones(2, np.float32), requires_grad=True)
    fired = []
    w.register_post_accumulate_grad_hook(lambda t: fired.append(t.grad.tolist()))
    w.backward(ember.tensor([1.0, 2.0]))
    assert fired == [[1.0, 2.0]]
    with pytest.raises(RuntimeError, match="non-leaf"):
        (w * 2).register_post_accumulate_grad_hook(lambda t: None)
    with pytest.raises(RuntimeError, match="doesn't require gradient"):
        ember.tensor([1.0]).register_post_accumulate_grad_hook(lambda t: None)


def test_queue_callback_runs_after_every_hook():
    w = ember.tensor(np.ones(2, np.float32), requires_grad=True)
    v = ember.tensor(np.ones(2, np.float32), requires_grad=True)
    order = []

    def hook(t):
        order.append("hook")
        if len(order) == 1:
            queue_callback(lambda: order.append(("callback", v.grad is not None)))

    w.register_post_accumulate_grad_hook(hook)
    (w * 2 + v * 3).sum().backward()
    assert order == ["hook", ("callback", True)]
    with pytest.raises(RuntimeError, match="while a backward pass runs"):
        queue_callback(lambda: None)
