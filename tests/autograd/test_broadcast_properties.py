"""Property tests: gradients of broadcasting binary ops equal torch's and the explicit sum of
the upstream gradient over the broadcast dims, for random broadcast-compatible shapes."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import ember

torch = pytest.importorskip("torch")

OPS = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
}

shape_pairs = hnp.mutually_broadcastable_shapes(
    num_shapes=2, min_dims=0, max_dims=4, min_side=1, max_side=4
)
shape_pairs_with_empty = hnp.mutually_broadcastable_shapes(
    num_shapes=2, min_dims=1, max_dims=3, min_side=0, max_side=3
)


def values(shape, seed, positive=False):
    arr = np.random.default_rng(seed).uniform(-2, 2, size=shape)
    return np.abs(arr) + 0.5 if positive else arr


def reduce_to(g, shape):
    """The explicit reference: sum over leading dims and over dims where shape has a 1."""
    lead = g.ndim - len(shape)
    g = g.sum(axis=tuple(range(lead))) if lead else g
    axes = tuple(i for i, s in enumerate(shape) if s == 1 and g.shape[i] != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g


def run(op, sa, sb, out_shape, seed, dtypes=(np.float64, np.float64)):
    a_np = values(sa, seed).astype(dtypes[0])
    b_np = values(sb, seed + 1, positive=(op == "div")).astype(dtypes[1])
    g_np = values(out_shape, seed + 2)
    ea = ember.tensor(a_np, requires_grad=True)
    eb = ember.tensor(b_np, requires_grad=True)
    ta = torch.tensor(a_np, requires_grad=True)
    tb = torch.tensor(b_np, requires_grad=True)
    eo, to = OPS[op](ea, eb), OPS[op](ta, tb)
    assert tuple(eo.shape) == tuple(to.shape) == tuple(out_shape)
    assert eo.dtype.name == str(to.dtype).removeprefix("torch.")
    g_np = g_np.astype(to.detach().numpy().dtype)
    eo.backward(ember.tensor(g_np))
    to.backward(torch.tensor(g_np))
    return (ea, eb, ta, tb, g_np)


@settings(max_examples=60, deadline=None)
@given(shapes=shape_pairs, op=st.sampled_from(sorted(OPS)), seed=st.integers(0, 2**16))
def test_broadcast_gradients_match_torch(shapes, op, seed):
    (sa, sb), out_shape = shapes.input_shapes, shapes.result_shape
    ea, eb, ta, tb, _ = run(op, sa, sb, out_shape, seed)
    for e, t, shape in ((ea, ta, sa), (eb, tb, sb)):
        assert tuple(e.grad.shape) == tuple(shape)
        np.testing.assert_allclose(e.grad.numpy(), t.grad.numpy(), rtol=1e-10, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(shapes=shape_pairs, op=st.sampled_from(["add", "sub"]), seed=st.integers(0, 2**16))
def test_add_sub_gradient_is_the_sum_over_broadcast_dims(shapes, op, seed):
    (sa, sb), out_shape = shapes.input_shapes, shapes.result_shape
    ea, eb, _, _, g = run(op, sa, sb, out_shape, seed)
    sign = 1.0 if op == "add" else -1.0
    np.testing.assert_allclose(ea.grad.numpy(), reduce_to(g, sa), rtol=1e-12)
    np.testing.assert_allclose(eb.grad.numpy(), sign * reduce_to(g, sb), rtol=1e-12)


@settings(max_examples=60, deadline=None)
@given(shapes=shape_pairs, seed=st.integers(0, 2**16))
def test_mul_gradient_is_the_reduced_product(shapes, seed):
    (sa, sb), out_shape = shapes.input_shapes, shapes.result_shape
    ea, eb, _, _, g = run("mul", sa, sb, out_shape, seed)
    a, b = ea.detach().numpy(), eb.detach().numpy()
    np.testing.assert_allclose(ea.grad.numpy(), reduce_to(g * b, sa), rtol=1e-10)
    np.testing.assert_allclose(eb.grad.numpy(), reduce_to(g * a, sb), rtol=1e-10)


@settings(max_examples=30, deadline=None)
@given(shapes=shape_pairs_with_empty, op=st.sampled_from(sorted(OPS)), seed=st.integers(0, 99))
def test_broadcast_gradients_with_empty_dims(shapes, op, seed):
    (sa, sb), out_shape = shapes.input_shapes, shapes.result_shape
    ea, eb, ta, tb, _ = run(op, sa, sb, out_shape, seed)
    for e, t in ((ea, ta), (eb, tb)):
        assert tuple(e.grad.shape) == tuple(t.grad.shape)
        np.testing.assert_allclose(e.grad.numpy(), t.grad.numpy(), rtol=1e-10)


@settings(max_examples=30, deadline=None)
@given(shapes=shape_pairs, op=st.sampled_from(sorted(OPS)), seed=st.integers(0, 99))
def test_mixed_precision_broadcast_gradients_keep_input_dtypes(shapes, op, seed):
    (sa, sb), out_shape = shapes.input_shapes, shapes.result_shape
    ea, eb, ta, tb, _ = run(op, sa, sb, out_shape, seed, dtypes=(np.float32, np.float64))
    assert ea.grad.dtype is ember.float32 and eb.grad.dtype is ember.float64
    for e, t in ((ea, ta), (eb, tb)):
        np.testing.assert_allclose(e.grad.numpy(), t.grad.numpy(), rtol=1e-5, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(
    batch=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=3),
    n=st.integers(1, 3),
    k=st.integers(1, 3),
    m=st.integers(1, 3),
    seed=st.integers(0, 99),
)
def test_batched_matmul_broadcast_gradients_match_torch(batch, n, k, m, seed):
    sa, sb = batch.input_shapes
    a_np, b_np = values(sa + (n, k), seed), values(sb + (k, m), seed + 1)
    g_np = values(batch.result_shape + (n, m), seed + 2)
    grads = []
    for mod in (ember, torch):
        a = mod.tensor(a_np, requires_grad=True)
        b = mod.tensor(b_np, requires_grad=True)
        (a @ b).backward(mod.tensor(g_np))
        grads.append((a.grad.numpy(), b.grad.numpy()))
    for e, t in zip(*grads):
        assert e.shape == t.shape
        np.testing.assert_allclose(e, t, rtol=1e-10, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=4),
    scalar=st.floats(0.5, 3.0),
    op=st.sampled_from(sorted(OPS)),
    seed=st.integers(0, 99),
)
def test_python_scalar_operands(shape, scalar, op, seed):
    arr = values(shape, seed, positive=True)
    grads = []
    for mod in (ember, torch):
        x = mod.tensor(arr, requires_grad=True)
        (OPS[op](x, scalar) + OPS[op](scalar, x)).sum().backward()
        grads.append(x.grad.numpy())
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-10)


GRAPH_OPS = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / (b * b + 1),
    "matmul": lambda a, b: a @ b / 3,
    "rowsum": lambda a, b: a.sum(1, keepdim=True) * b,
    "mean_t": lambda a, b: a.mean(0) + b.T,
    "reshape": lambda a, b: a.reshape(9).reshape(3, 3).permute(1, 0) - b,
    "square": lambda a, b: a**2 - b.transpose(0, 1),
}


@settings(max_examples=40, deadline=None)
@given(
    program=st.lists(
        st.tuples(st.sampled_from(sorted(GRAPH_OPS)), st.integers(0, 99), st.integers(0, 99)),
        min_size=1,
        max_size=12,
    ),
    outputs=st.lists(st.integers(0, 99), min_size=1, max_size=4),
    seed=st.integers(0, 99),
)
def test_random_graphs_with_shared_subexpressions_match_torch(program, outputs, seed):
    """Random DAGs (reused nodes, diamonds, several roots, two passes that accumulate):
    the engine's buffers and in-place accumulation must never mix up gradients."""
    leaves_np = [values((3, 3), seed + k) * 0.5 for k in range(3)]
    grads = []
    for mod in (ember, torch):
        leaves = [mod.tensor(a, requires_grad=True) for a in leaves_np]
        nodes = list(leaves)
        for op, i, j in program:
            nodes.append(GRAPH_OPS[op](nodes[i % len(nodes)], nodes[j % len(nodes)]))
        roots = [nodes[k % len(nodes)].sum() * (k + 1) for k in outputs]
        roots = [r for r in roots if r.requires_grad]
        mod.autograd.backward(roots, retain_graph=True)
        mod.autograd.backward(roots[:1])
        grads.append([None if x.grad is None else x.grad.numpy().copy() for x in leaves])
    for e, t in zip(*grads):
        assert (e is None) == (t is None)
        if e is not None:
            np.testing.assert_allclose(e, t, rtol=1e-9, atol=1e-9)
