"""Comparison, predicates, logic, bitwise ops, isclose/allclose/equal vs PyTorch."""

import operator

import ml_dtypes
import numpy as np
import pytest

import ember
from tests.oracle import check_op, rand, torch

COMPARISONS = ["eq", "ne", "lt", "le", "gt", "ge"]
OPERATORS = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
}


def _both(fn, *arrays):
    """fn in Ember and in torch on the same arrays; results as NumPy, dtype names checked."""
    e = fn(*(ember.tensor(a) if isinstance(a, np.ndarray) else a for a in arrays))
    t = fn(*(torch.from_numpy(a.copy()) if isinstance(a, np.ndarray) else a for a in arrays))
    assert e.dtype.name == str(t.dtype).removeprefix("torch."), (e.dtype, t.dtype)
    assert tuple(e.shape) == tuple(t.shape)
    return e.numpy(), t.numpy()


def _rounded(*shape, seed):
    return np.asarray(np.round(rand(*shape, seed=seed)))  # ties are common


@pytest.mark.parametrize("name", COMPARISONS)
@pytest.mark.parametrize(
    "shapes",
    [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 3), (4, 1)), ((), (3,)), ((0, 3), (3,)), ((5,), ())],
)
def test_comparisons_match_torch(name, shapes):
    a, b = _rounded(*shapes[0], seed=1), _rounded(*shapes[1], seed=2)
    out = check_op(
        lambda x, y: getattr(ember, name)(x, y),
        [a, b],
        torch_fn=lambda x, y: getattr(torch, name)(x, y),
    )
    assert out[0].dtype is ember.bool and not out[0].requires_grad
    check_op(lambda x, y: getattr(x, name)(y), [a, b])
    check_op(lambda x, y: OPERATORS[name](x, y), [a, b])


@pytest.mark.parametrize("name", COMPARISONS)
def test_comparisons_with_scalars_and_promotion(name):
    op = OPERATORS[name]
    i = np.array([1, 2, 3], dtype=np.int64)
    f = np.array([1.0, 2.5, np.nan], dtype=np.float32)
    for args in [
        (i, 2),
        (i, 2.5),
        (f, 2.5),
        (f, 2),
        (i, f),
        (i.astype(np.int32), i),
        (i.astype(np.uint8), 2),
        (i > 1, True),
        (i > 1, 0.5),
        (f.astype(np.float16), f),
    ]:
        e, t = _both(op, *args)
        np.testing.assert_array_equal(e, t, err_msg=f"{name} {args}")
        e, t = _both(lambda x, y: op(y, x), *args)  # reflected: 2 < t is t > 2
        np.testing.assert_array_equal(e, t, err_msg=f"{name} reflected {args}")
    e, t = _both(
        lambda x, y: getattr(torch if isinstance(x, torch.Tensor) else ember, name)(x, y), i, 2.5
    )
    np.testing.assert_array_equal(e, t)


def test_comparisons_noncontiguous_and_numpy_operands():
    a, b = _rounded(4, 5, seed=3), _rounded(4, 5, seed=4)
    check_op(lambda x, y: x <= y, [a, b], noncontiguous=True)
    arr = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    t = ember.tensor([1.0, 5.0, 3.0], device="cpu")  # host arrays join CPU tensors only
    assert (t == arr).tolist() == [True, False, True]
    assert isinstance(arr == t, ember.Tensor) and (arr == t).tolist() == [True, False, True]
    assert (arr < t).tolist() == [False, True, False]


def test_gradients_do_not_flow_through_comparisons():
    x = ember.tensor(rand(3, seed=5), requires_grad=True)
    for out in (x > 0, x == x, ember.isnan(x), ember.isclose(x, x), x.ne(1.0)):
        assert not out.requires_grad and out.grad_fn is None


def test_equality_with_unsupported_types_is_identity_based():
    t = ember.tensor([1, 2])
    assert (t == None) is False  # noqa: E711 - the point of the test
    assert (t != None) is True  # noqa: E711
    assert (t == "a") is False and (t == [1, 2]) is False and (t == (1, 2)) is False
    with pytest.raises(TypeError, match="not supported between instances"):
        t < None  # noqa: B015
    with pytest.raises(TypeError, match="eq"):
        ember.eq(t, None)
    assert t in [t] and t in {t} and {t: 1}[t] == 1
    assert hash(t) == object.__hash__(t)


