"""The backward and grad API: gradient=, retain_graph, create_graph, allow_unused, inputs=,
graph freeing, accumulation, gradient aliasing, and a Hessian-vector product against torch."""

import numpy as np
import pytest

import ember
from ember.autograd import grad

torch = pytest.importorskip("torch")


def pair(arr, requires_grad=True):
    """The same float64 values as an ember and a torch leaf."""
    arr = np.asarray(arr, dtype=np.float64)
    return (
        ember.tensor(arr.copy(), requires_grad=requires_grad),
        torch.tensor(arr.copy(), requires_grad=requires_grad),
    )


def rng_arr(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


# --------------------------------------------------------------------- Tensor.backward
def test_scalar_backward_matches_torch():
    (ea, ta), (eb, tb) = pair(rng_arr(3, 4)), pair(rng_arr(4, 2, seed=1))
    for a, b in ((ea, eb), (ta, tb)):
        y = ((a @ b) * 3 - a.sum(1, keepdim=True) / 2) ** 2
        y.mean().backward()
    np.testing.assert_allclose(ea.grad.numpy(), ta.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(eb.grad.numpy(), tb.grad.numpy(), rtol=1e-10)


def test_backward_with_gradient_argument():
    (ea, ta) = pair(rng_arr(2, 3))
    g = rng_arr(2, 3, seed=5)
    (ea * ea).backward(gradient=ember.tensor(g))
    (ta * ta).backward(gradient=torch.tensor(g))
    np.testing.assert_allclose(ea.grad.numpy(), ta.grad.numpy())
    ea.grad = None
    (ea * 2).backward(g)  # an array is accepted too
    np.testing.assert_allclose(ea.grad.numpy(), 2 * g)


def test_non_scalar_backward_needs_gradient():
    a = ember.ones(2, 3, requires_grad=True)
    with pytest.raises(RuntimeError, match="`gradient`") as info:
        (a * 2).backward()
    assert "scalar outputs" in str(info.value) and "(2, 3)" in str(info.value)
    with pytest.raises(RuntimeError, match="only for scalar outputs"):
        grad(a * 2, a)


def test_backward_gradient_shape_mismatch():
    a = ember.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"Mismatch in shape.*\(2,\).*\(3,\)"):
        (a * 2).backward(ember.ones(2))


def test_backward_on_tensor_without_grad_raises():
    with pytest.raises(RuntimeError, match="does not require grad"):
        ember.ones(2).sum().backward()


def test_backward_of_a_leaf_itself():
    a = ember.tensor(3.0, requires_grad=True)
    a.backward()
    assert a.grad.item() == 1.0


def test_gradients_accumulate_across_backward_calls():
    (ea, ta) = pair(rng_arr(3))
    for _ in range(3):
        (ea * ea).sum().backward()
        (ta * ta).sum().backward()
    np.testing.assert_allclose(ea.grad.numpy(), ta.grad.numpy())
    np.testing.assert_allclose(ea.grad.numpy(), 6 * rng_arr(3))


def test_sum_gradient_is_a_real_writable_array():
    """Sum's backward broadcasts; the leaf's .grad must still be a writable buffer."""
    a = ember.ones(3, requires_grad=True)
    a.sum().backward()
    a.sum().backward()
    assert a.grad.tolist() == [2.0, 2.0, 2.0]
    a.grad.zero_()
    assert a.grad.tolist() == [0.0, 0.0, 0.0]
    a.grad.add_(1)
    assert a.grad.tolist() == [1.0, 1.0, 1.0]


def test_leaf_grads_never_alias():
    a = ember.ones(3, requires_grad=True)
    b = ember.ones(3, requires_grad=True)
    (a + b).sum().backward()
    assert not np.shares_memory(a.grad.data, b.grad.data)
    a.grad.data[0] = 100.0
    assert b.grad.tolist() == [1.0, 1.0, 1.0]
    # a user-supplied gradient is never adopted as a .grad buffer either
    g = ember.ones(3)
    c = ember.ones(3, requires_grad=True)
    d = ember.ones(3, requires_grad=True)
    (c - d).backward(g)
    for leaf in (c, d):
        assert not np.shares_memory(leaf.grad.data, g.data)
    c.grad.data[:] = 5
    assert g.tolist() == [1.0, 1.0, 1.0] and d.grad.tolist() == [-1.0, -1.0, -1.0]


def test_leaf_used_twice_and_through_views():
    (ea, ta) = pair(rng_arr(2, 3))
    for a in (ea, ta):
        y = a + a.reshape(3, 2).transpose(0, 1) * a.sum() + a.permute(1, 0).T
        y.sum().backward()
    np.testing.assert_allclose(ea.grad.numpy(), ta.grad.numpy())


def test_diamond_graph_matches_torch():
    (ex, tx) = pair(rng_arr(4))
    for x in (ex, tx):
        h = x * 2
        u, v = h * h, h + 1
        ((u * v).sum() + (u / v).sum()).backward()
    np.testing.assert_allclose(ex.grad.numpy(), tx.grad.numpy(), rtol=1e-10)


# --------------------------------------------------------------- graph freeing / retain
def test_second_backward_through_freed_graph_raises():
    a = ember.ones(3, requires_grad=True)
    y = (a * a).sum()
    y.backward()
    with pytest.raises(
        RuntimeError,
        match=r"backward through the graph a second time.*"
        r"retain_graph=True",
    ):
        y.backward()
    assert a.grad.tolist() == [2.0, 2.0, 2.0]  # the failed call added nothing


def test_freed_graph_error_through_a_shared_node():
    a = ember.ones(3, requires_grad=True)
    h = a * a
    h.sum().backward()
    with pytest.raises(RuntimeError, match="second time"):
        (h * 2).sum().backward()


def test_retain_graph_allows_a_second_backward():
    (ea, ta) = pair(rng_arr(3))
    for a in (ea, ta):
        y = (a * a * a).sum()
        y.backward(retain_graph=True)
        y.backward()
    np.testing.assert_allclose(ea.grad.numpy(), ta.grad.numpy())


def test_graph_without_saved_tensors_can_run_twice():
    """As in torch, only ops with saved tensors refuse a second pass."""
    a = ember.ones(2, requires_grad=True)
    y = (a + 1).sum()
    y.backward()
    y.backward()
    assert a.grad.tolist() == [2.0, 2.0]


# --------------------------------------------------------------------- autograd.grad
def test_grad_returns_gradients_without_touching_dot_grad():
    (ea, ta), (eb, tb) = pair(rng_arr(3)), pair(rng_arr(3, seed=2))
    ge = grad((ea * eb).sum(), [ea, eb])
    gt = torch.autograd.grad((ta * tb).sum(), [ta, tb])
    assert isinstance(ge, tuple) and len(ge) == 2
    for e, t in zip(ge, gt):
        np.testing.assert_allclose(e.numpy(), t.numpy())
    assert ea.grad is None and eb.grad is None
    (g,) = grad((ea * 3).sum(), ea)  # a single tensor works too
    assert g.tolist() == [3.0, 3.0, 3.0]


def test_grad_with_grad_outputs_and_several_outputs():
    (ea, ta) = pair(rng_arr(2, 2))
    go1, go2 = rng_arr(2, 2, seed=3), rng_arr(2, seed=4)
    ge = grad([ea * ea, ea.sum(0)], [ea], [ember.tensor(go1), ember.tensor(go2)])
    gt = torch.autograd.grad([ta * ta, ta.sum(0)], [ta], [torch.tensor(go1), torch.tensor(go2)])
    np.testing.assert_allclose(ge[0].numpy(), gt[0].numpy())


def test_grad_of_intermediate_tensor():
    (ea, ta) = pair(rng_arr(3))
    eh, th = ea * 2, ta * 2
    ge = grad((eh * eh).sum(), eh)
    gt = torch.autograd.grad((th * th).sum(), th)
    np.testing.assert_allclose(ge[0].numpy(), gt[0].numpy())


def test_grad_allow_unused():
    a = ember.ones(2, requires_grad=True)
    b = ember.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="allow_unused=True"):
        grad((a * 2).sum(), [a, b])
    ga, gb = grad((a * 2).sum(), [a, b], allow_unused=True)
    assert ga.tolist() == [2.0, 2.0] and gb is None


