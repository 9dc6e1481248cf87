"""Indexing: tensor[key], tensor[key] = v and iteration, against PyTorch (forward and every
gradient), with gradcheck and double backward."""

import numpy as np
import pytest

import ember
from tests.oracle import check_op, gradcheck_op, rand, torch

X = (3, 4, 5)


def _key(build):
    """A function ``(x, *index_tensors) -> x[build(*index_tensors)]`` for check_op."""
    return lambda x, *idx: x[build(*idx)]


BASIC = [
    1,
    -1,
    (1, 2),
    (0, -1, 4),
    slice(1, None),
    (slice(None), slice(None, None, 2)),
    (None, Ellipsis, 1),
    (Ellipsis, None),
    (0, Ellipsis, slice(1, 3)),
    slice(None, None, 3),
    (slice(-2, None), None, slice(1, 4, 2)),
    (Ellipsis,),
    (),
    (1, slice(5, 9)),
]


@pytest.mark.parametrize("key", BASIC, ids=repr)
def test_basic_indexing_matches_torch_and_is_a_view(key):
    check_op(lambda x: x[key], [rand(*X, seed=1)])
    x = ember.tensor(rand(*X, seed=1))
    y = x[key]
    assert y.data.size == 0 or np.shares_memory(y.data, x.data)
    assert y._vc is x._vc and y._base is x


def test_full_integer_index_gives_0d_view():
    x = ember.tensor(rand(3, 4, seed=2), requires_grad=True)
    y = x[1, 2]
    assert y.shape == () and np.shares_memory(y.data, x.data)
    y.backward()
    expect = np.zeros((3, 4), np.float32)
    expect[1, 2] = 1
    np.testing.assert_array_equal(x.grad.numpy(), expect)


@pytest.mark.parametrize(
    "key,flip",
    [
        (slice(None, None, -1), lambda t: t.flip(0)),
        ((slice(None), slice(None, None, -2)), lambda t: t.flip(1)[:, ::2]),
        ((Ellipsis, slice(3, 0, -1)), lambda t: t[..., 1:4].flip(-1)),
        ((-1, slice(None, None, -3)), lambda t: t[-1].flip(0)[::3]),
    ],
)
def test_negative_steps(key, flip):
    # torch rejects negative steps; Ember follows NumPy, so compare with flip().
    check_op(lambda x: x[key], [rand(*X, seed=3)], torch_fn=flip)


@pytest.mark.parametrize(
    "build,arrays",
    [
        (lambda i: i, [np.array([0, 2, 0, 0])]),  # repeated rows
        (lambda i: i, [np.array([-1, 0, -1])]),  # negative
        (lambda i: i, [np.array([[0, 1], [2, 2]])]),  # 2-D index
        (lambda i: (i, slice(None)), [np.array([2, 2, 1])]),
        (lambda i: (slice(None), i), [np.array([3, 0, 3, -4])]),
        (lambda i: (Ellipsis, i), [np.array([[4, 4], [0, 1]])]),
        (lambda i, j: (i, j), [np.array([[0], [2]]), np.array([1, 1, 3])]),  # broadcast
        (lambda i, j: (i, slice(None), j), [np.array([0, 2, 2]), np.array([1, 4, 1])]),
        (lambda i, j: (slice(1, None), i, j), [np.array([0, 3, 0]), np.array([4, 4, 4])]),
        (lambda i: (None, i), [np.array([1, 1])]),
        (lambda i: (i, 1), [np.array([0, 0, 2])]),
        (lambda i: (1, slice(None, None, 2), i), [np.array([0, 0, 3])]),
        (lambda i: (i, None, slice(0, 2)), [np.array([1, 1])]),
        (lambda i, j: (i, 2, j), [np.array([0, 2]), np.array([1, 1])]),  # int between arrays
        (lambda i: (slice(None), 1, i), [np.array([[0], [3]])]),
        (lambda m: (m, 0), [np.array([True, False, True])]),
        (lambda i: i, [np.zeros(0, dtype=np.int64)]),
    ],
)
def test_integer_array_indexing(build, arrays):
    check_op(_key(build), [rand(*X, seed=4)] + arrays)


@pytest.mark.parametrize("noncontiguous", [False, True])
def test_integer_array_on_noncontiguous_input(noncontiguous):
    check_op(
        lambda x, i: x[i, 1:],
        [rand(4, 5, seed=5), np.array([3, 0, 3])],
        noncontiguous=noncontiguous,
    )