def test_comparison_broadcast_error_names_op_and_shapes():
    with pytest.raises(
        RuntimeError,
        match=r"lt: shapes \(2,\) and \(3,\) cannot be broadcast "
        r"together: The size of tensor a \(2\) must match "
        r"the size of tensor b \(3\) at non-singleton "
        r"dimension 0",
    ):
        _ = ember.ones(2) < ember.ones(3)


def test_bfloat16_comparisons():
    a = ember.tensor([1.0, 2.0, 3.0], dtype=ember.bfloat16)
    assert (a > 1.5).tolist() == [False, True, True]
    assert (a == ember.tensor([1.0, 2.0, 4.0])).tolist() == [True, True, False]


# ------------------------------------------------------------------------- predicates
@pytest.mark.parametrize("name", ["isnan", "isinf", "isfinite", "isposinf", "isneginf"])
@pytest.mark.parametrize(
    "dtype", [np.float32, np.float64, np.float16, np.int64, np.int32, np.uint8, np.bool_]
)
def test_predicates_match_torch(name, dtype):
    vals = np.array([0.0, 1.0, -2.0, np.inf, -np.inf, np.nan]).reshape(2, 3)
    x = (
        vals.astype(dtype)
        if np.dtype(dtype).kind == "f"
        else np.array([[0, 1, 2], [3, 4, 5]], dtype=dtype)
    )
    e, t = _both(lambda v: getattr(torch if isinstance(v, torch.Tensor) else ember, name)(v), x)
    np.testing.assert_array_equal(e, t)
    e, t = _both(lambda v: getattr(v, name)(), x[:, :0])
    assert e.shape == (2, 0)


def test_predicates_on_bfloat16_and_0d():
    b = ember.tensor([np.inf, np.nan, 1.0], dtype=ember.bfloat16)
    assert ember.isnan(b).tolist() == [False, True, False]
    assert ember.isinf(b).tolist() == [True, False, False]
    assert ember.isfinite(b).tolist() == [False, False, True]
    assert ember.isposinf(b).tolist() == [True, False, False]
    assert ember.isnan(ember.tensor(float("nan"))).item() is True
    assert ember.isnan(ember.tensor(1.0)).shape == ()
    x = np.array([[1.0, np.nan], [np.inf, 2.0]], dtype=np.float32)
    check_op(lambda v: v.isfinite(), [x], noncontiguous=True)


# ----------------------------------------------------------------------------- logic
@pytest.mark.parametrize("name", ["logical_and", "logical_or", "logical_xor"])
@pytest.mark.parametrize(
    "dtypes", [(np.bool_, np.bool_), (np.float32, np.int64), (np.int32, np.bool_)]
)
def test_logical_binary(name, dtypes):
    a = (np.array([[0, 1, 2], [0, 0, 3]])).astype(dtypes[0])
    b = (np.array([1, 0, 2])).astype(dtypes[1])
    e, t = _both(
        lambda x, y: getattr(torch if isinstance(x, torch.Tensor) else ember, name)(x, y), a, b
    )
    np.testing.assert_array_equal(e, t)
    e, t = _both(lambda x, y: getattr(x, name)(y), a, b)
    np.testing.assert_array_equal(e, t)


def test_logical_not_and_inplace():
    x = np.array([0.0, 1.5, -2.0, np.nan], dtype=np.float32)
    e, t = _both(lambda v: v.logical_not(), x)
    np.testing.assert_array_equal(e, t)
    m = ember.tensor([True, False, True])
    assert m.logical_and_(ember.tensor([True, True, False])) is m
    assert m.tolist() == [True, False, False]
    m.logical_not_()
    assert m.tolist() == [False, True, True]
    with pytest.raises(RuntimeError, match=r"logical_or: shapes \(3,\) and \(2,\)"):
        ember.logical_or(m, ember.tensor([True, False]))


# --------------------------------------------------------------------------- bitwise
@pytest.mark.parametrize("op", [operator.and_, operator.or_, operator.xor])
@pytest.mark.parametrize(
    "dtypes",
    [(np.bool_, np.bool_), (np.int64, np.int64), (np.int32, np.bool_), (np.uint8, np.int64)],
)
def test_bitwise_operators(op, dtypes):
    a = np.array([[0, 1, 5], [7, 2, 3]]).astype(dtypes[0])
    b = np.array([1, 3, 6]).astype(dtypes[1])
    for x, y in ((a, b), (a, True), (a, 3) if dtypes[0] != np.bool_ else (a, False)):
        e, t = _both(op, x, y)
        np.testing.assert_array_equal(e, t)
        e, t = _both(lambda p, q: op(q, p), x, y)  # reflected: True & t
        np.testing.assert_array_equal(e, t)