def test_grad_input_must_require_grad():
    a = ember.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="does not require grad"):
        grad((a * 2).sum(), [ember.ones(2)])


def test_grad_frees_graph_unless_retained():
    a = ember.ones(2, requires_grad=True)
    y = (a * a).sum()
    grad(y, a, retain_graph=True)
    grad(y, a)
    with pytest.raises(RuntimeError, match="second time"):
        grad(y, a)


def test_backward_inputs_accumulates_only_into_those_inputs():
    (ea, ta), (eb, tb) = pair(rng_arr(3)), pair(rng_arr(3, seed=1))
    for a, b in ((ea, eb), (ta, tb)):
        (a * b).sum().backward(inputs=[b])
    assert ea.grad is None and ta.grad is None
    np.testing.assert_allclose(eb.grad.numpy(), tb.grad.numpy())


def test_backward_inputs_only_non_leaf():
    """Listing only a non-leaf must not accumulate into the leaves, and fills its .grad."""
    (ea, ta) = pair(rng_arr(3))
    hs = []
    for a in (ea, ta):
        h = a * 2
        (h * h).sum().backward(inputs=[h])
        hs.append(h)
    assert ea.grad is None and ta.grad is None
    np.testing.assert_allclose(hs[0].grad.numpy(), hs[1].grad.numpy())