def test_list_and_numpy_indices_match_tensor_indices():
    x = ember.tensor(rand(*X, seed=6))
    ref = x[ember.tensor([2, 0, 2])].numpy()
    np.testing.assert_array_equal(x[[2, 0, 2]].numpy(), ref)
    np.testing.assert_array_equal(x[np.array([2, 0, 2])].numpy(), ref)
    np.testing.assert_array_equal(x[range(2, -1, -1)].numpy(), x.numpy()[::-1])
    assert x[[]].shape == (0, 4, 5)
    # a 0-d integer tensor acts like an int: a view
    y = x[ember.tensor(1)]
    assert y.shape == (4, 5) and np.shares_memory(y.data, x.data)


MASK_3D = np.random.default_rng(7).random(X) > 0.5
MASK_0 = np.array([True, False, True])
MASK_01 = np.random.default_rng(8).random((3, 4)) > 0.4


@pytest.mark.parametrize(
    "build,arrays",
    [
        (lambda m: m, [MASK_3D]),
        (lambda m: m, [MASK_0]),
        (lambda m: (m, slice(1, 4)), [MASK_01]),
        (lambda m: (slice(None), m[0]), [MASK_01]),
        (lambda m: (Ellipsis, m), [np.array([True, False, False, True, True])]),
        (lambda m, i: (m, i), [MASK_0, np.array([1, 1])]),  # mask + int array
        (lambda m: (1, m), [np.array([False, True, True, False])]),
        (lambda m: m, [np.zeros(X, dtype=bool)]),  # selects nothing
    ],
)
def test_boolean_masks(build, arrays):
    check_op(_key(build), [rand(*X, seed=9)] + arrays)


def test_python_bool_index():
    check_op(lambda x: x[True], [rand(3, 4, seed=10)])
    check_op(lambda x: x[False], [rand(3, 4, seed=10)])


def test_zero_dim_tensor_indexing():
    for key in [None, Ellipsis, ()]:
        check_op(lambda x, key=key: x[key], [np.array(2.5, np.float32)])


@pytest.mark.parametrize(
    "build,arrays",
    [
        (lambda: (slice(None), 1), []),
        (lambda i: i, [np.array([0, 2, 0])]),
        (lambda i, j: (i, slice(None), j), [np.array([0, 2, 0]), np.array([1, 1, 0])]),
        (lambda m: m, [np.array([[True, False], [True, True], [False, True]])]),
        (lambda i: (1, slice(None), i), [np.array([1, 0, 1])]),
    ],
)
def test_gradcheck_indexing(build, arrays):
    gradcheck_op(_key(build), [rand(3, 2, 2, seed=11)] + arrays)


def _hvp(ember_f, torch_f, x, v):
    """The Hessian-vector product of a scalar function in Ember and in torch."""
    xe = ember.tensor(x, requires_grad=True)
    (g,) = ember.autograd.grad(ember_f(xe), [xe], create_graph=True)
    (he,) = ember.autograd.grad((g * ember.tensor(v)).sum(), [xe])
    xt = torch.tensor(x, requires_grad=True)
    (gt,) = torch.autograd.grad(torch_f(xt), [xt], create_graph=True)
    (ht,) = torch.autograd.grad((gt * torch.tensor(v)).sum(), [xt])
    np.testing.assert_allclose(he.numpy(), ht.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "key",
    [
        (slice(None), 1),
        np.array([0, 2, 0]),
        (np.array([1, 1]), slice(None), np.array([0, 2])),
        np.array([True, False, True]),
    ],
)
def test_double_backward_through_indexing(key):
    x = rand(3, 4, 3, seed=12)
    v = rand(3, 4, 3, seed=13)
    w = rand(*np.zeros((3, 4, 3))[key].shape, seed=14)

    def f(t, lib):
        k = (
            key
            if not isinstance(key, tuple)
            else tuple(lib.tensor(k) if isinstance(k, np.ndarray) else k for k in key)
        )
        if isinstance(k, np.ndarray):
            k = lib.tensor(k)
        y = t[k]
        return (y * y * y * lib.tensor(w)).sum()

    _hvp(lambda t: f(t, ember), lambda t: f(t, torch), x, v)