def test_bitwise_not_and_functions():
    for x in (np.array([True, False]), np.array([0, 5, -3]), np.array([1, 200], np.uint8)):
        e, t = _both(operator.invert, x)
        np.testing.assert_array_equal(e, t)
        e, t = _both(lambda v: v.bitwise_not(), x)
        np.testing.assert_array_equal(e, t)
    a, b = ember.tensor([6, 3]), ember.tensor([3, 5])
    assert ember.bitwise_and(a, b).tolist() == [2, 1]
    assert ember.bitwise_or(a, b).tolist() == [7, 7]
    assert ember.bitwise_xor(a, b).tolist() == [5, 6]
    with pytest.raises(NotImplementedError, match="bitwise_and: not implemented for 'float32'"):
        ember.ones(2) & 1
    with pytest.raises(NotImplementedError, match="bitwise_not"):
        ~ember.ones(2)


def test_inplace_bitwise_operators():
    m = ember.tensor([True, False, True])
    alias = m
    m &= ember.tensor([True, True, False])
    assert m is alias and m.tolist() == [True, False, False]
    m |= ember.tensor([False, True, False])
    assert m is alias and m.tolist() == [True, True, False]
    m ^= True
    assert m is alias and m.tolist() == [False, False, True]
    i = ember.tensor([1, 2, 3])
    i.eq_(2)
    assert i.dtype is ember.int64 and i.tolist() == [0, 1, 0]


# ---------------------------------------------------------------------- closeness
@pytest.mark.parametrize(
    "kw", [{}, dict(rtol=0.1), dict(atol=0.5), dict(rtol=0, atol=0), dict(equal_nan=True)]
)
def test_isclose_matches_torch(kw):
    a = np.array([1.0, 1.05, np.nan, np.inf, -np.inf, np.inf, 0.0, 1e-9, 3.0], np.float32)
    b = np.array([1.0, 1.0, np.nan, np.inf, np.inf, 1.0, 1e-9, 0.0, 3.2], np.float32)
    e, t = _both(
        lambda x, y: (torch if isinstance(x, torch.Tensor) else ember).isclose(x, y, **kw), a, b
    )
    np.testing.assert_array_equal(e, t)
    e, t = _both(lambda x, y: x.isclose(y, **kw), a[:, None], b)
    np.testing.assert_array_equal(e, t)
    i = np.array([1, 2, 10]), np.array([1, 3, 11])
    e, t = _both(
        lambda x, y: (torch if isinstance(x, torch.Tensor) else ember).isclose(x, y, **kw), *i
    )
    np.testing.assert_array_equal(e, t)
    for x, y in ((a, b), (a[:2], b[:2]), (a[3:4], b[3:4])):
        assert ember.allclose(ember.tensor(x), ember.tensor(y), **kw) == torch.allclose(
            torch.from_numpy(x), torch.from_numpy(y), **kw
        )


def test_isclose_errors():
    with pytest.raises(RuntimeError, match="isclose: float32 did not match float64"):
        ember.isclose(ember.ones(2), ember.ones(2, dtype=ember.float64))
    with pytest.raises(RuntimeError, match="rtol and atol must be greater than or equal"):
        ember.isclose(ember.ones(2), ember.ones(2), rtol=-1)
    bf = ember.tensor([1.0, 2.0], dtype=ember.bfloat16)
    assert ember.allclose(bf, bf * 1.001, rtol=1e-2)


def test_equal():
    a = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    cases = [
        (a, a.copy()),
        (a, a.T.copy()),
        (a, a[:1]),
        (a, a.astype(np.int64)),
        (np.array([np.nan]), np.array([np.nan])),
        (a[:0], a[:0]),
    ]
    for x, y in cases:
        got = ember.equal(ember.tensor(x), ember.tensor(y))
        assert got is torch.equal(torch.from_numpy(x), torch.from_numpy(y)), (x, y)
    assert ember.tensor([1, 2]).equal(ember.tensor([1, 2])) is True


def test_equal_dtype_of_half_precision_pairs():
    h = ember.tensor(np.array([1.5], dtype=np.float16))
    b = ember.tensor(np.array([1.5], dtype=ml_dtypes.bfloat16))
    assert (h == b).tolist() == [True]
    assert ember.equal(h, b)