def test_backward_inputs_unused_is_not_an_error():
    a = ember.ones(2, requires_grad=True)
    b = ember.ones(2, requires_grad=True)
    (a * a).sum().backward(inputs=[b])
    assert a.grad is None and b.grad is None


def test_autograd_backward_several_roots():
    (ea, ta) = pair(rng_arr(3))
    for m, a in ((ember, ea), (torch, ta)):
        m.autograd.backward([(a * a).sum(), (a * 3).sum()])
    np.testing.assert_allclose(ea.grad.numpy(), ta.grad.numpy())


# -------------------------------------------------------------------- higher order
def _mlp_like(w1, w2, x):
    h = x @ w1
    h = h * h / (1 + h * h) + h  # a smooth elementwise nonlinearity from basic ops
    out = (h @ w2) ** 3
    return out.sum() / 10 + (w1 * w1).mean()


def test_hessian_vector_product_matches_torch():
    X = rng_arr(5, 3, seed=10)
    w1, w2 = rng_arr(3, 4, seed=11) * 0.5, rng_arr(4, 2, seed=12) * 0.5
    v1, v2 = rng_arr(3, 4, seed=13), rng_arr(4, 2, seed=14)
    results = []
    for m in (ember, torch):
        W1 = m.tensor(w1.copy(), requires_grad=True)
        W2 = m.tensor(w2.copy(), requires_grad=True)
        loss = _mlp_like(W1, W2, m.tensor(X))
        g1, g2 = m.autograd.grad(loss, [W1, W2], create_graph=True)
        assert g1.requires_grad and g2.requires_grad
        gv = (g1 * m.tensor(v1)).sum() + (g2 * m.tensor(v2)).sum()
        h1, h2 = m.autograd.grad(gv, [W1, W2])
        results.append([g1.detach().numpy(), g2.detach().numpy(), h1.numpy(), h2.numpy()])
    for e, t in zip(*results):
        np.testing.assert_allclose(e, t, rtol=1e-9, atol=1e-12)


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph")
def test_create_graph_backward_then_second_backward_matches_torch():
    (ex, tx) = pair(rng_arr(3, seed=3))
    for x in (ex, tx):
        y = (x**3).sum()
        y.backward(create_graph=True)
        assert x.grad.requires_grad
        g = x.grad
        x.grad = None
        (g * g).sum().backward()
    np.testing.assert_allclose(ex.grad.numpy(), tx.grad.numpy())  # 2 * 3x^2 * 6x


def test_third_order_derivative():
    x = ember.tensor(1.5, dtype=ember.float64, requires_grad=True)
    (g1,) = grad(x**4, x, create_graph=True)
    (g2,) = grad(g1, x, create_graph=True)
    (g3,) = grad(g2, x)
    assert g1.item() == pytest.approx(4 * 1.5**3)
    assert g2.item() == pytest.approx(12 * 1.5**2)
    assert g3.item() == pytest.approx(24 * 1.5)


def test_gradgradcheck_on_basic_ops():
    a = ember.tensor(rng_arr(2, 3), requires_grad=True)
    b = ember.tensor(rng_arr(3, 2, seed=1), requires_grad=True)
    assert ember.autograd.gradgradcheck(lambda x, y: (x @ y) * (x @ y) / 3, (a, b))
    assert ember.autograd.gradgradcheck(lambda x: (x * x).sum(1) - x.mean() ** 2, (a,))


