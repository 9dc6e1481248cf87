"""In-place ops and the version counter: bumps, the error when backward needs a modified
tensor, the leaf rule, and gradients through in-place ops against torch."""

import numpy as np
import pytest

import ember

torch = pytest.importorskip("torch")

ARGS = {
    "add_": lambda m: (1.0,),
    "sub_": lambda m: (0.5,),
    "mul_": lambda m: (2.0,),
    "div_": lambda m: (2.0,),
    "pow_": lambda m: (2,),
    "neg_": lambda m: (),
    "zero_": lambda m: (),
    "fill_": lambda m: (3.0,),
    "copy_": lambda m: (m.full((3,), 7.0),),
    "clamp_": lambda m: (1.5, 3.0),
    "normal_": lambda m: (),
    "uniform_": lambda m: (),
}


def _op(name):
    return lambda x, m=ember: getattr(x, name)(*ARGS[name](m))


INPLACE = [(name, _op(name)) for name in ARGS]
DETERMINISTIC = [p for p in INPLACE if p[0] not in ("normal_", "uniform_")]


@pytest.mark.parametrize("name,op", INPLACE)
def test_in_place_ops_bump_the_version_and_return_self(name, op):
    x = ember.ones(3)
    v = x._version
    assert op(x) is x
    assert x._version == v + 1
    view = x.reshape(3)
    op(view)
    assert x._version == v + 2  # a view shares the counter with its base


@pytest.mark.parametrize("name,op", DETERMINISTIC)
def test_in_place_values_match_torch(name, op):
    e, t = ember.tensor([1.0, 2.0, 4.0]), torch.tensor([1.0, 2.0, 4.0])
    op(e)
    op(t, torch)
    np.testing.assert_allclose(e.numpy(), t.numpy())


@pytest.mark.parametrize("name,op", DETERMINISTIC)
def test_in_place_on_a_leaf_that_requires_grad_raises(name, op):
    a = ember.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"leaf Variable that requires grad.*in-place"):
        op(a)
    assert a.tolist() == [1.0, 1.0, 1.0] and a._version == 0
    with ember.no_grad():
        op(a)  # allowed without recording (optimizer updates)
    assert a.is_leaf and a.requires_grad


@pytest.mark.parametrize("name,op", DETERMINISTIC)
def test_backward_that_needs_a_modified_tensor_raises(name, op):
    a = ember.tensor([1.0, 2.0, 3.0], requires_grad=True)
    h = a * 2
    y = h * h  # saves h
    op(h)
    with pytest.raises(
        RuntimeError,
        match=r"modified by an inplace operation.*version 1; "
        r"expected version 0",
    ):
        y.sum().backward()


def test_modifying_a_saved_input_that_does_not_require_grad_raises():
    w = ember.ones(3, requires_grad=True)
    x = ember.tensor([1.0, 2.0, 3.0])
    y = (w * x).sum()  # saves x for w's gradient
    x.mul_(2)
    with pytest.raises(RuntimeError, match="inplace"):
        y.backward()


def test_modifying_through_a_view_is_detected():
    a = ember.ones(2, 3, requires_grad=True)
    h = a * 1
    y = (h * h).sum()
    with ember.no_grad():
        h.reshape(6).add_(1)
    with pytest.raises(RuntimeError, match="inplace"):
        y.backward()


def test_modifying_a_tensor_that_backward_does_not_need_is_fine():
    (ea, ta) = (
        ember.tensor([1.0, 2.0], requires_grad=True),
        torch.tensor([1.0, 2.0], requires_grad=True),
    )
    for a in (ea, ta):
        h = a * 3
        y = h + 1  # Add saves nothing
        h.mul_(10)
        y.sum().backward()
    np.testing.assert_allclose(ea.grad.numpy(), ta.grad.numpy())


def test_gradient_flows_through_in_place_ops_like_torch():
    arr = np.array([0.5, -1.0, 2.0])
    grads = []
    for m in (ember, torch):
        a = m.tensor(arr.copy(), requires_grad=True)
        b = m.tensor(arr[::-1].copy(), requires_grad=True)
        h = a * 1
        h.mul_(b)
        h.add_(a, alpha=2)
        h.sub_(1.5)
        h.div_(2.0)
        h.pow_(2)
        h.clamp_(0.1, 2.0)
        assert not h.is_leaf and h.grad_fn is not None
        h.sum().backward()
        grads.append((a.grad.numpy().copy(), b.grad.numpy().copy(), h.detach().numpy().copy()))
    for e, t in zip(*grads):
        np.testing.assert_allclose(e, t, rtol=1e-12)


def test_copy_into_non_leaf_routes_gradient_to_the_source():
    grads = []
    for m in (ember, torch):
        a = m.ones(3, requires_grad=True)
        s = m.tensor([1.0, 2.0, 3.0], requires_grad=True)
        h = a * 2
        h.copy_(s * 3)
        (h * h).sum().backward()
        grads.append((None if a.grad is None else a.grad.numpy(), s.grad.numpy()))
    (ea, es), (ta, ts) = grads
    np.testing.assert_allclose(es, ts)
    assert ea is None or np.allclose(ea, 0)
    assert ta is None or np.allclose(ta, 0)


def test_in_place_on_a_grad_buffer():
    a = ember.ones(3, requires_grad=True)
    (a * 2).sum().backward()
    v = a.grad._version
    a.grad.zero_()
    assert a.grad.tolist() == [0.0, 0.0, 0.0] and a.grad._version == v + 1
    (a * 2).sum().backward()
    assert a.grad.tolist() == [2.0, 2.0, 2.0]


def test_in_place_shape_and_dtype_rules():
    x = ember.ones(3)
    with pytest.raises(RuntimeError, match=r"add_.*shape \[3\].*\[2, 3\]"):
        x.add_(ember.ones(2, 3))
    i = ember.ones(3, dtype=ember.int64)
    with pytest.raises(RuntimeError, match="can't be cast"):
        i.mul_(1.5)
    x.add_(ember.ones(1))  # broadcasting the other operand is fine
    assert x.tolist() == [2.0, 2.0, 2.0]
    e = ember.ones(1).expand(3)
    with pytest.raises(RuntimeError, match="expanded"):
        e.add_(1)