def test_index_errors_name_index_dim_and_size():
    x = ember.ones(3, 4)
    with pytest.raises(IndexError, match="index 5 is out of bounds for dimension 0 with size 3"):
        x[5]
    with pytest.raises(IndexError, match="index -5 is out of bounds for dimension 1 with size 4"):
        x[:, -5]
    with pytest.raises(IndexError, match="index 7 is out of bounds for dimension 1 with size 4"):
        x[:, ember.tensor([0, 7])]
    with pytest.raises(IndexError, match="index 3 is out of bounds for dimension 0 with size 3"):
        x[[0, 3], [0, 1]]
    with pytest.raises(
        IndexError,
        match=r"The shape of the mask \[2\] at index 0 does not "
        r"match the shape of the indexed tensor \[3, 4\]",
    ):
        x[ember.tensor([True, False])]
    with pytest.raises(IndexError, match=r"mask \[3, 3\] at index 1 .* at index 1"):
        x[np.ones((3, 3), dtype=bool)]
    with pytest.raises(IndexError, match="too many indices for tensor of dimension 2"):
        x[0, 1, 2]
    with pytest.raises(IndexError, match="invalid index of a 0-dim tensor"):
        ember.tensor(1.0)[0]
    with pytest.raises(IndexError, match="tensors used as indices must be long, int, byte or bool"):
        x[ember.tensor([1.0])]
    with pytest.raises(IndexError, match="got float"):
        x[1.0]
    with pytest.raises(IndexError, match="single ellipsis"):
        x[..., ...]
    with pytest.raises(ValueError, match="slice step cannot be zero"):
        x[::0]


# ---------------------------------------------------------------------------- setitem
_FROM_INPUTS = object()


def _setitem_fn(key, value=_FROM_INPUTS):
    """``y = x * 1; y[key] = v``: v is the second input unless a fixed value is given."""

    def fn(x, *rest):
        y = x * 1  # a non-leaf copy that can be written in place in both frameworks
        if value is _FROM_INPUTS:
            v, idx = rest[0], rest[1:]
        else:
            v, idx = value, rest
        k = key(*idx) if callable(key) else key
        y[k] = v
        return y

    return fn


@pytest.mark.parametrize(
    "key,vshape,arrays",
    [
        ((1,), (4, 5), []),
        ((slice(None), 2), (3, 5), []),
        ((slice(None), 2), (5,), []),  # broadcast value
        ((0, slice(1, 3)), (1, 2, 5), []),  # value with a leading 1
        ((Ellipsis, slice(None, None, 2)), (1,), []),
        (lambda i: i, (2, 4, 5), [np.array([2, 0])]),
        (lambda i: (slice(None), i), (3, 3, 5), [np.array([3, -4, 1])]),
        (lambda i, j: (i, j), (2, 5), [np.array([0, 2]), np.array([1, 1])]),
        (lambda m: m, (), [MASK_3D]),
        (lambda m: m, (5,), [MASK_01]),
        (lambda i: (0, slice(None), i), (4, 2), [np.array([1, 3])]),  # int mixed with an array
    ],
)
def test_setitem_gradients_flow_to_value_and_not_to_overwritten(key, vshape, arrays):
    check_op(_setitem_fn(key), [rand(*X, seed=15), rand(*vshape, seed=16)] + arrays)


@pytest.mark.parametrize("value", [2.5, 0, -1.0])
def test_setitem_scalar_value(value):
    check_op(_setitem_fn((slice(1, None), 1), value), [rand(*X, seed=17)])
    check_op(_setitem_fn(lambda m: m, value), [rand(*X, seed=17), MASK_3D])
    x = ember.zeros(3, dtype=ember.float16)
    x[1] = np.float32(value)
    assert x.dtype is ember.float16 and x.tolist() == [0, value, 0]


def test_setitem_repeated_indices_value_gradient():
    # Every position the value was written to sends its gradient back (as torch does).
    check_op(_setitem_fn(lambda i: i), [rand(4, 3, seed=18), rand(3, seed=19), np.array([1, 1, 2])])


def test_setitem_numpy_and_list_values_and_int_targets():
    x = ember.zeros(2, 3)
    x[0] = np.array([1.0, 2.0, 3.0])
    x[1, :2] = [7, 8]
    np.testing.assert_array_equal(x.numpy(), [[1, 2, 3], [7, 8, 0]])
    i = ember.zeros(3, dtype=ember.int64)
    i[1] = 2.7
    assert i.tolist() == [0, 2, 0]
    assert i.dtype is ember.int64


def test_setitem_gradcheck():
    def fn(x, v):
        y = x * 1
        y[ember.tensor([0, 2]), 1:] = v
        return y

    gradcheck_op(fn, [rand(3, 3, seed=20), rand(2, 1, seed=21)])