def test_gradgradcheck_through_shape_ops_and_reductions():
    a = ember.tensor(rng_arr(2, 3), requires_grad=True)

    def fn(x):
        y = x.reshape(3, 2).T.expand(4, 2, 3) * x
        y = y.transpose(0, 2).permute(1, 0, 2) * y.permute(1, 2, 0)
        return y.mean((0, 2)) * y.sum(-1).sum(0) + (x * x).mean()

    assert ember.autograd.gradcheck(fn, (a,))
    assert ember.autograd.gradgradcheck(fn, (a,))


def test_create_graph_retains_the_graph_by_default():
    x = ember.tensor([1.0, 2.0], requires_grad=True)
    y = (x * x * x).sum()
    (g,) = grad(y, x, create_graph=True)
    y.backward()  # still possible: create_graph implies retain_graph
    assert x.grad.tolist() == [3.0, 12.0] and g.tolist() == [3.0, 12.0]


def test_saved_output_modified_in_place_is_detected_and_double_backward_uses_it():
    class Exp(ember.autograd.Function):
        def forward(self, x):
            out = np.exp(x)
            self.save_for_backward(out)
            return out

        def backward(self, g):
            (out,) = self.saved_tensors
            return g * out

    x = ember.tensor(rng_arr(3), requires_grad=True)
    assert ember.autograd.gradgradcheck(lambda t: Exp().apply(t) * 2, (x,))
    y = Exp().apply(x)
    y.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_low_precision_gradients_keep_dtype_and_match_torch(dtype):
    a_np, b_np = rng_arr(4, 3, seed=20), rng_arr(3, 2, seed=21)
    grads = []
    for m in (ember, torch):
        a = m.tensor(a_np, dtype=getattr(m, dtype), requires_grad=True)
        b = m.tensor(b_np, dtype=getattr(m, dtype), requires_grad=True)
        ((a @ b) * 2 + a.sum(0, keepdim=True).T.mean()).sum().backward()
        assert a.grad.dtype == a.dtype and b.grad.dtype == b.dtype
        grads.append([a.grad.float().numpy(), b.grad.float().numpy()])
    for e, t in zip(*grads):
        np.testing.assert_allclose(e, t, rtol=2e-2, atol=2e-2)


def test_mixed_dtype_graph_returns_each_leaf_its_own_dtype():
    a = ember.ones(2, dtype=ember.float16, requires_grad=True)
    b = ember.ones(2, dtype=ember.float64, requires_grad=True)
    y = a * b  # promotes to float64
    assert y.dtype is ember.float64
    y.sum().backward()
    assert a.grad.dtype is ember.float16 and b.grad.dtype is ember.float64


def test_leaf_grad_of_a_contiguous_leaf_is_contiguous():
    """torch gives a contiguous leaf a contiguous .grad, so ``p.grad.view(-1)`` works."""
    a = ember.ones(2, 3, requires_grad=True)
    (a.T * ember.tensor(rng_arr(3, 2))).sum().backward()
    assert a.grad.is_contiguous()
    assert a.grad.view(-1).shape == (6,)
    b = ember.ones(4, 3, requires_grad=True)
    (ember.ones(2, 4) @ b.permute(0, 1)).sum().backward()
    assert b.grad.is_contiguous()


def test_leaf_accumulation_never_corrupts_a_pending_gradient():
    """A leaf's .grad must not share memory with a gradient a pending node still holds."""
    torch = pytest.importorskip("torch")
    xv = np.array([0.5, -1.5, 2.0], dtype=np.float32)
    yv = np.array([1.0, 0.25, -3.0], dtype=np.float32)
    x, y = ember.tensor(xv, requires_grad=True), ember.tensor(yv, requires_grad=True)
    m = x * y
    ((x * m + (m + x)) * 1.0).sum().backward()
    xt, yt = torch.tensor(xv, requires_grad=True), torch.tensor(yv, requires_grad=True)
    mt = xt * yt
    ((xt * mt + (mt + xt)) * 1.0).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-6)
    np.testing.assert_allclose(y.grad.numpy(), yt.grad.numpy(), rtol=1e-6)