def test_setitem_leaf_and_versions():
    w = ember.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        w[0] = 2.0
    v0 = w._version
    with ember.no_grad():
        w[0] = 2.0
    assert w._version == v0 + 1 and w.tolist() == [2.0, 1.0, 1.0]
    assert w.grad_fn is None and w.requires_grad

    a = ember.ones(3, requires_grad=True)
    b = a * 2
    c = b * b  # saves b
    b[0] = 5.0
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        c.sum().backward()


def test_setitem_value_grad_with_constant_target():
    x = ember.zeros(2, 3)
    v = ember.tensor([1.0, 2.0, 3.0], requires_grad=True)
    x[1] = v
    assert x.requires_grad and not x.is_leaf
    (x * ember.tensor([[1.0, 1, 1], [2, 3, 4]])).sum().backward()
    np.testing.assert_array_equal(v.grad.numpy(), [2, 3, 4])


def test_setitem_errors():
    x = ember.zeros(3, 5)
    with pytest.raises(
        RuntimeError,
        match=r"shape mismatch: value tensor of shape \[2\] cannot "
        r"be broadcast to indexing result of shape \[5\]",
    ):
        x[0] = ember.ones(2)
    with pytest.raises(IndexError, match="index 3 is out of bounds for dimension 0 with size 3"):
        x[3] = 1.0


# ------------------------------------------------------------------------------ iteration
def test_iteration_over_dim0():
    x = ember.tensor(rand(3, 2, seed=22), requires_grad=True)
    rows = list(x)
    assert len(rows) == 3 and all(r.shape == (2,) for r in rows)
    np.testing.assert_array_equal(np.stack([r.detach().numpy() for r in rows]), x.detach().numpy())
    sum(r * (k + 1) for k, r in enumerate(rows)).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[1, 1], [2, 2], [3, 3]])
    a, b = ember.ones(2, 4)
    assert a.shape == (4,)
    with pytest.raises(TypeError, match="iteration over a 0-d tensor"):
        iter(ember.tensor(1.0))


def _random_key(rng, shape, seed):
    """A random mix of ints, slices, None, Ellipsis, int arrays and masks for ``shape``."""
    items, dim, ell = [], 0, False
    for _ in range(rng.integers(1, 5)):
        r = int(rng.integers(0, 8))
        if r == 0:
            items.append(None)
        elif r == 7 and not ell:
            ell = True
            items.append(Ellipsis)
        elif dim < len(shape) and r in (1, 2, 3, 4, 5, 6):
            size = shape[dim] if not ell else shape[-1]
            if r == 1:
                items.append(int(rng.integers(-size, size)))
            elif r == 2:
                lo, hi = sorted(int(v) for v in rng.integers(-3, 4, 2))
                items.append(slice(lo, hi, int(rng.integers(1, 3))))
            elif r == 3:
                items.append(slice(None))
            elif r in (4, 5):
                n = (int(rng.integers(1, 3)),) if r == 4 else (2, 1)
                items.append(("int", rng.integers(0, 2, size=n)))
            else:
                items.append(("mask", np.random.default_rng(seed).random(size) > 0.5))
            dim += 1
    return items


def test_random_keys_match_torch_getitem_backward_and_setitem():
    rng = np.random.default_rng(0)
    shape = (3, 4, 5, 2)
    checked = 0
    for seed in range(150):
        items = _random_key(rng, shape, seed)

        def build(lib, items=items):
            return tuple(lib.tensor(k[1]) if isinstance(k, tuple) else k for k in items)

        x = np.random.default_rng(seed).standard_normal(shape)
        xt = torch.tensor(x, requires_grad=True)
        try:
            yt = xt[build(torch)]
        except (IndexError, RuntimeError):
            # torch rejects it (e.g. arrays that don't broadcast): so must Ember
            with pytest.raises((IndexError, RuntimeError)):
                ember.tensor(x)[build(ember)]
            continue
        xe = ember.tensor(x, requires_grad=True)
        ye = xe[build(ember)]
        assert tuple(ye.shape) == tuple(yt.shape), items
        np.testing.assert_array_equal(ye.detach().numpy(), yt.detach().numpy())
        g = np.random.default_rng(1).standard_normal(tuple(yt.shape))
        yt.backward(torch.tensor(g))
        ye.backward(ember.tensor(g))
        np.testing.assert_allclose(xe.grad.numpy(), xt.grad.numpy(), err_msg=str(items))
        ze, zt = ember.tensor(x), torch.tensor(x)
        ze[build(ember)] = ember.tensor(g)
        zt[build(torch)] = torch.tensor(g)
        np.testing.assert_array_equal(ze.numpy(), zt.numpy())
        checked += 1
    assert checked > 100
