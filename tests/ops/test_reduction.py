"""Reductions vs PyTorch: forward and every gradient over dims (None, int, negative, tuple),
keepdim, 0-d, empty and non-contiguous inputs; float64 gradchecks; Hessian-vector products;
and the errors (empty max, out-of-range dims)."""

import math

import numpy as np
import pytest

import ember
from tests.oracle import check_op, gradcheck_op, rand, torch

DIMS = [None, 0, -1, (0, 2), (-1, 0), ()]
SHAPE = (3, 4, 5)


def _kw(dim, keepdim):
    return {} if dim is None else {"dim": dim, "keepdim": keepdim}


# ---------------------------------------------------------------------------- sum / mean
@pytest.mark.parametrize("op", ["sum", "mean"])
@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("keepdim", [False, True])
def test_sum_mean(op, dim, keepdim):
    check_op(lambda x: getattr(x, op)(**_kw(dim, keepdim)), [rand(*SHAPE, seed=1)])


@pytest.mark.parametrize("op", ["sum", "mean"])
@pytest.mark.parametrize("kw", [{}, {"dim": 0}, {"dim": -1, "keepdim": True}, {"dim": (0,)}])
def test_sum_mean_0d(op, kw):
    check_op(lambda x: getattr(x, op)(**kw), [np.array(1.5, np.float32)])


@pytest.mark.parametrize("kw", [{}, {"dim": 0}, {"dim": 1, "keepdim": True}])
def test_sum_mean_empty(kw):
    check_op(lambda x: x.sum(**kw), [np.zeros((0, 3), np.float32)])
    check_op(lambda x: x.mean(**kw), [np.zeros((0, 3), np.float32)])


def test_sum_int_dtype_and_noncontiguous():
    check_op(lambda x: x.sum(), [np.arange(6, dtype=np.int32).reshape(2, 3)])
    check_op(lambda x: x.sum(dim=1), [rand(4, 5, seed=2)], noncontiguous=True)
    check_op(lambda x: x.mean(dim=0, keepdim=True), [rand(4, 5, seed=3)], noncontiguous=True)


# -------------------------------------------------------------------------- var / std
@pytest.mark.parametrize("op", ["var", "std"])
@pytest.mark.parametrize("dim", DIMS[:-1])
@pytest.mark.parametrize("keepdim", [False, True])
def test_var_std_dims(op, dim, keepdim):
    check_op(lambda x: getattr(x, op)(**_kw(dim, keepdim)), [rand(*SHAPE, seed=4)])


@pytest.mark.parametrize("op", ["var", "std"])
def test_var_std_empty_dim_list_reduces_all(op):
    # torch's forward reduces everything for dim=(); its backward there is inf (dof taken as
    # 0), a torch bug we do not copy: the gradient is the one of dim=None.
    x = rand(3, 4, seed=40)
    check_op(lambda t: getattr(t, op)(()), [x], grad=False)
    a = ember.tensor(x, requires_grad=True)
    b = ember.tensor(x, requires_grad=True)
    getattr(a, op)(()).backward()
    getattr(b, op)().backward()
    np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy())
    check_op(lambda t: getattr(t, op)(), [x])


@pytest.mark.parametrize("op", ["var", "std"])
@pytest.mark.parametrize("correction", [0, 1, 2, 0.5])
def test_var_std_correction(op, correction):
    check_op(lambda x: getattr(x, op)(dim=1, correction=correction), [rand(3, 6, seed=5)])
    check_op(
        lambda x: getattr(x, op)(correction=correction), [rand(3, 6, seed=6)], noncontiguous=True
    )


@pytest.mark.parametrize("op", ["var", "std"])
def test_var_std_legacy_unbiased(op):
    x = rand(3, 5, seed=7)
    check_op(lambda t: getattr(t, op)(False), [x])
    check_op(lambda t: getattr(t, op)(True), [x])
    check_op(lambda t: getattr(t, op)(1, False, True), [x])
    check_op(lambda t: getattr(t, op)(dim=0, unbiased=False), [x])
    check_op(
        lambda t: getattr(torch if isinstance(t, torch.Tensor) else ember, op)(t, 1, True), [x]
    )


@pytest.mark.parametrize("op", ["var_mean", "std_mean"])
@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"dim": 1},
        {"dim": (0, -1), "keepdim": True},
        {"dim": 0, "correction": 0},
        {"dim": 0, "unbiased": False},
    ],
)
def test_var_mean_std_mean(op, kw):
    check_op(
        lambda x: getattr(ember, op)(x, **kw),
        [rand(3, 4, 2, seed=8)],
        torch_fn=lambda x: getattr(torch, op)(x, **kw),
    )


def test_std_of_constant_has_zero_gradient_like_torch():
    check_op(lambda x: x.std(), [np.ones(4, np.float32)])
    check_op(lambda x: x.std(dim=1), [np.array([[1, 1, 1], [1, 2, 3]], np.float32)])


def test_var_edge_cases():
    with pytest.warns(UserWarning, match="degrees of freedom is <= 0"):  # ember's and torch's
        check_op(lambda x: x.var(), [np.array(2.0, np.float32)])  # 0-d: one sample, nan
    with pytest.warns(UserWarning, match="degrees of freedom is <= 0"):
        check_op(lambda x: x.var(dim=0), [np.zeros((0, 3), np.float32)], grad=False)
    with pytest.warns(UserWarning, match="degrees of freedom is <= 0"):
        ember.ones(3, 2).std(0, correction=3)
    check_op(lambda x: x.std(dim=0, correction=0), [np.array(2.0, np.float32)])
    x = ember.ones(3, dtype=ember.float16)
    assert x.var().dtype is ember.float16
    with pytest.raises(RuntimeError, match="var.*floating point"):
        ember.ones(3, dtype=ember.int64).var()
    with pytest.raises(RuntimeError, match="both unbiased and correction"):
        ember.ones(3).var(unbiased=True, correction=1)


# ---------------------------------------------------------------------------- max / min
@pytest.mark.parametrize("op", ["max", "min"])
def test_max_min_full(op):
    out = check_op(lambda x: getattr(x, op)(), [rand(3, 4, seed=9)])
    assert out[0].shape == ()
    check_op(lambda x: getattr(x, op)(), [rand(3, 4, seed=10)], noncontiguous=True)
    check_op(lambda x: getattr(x, op)(), [np.array(2.5, np.float32)])


@pytest.mark.parametrize("op", ["max", "min"])
@pytest.mark.parametrize("dim", [0, 1, -1, -3])
@pytest.mark.parametrize("keepdim", [False, True])
def test_max_min_dim(op, dim, keepdim):
    out = check_op(lambda x: getattr(x, op)(dim, keepdim), [rand(*SHAPE, seed=11)])
    assert out[1].dtype is ember.int64 and not out[1].requires_grad


@pytest.mark.parametrize("op", ["max", "min"])
def test_max_min_namedtuple(op):
    x = ember.tensor([[1.0, 5.0, 5.0], [7.0, 2.0, 7.0]], requires_grad=True)
    res = getattr(x, op)(dim=1)
    values, indices = res
    assert values is res.values and indices is res.indices
    want = [1, 0] if op == "max" else [0, 1]
    assert indices.tolist() == want  # ties: the first index, as torch
    res.values.sum().backward()
    check_op(lambda t: getattr(t, op)(dim=1), [x.detach().numpy()])
    f = getattr(ember, op)(x.detach(), 0, keepdim=True)
    assert f.values.shape == (1, 3) and f.indices.shape == (1, 3)


@pytest.mark.parametrize("op", ["max", "min", "amax", "amin"])
def test_ties_split_gradient_evenly_without_dim(op):
    x = np.array([[3.0, 3.0, -1.0], [-1.0, 3.0, 0.5]], np.float32)
    check_op(lambda t: getattr(t, op)(), [x if op in ("max", "amax") else -x])
    check_op(lambda t: getattr(t, op)(1), [x if op in ("max", "amax") else -x])


def test_max_with_dim_on_0d_and_empty():
    check_op(lambda x: x.max(0), [np.array(3.0, np.float32)])
    check_op(lambda x: x.min(-1, keepdim=True), [np.array(3.0, np.float32)])
    check_op(lambda x: x.max(1), [np.zeros((0, 3), np.float32)])
    check_op(lambda x: x.max(dim=0), [np.array([[1, 5], [3, 2]], np.int32)])


def test_max_nan_propagates():
    x = np.array([[1.0, np.nan, 3.0], [0.0, 2.0, 1.0]], np.float32)
    check_op(lambda t: t.max(), [x])
    check_op(lambda t: t.max(1), [x])
    check_op(lambda t: t.argmax(1), [x], grad=False)


@pytest.mark.parametrize("op", ["max", "min", "amax", "amin", "argmax", "argmin", "aminmax"])
def test_empty_extreme_raises_naming_op(op):
    with pytest.raises((RuntimeError, IndexError), match=rf"^{op}\(\).*numel\(\) == 0"):
        getattr(ember.zeros(0, 3), op)()
    with pytest.raises(
        IndexError,
        match=rf"^{op}\(\): Expected reduction dim 0 to have "
        "non-zero size",
    ):
        if op == "aminmax":
            ember.aminmax(ember.zeros(0, 3), dim=0)
        else:
            getattr(ember.zeros(0, 3), op)(0)


def test_max_rejects_tuple_dim():
    with pytest.raises(TypeError, match=r"max\(\): argument 'dim' must be int, not tuple"):
        ember.ones(2, 3).max((0, 1))


def test_max_min_with_tensor_other_is_elementwise():
    check_op(
        lambda x, y: x.max(y),
        [rand(3, 4, seed=12), rand(4, seed=13)],
        torch_fn=lambda x, y: torch.max(x, y),
    )
    check_op(
        lambda x, y: ember.min(x, y),
        [rand(3, 4, seed=14), rand(3, 4, seed=15)],
        torch_fn=lambda x, y: torch.min(x, y),
    )


# ------------------------------------------------------------------------ argmax / argmin
@pytest.mark.parametrize("op", ["argmax", "argmin"])
@pytest.mark.parametrize(
    "kw", [{}, {"keepdim": True}, {"dim": 0}, {"dim": -1}, {"dim": 1, "keepdim": True}]
)
def test_argmax_argmin(op, kw):
    out = check_op(lambda x: getattr(x, op)(**kw), [rand(*SHAPE, seed=16)], grad=False)
    assert out[0].dtype is ember.int64
    check_op(lambda x: getattr(x, op)(**kw), [rand(4, 6, seed=17)], noncontiguous=True, grad=False)


def test_argmax_ties_0d_and_ints():
    check_op(lambda x: x.argmax(), [np.array([[1.0, 4.0], [4.0, 0.0]], np.float32)], grad=False)
    check_op(lambda x: x.argmin(1), [np.array([[2, 1, 1], [0, 0, 3]], np.int64)], grad=False)
    check_op(lambda x: x.argmax(0), [np.array(1.0, np.float32)], grad=False)
    check_op(lambda x: x.argmax(keepdim=True), [np.array(1.0, np.float32)], grad=False)
    check_op(lambda x: x.argmax(1), [np.zeros((0, 3), np.float32)], grad=False)
    with pytest.raises(RuntimeError, match=r"argmax\(\): does not support bool input"):
        ember.ones(3, dtype=ember.bool).argmax()


# --------------------------------------------------------------------- amax / amin / aminmax
@pytest.mark.parametrize("op", ["amax", "amin"])
@pytest.mark.parametrize("dim", [0, -1, (0, 2), (2, -3), ()])
@pytest.mark.parametrize("keepdim", [False, True])
def test_amax_amin(op, dim, keepdim):
    check_op(lambda x: getattr(x, op)(dim, keepdim), [rand(*SHAPE, seed=18)])


def test_amax_ties_noncontiguous_and_0d():
    x = np.round(rand(4, 6, seed=19))  # many ties
    check_op(lambda t: t.amax(1), [x], noncontiguous=True)
    check_op(lambda t: t.amin((0, 1)), [x], noncontiguous=True)
    check_op(lambda t: t.amax(0), [np.array(2.0, np.float32)])
    check_op(lambda t: t.amax(1), [np.zeros((0, 3), np.float32)])


@pytest.mark.parametrize("kw", [{}, {"dim": 1}, {"dim": -1, "keepdim": True}])
def test_aminmax(kw):
    x = np.round(rand(3, 5, seed=20))
    res = check_op(lambda t: ember.aminmax(t, **kw), [x], torch_fn=lambda t: torch.aminmax(t, **kw))
    r = ember.aminmax(ember.tensor(x), **kw)
    assert r.min is r[0] and r.max is r[1]
    assert len(res) == 2


# -------------------------------------------------------------------------------- prod
@pytest.mark.parametrize("dim", [None, 0, -1, 1])
@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("zeros", [0, 1, 2])
def test_prod(dim, keepdim, zeros):
    x = rand(3, 4, seed=21, positive=True)
    if zeros >= 1:
        x[1, 2] = 0
    if zeros >= 2:
        x[1, 0] = 0
        x[2, 2] = 0
    check_op(lambda t: t.prod(**_kw(dim, keepdim)), [x])
    check_op(lambda t: t.prod(**_kw(dim, keepdim)), [x], noncontiguous=True)


def test_prod_edge_cases():
    check_op(lambda t: t.prod(), [np.array(0.0, np.float32)])
    check_op(lambda t: t.prod(0, keepdim=True), [np.array(3.0, np.float32)])
    check_op(lambda t: t.prod(0), [np.zeros((0, 3), np.float32)])
    check_op(lambda t: t.prod(), [np.zeros((0, 3), np.float32)])
    check_op(lambda t: t.prod(), [np.array([[1, 2], [3, 4]], np.int32)])
    check_op(
        lambda t: t.prod(1, dtype=ember.float64 if isinstance(t, ember.Tensor) else torch.float64),
        [rand(2, 3, seed=22)],
    )
    with pytest.raises(TypeError, match=r"prod\(\): argument 'dim' must be int"):
        ember.ones(2, 3).prod((0, 1))


# ---------------------------------------------------------------------------- logsumexp
@pytest.mark.parametrize("dim", [0, -1, (0, 2), (1,)])
@pytest.mark.parametrize("keepdim", [False, True])
def test_logsumexp(dim, keepdim):
    check_op(lambda x: x.logsumexp(dim, keepdim), [rand(*SHAPE, seed=23)])


def test_logsumexp_is_stable_and_handles_infinities():
    big = np.array([[1000.0, 999.0, -1000.0], [-1000.0, -1001.0, -999.5]], np.float32)
    out = check_op(lambda x: x.logsumexp(1), [big])
    assert np.all(np.isfinite(out[0].detach().numpy()))
    check_op(lambda x: x.logsumexp(0), [big], noncontiguous=True)
    inf = np.array([[-np.inf, -np.inf], [np.inf, 1.0], [0.0, -np.inf]], np.float32)
    check_op(lambda x: x.logsumexp(1), [inf], grad=False)
    check_op(lambda x: x.logsumexp(0), [np.zeros((0, 3), np.float32)])
    check_op(lambda x: x.logsumexp(0), [np.array(2.0, np.float32)])
    check_op(lambda x: x.logsumexp(1), [np.array([[1, 2], [3, 4]], np.int64)])


# ------------------------------------------------------------------------ cumsum / cumprod
@pytest.mark.parametrize("op", ["cumsum", "cumprod"])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_cumsum_cumprod(op, dim):
    check_op(lambda x: getattr(x, op)(dim), [rand(3, 4, 2, seed=24)])
    check_op(lambda x: getattr(x, op)(dim=dim), [rand(4, 3, seed=25)], noncontiguous=True)


@pytest.mark.parametrize("op", ["cumsum", "cumprod"])
def test_cumsum_cumprod_dtypes_0d_empty(op):
    check_op(lambda x: getattr(x, op)(0), [np.array([1, 2, 3], np.int32)])
    check_op(lambda x: getattr(x, op)(0), [np.array([True, False, True])])
    check_op(
        lambda x: getattr(x, op)(
            1, dtype=ember.float64 if isinstance(x, ember.Tensor) else torch.float64
        ),
        [rand(2, 3, seed=26)],
    )
    check_op(lambda x: getattr(x, op)(0), [np.array(1.5, np.float32)])
    check_op(lambda x: getattr(x, op)(-1), [np.zeros((0, 3), np.float32)])
    check_op(lambda x: getattr(x, op)(0), [np.zeros((0, 3), np.float32)])


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int64])
@pytest.mark.parametrize(
    "shape, axis", [((16, 64, 96), 2), ((16, 64, 96), 1), ((40, 9, 300), 0), ((40000, 2), 0)]
)
@pytest.mark.parametrize("reverse", [False, True])
def test_large_cumsum_is_np_cumsum_bit_for_bit(dtype, shape, axis, reverse):
    """From _CUMSUM_MIN elements on, NumPy cumsums run as row blocks on the threads (last
    axis) or one vectorised add per step (other axes, slabs of >= _SLAB_MIN elements, else
    np.cumsum): the same additions in the same order, so the same bits as np.cumsum, and the
    reversed sum (the gradient) as the flipped one."""
    from ember.ops.reduction import _CUMSUM_MIN, CumSum

    rng = np.random.default_rng(axis)
    a = (rng.standard_normal(shape) * 10).astype(dtype)
    assert a.size >= _CUMSUM_MIN
    want = np.flip(np.cumsum(np.flip(a, axis), axis), axis) if reverse else np.cumsum(a, axis)
    got = CumSum(axis, reverse).forward(a)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_large_cumsum_matches_torch():
    check_op(lambda x: x.cumsum(-1), [rand(8, 32, 512, seed=28)], atol=1e-4)
    check_op(lambda x: x.cumsum(1), [rand(8, 512, 32, seed=29)], atol=1e-4)


@pytest.mark.parametrize("zeros", [[2], [1, 3], [0, 4]])
def test_cumprod_with_zeros(zeros):
    x = rand(2, 5, seed=27, positive=True)
    x[:, zeros] = 0
    check_op(lambda t: t.cumprod(1), [x])
    check_op(lambda t: t.cumprod(0), [x.T.copy()])


# ------------------------------------------------------------------------------- norm
@pytest.mark.parametrize("p", [2, 1, math.inf, -math.inf, 3, 1.5, 0.5, 0, "fro"])
@pytest.mark.parametrize("dim", [None, 1, -1, (0, 2)])
@pytest.mark.parametrize("keepdim", [False, True])
def test_norm(p, dim, keepdim):
    x = rand(*SHAPE, seed=28)
    check_op(lambda t: t.norm(p, dim, keepdim), [x], rtol=2e-4)


@pytest.mark.parametrize("p", [2, 1, math.inf, 3, 1.5, 0.5, 0])
def test_norm_gradient_at_zero_and_ties(p):
    z = np.zeros((2, 3), np.float32)
    z[1] = [1.0, -1.0, 0.0]
    check_op(lambda t: t.norm(p), [np.zeros(3, np.float32)])
    check_op(lambda t: t.norm(p, dim=1), [z])
    check_op(lambda t: t.norm(p, dim=0), [z], noncontiguous=True)


def test_norm_misc():
    check_op(
        lambda t: ember.norm(t) if isinstance(t, ember.Tensor) else torch.norm(t),
        [rand(3, 4, seed=29)],
    )
    check_op(
        lambda t: t.norm(dtype=ember.float64 if isinstance(t, ember.Tensor) else torch.float64),
        [rand(3, 4, seed=30)],
    )
    check_op(lambda t: t.norm(), [np.array(-2.0, np.float32)])
    check_op(lambda t: t.norm(3), [np.zeros((0, 2), np.float32)])
    assert ember.ones(2, 3, dtype=ember.float16).norm().dtype is ember.float16
    with pytest.raises(RuntimeError, match="norm: Expected a floating point"):
        ember.ones(3, dtype=ember.int64).norm()
    with pytest.raises(RuntimeError, match="norm: cannot compute the inf norm on an empty"):
        ember.zeros(0, 3).norm(math.inf)
    with pytest.raises(RuntimeError, match="at most 2 dims"):
        ember.ones(2, 2, 2).norm("fro", dim=(0, 1, 2))


# --------------------------------------------------------------- all / any / count_nonzero
@pytest.mark.parametrize("op", ["all", "any"])
@pytest.mark.parametrize("kw", [{}, {"dim": 0}, {"dim": -1, "keepdim": True}, {"dim": (0, 1)}])
@pytest.mark.parametrize("dtype", [np.bool_, np.float32, np.uint8, np.int64])
def test_all_any(op, kw, dtype):
    x = (rand(3, 4, 2, seed=31) > 0).astype(dtype)
    x[0] = 1
    out = check_op(lambda t: getattr(t, op)(**kw), [x], grad=False)
    assert out[0].dtype is (ember.uint8 if dtype is np.uint8 else ember.bool)


def test_all_any_empty_and_0d():
    for op in ("all", "any"):
        check_op(lambda t, op=op: getattr(t, op)(), [np.zeros((0, 3), np.float32)], grad=False)
        check_op(lambda t, op=op: getattr(t, op)(1), [np.zeros((0, 3), np.bool_)], grad=False)
        check_op(lambda t, op=op: getattr(t, op)(0), [np.array(0.0, np.float32)], grad=False)


@pytest.mark.parametrize("kw", [{}, {"dim": 0}, {"dim": -1}, {"dim": (0, 2)}])
def test_count_nonzero(kw):
    x = np.round(rand(3, 4, 2, seed=32))
    out = check_op(lambda t: t.count_nonzero(**kw), [x], grad=False)
    assert out[0].dtype is ember.int64
    check_op(
        lambda t: (
            ember.count_nonzero(t, **kw)
            if isinstance(t, ember.Tensor)
            else torch.count_nonzero(t, **kw)
        ),
        [x],
        grad=False,
    )
    check_op(lambda t: t.count_nonzero(), [np.zeros((0, 2), np.float32)], grad=False)


# ------------------------------------------------------------------- dtypes: half, float32
DTYPE_OPS = [
    lambda x: x.sum(1),
    lambda x: x.mean(),
    lambda x: x.var(1),
    lambda x: x.std(),
    lambda x: x.max(1).values,
    lambda x: x.amin(0),
    lambda x: x.prod(1),
    lambda x: x.logsumexp(1),
    lambda x: x.cumsum(0),
    lambda x: x.cumprod(1),
    lambda x: x.norm(dim=1),
    lambda x: x.norm(3),
    lambda x: x.norm(math.inf, 0),
]


@pytest.mark.parametrize("fn", DTYPE_OPS)
def test_float16_matches_torch(fn):
    check_op(fn, [rand(4, 5, seed=41, dtype=np.float16, low=0.5, high=1.5)], atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("fn", DTYPE_OPS)
def test_float32_stays_float32_through_double_backward(fn):
    x = ember.tensor(rand(4, 5, seed=42), requires_grad=True)
    out = fn(x)
    (g,) = ember.autograd.grad((out * out).sum(), x, create_graph=True)
    (h,) = ember.autograd.grad(g.sum(), x)
    assert out.dtype is g.dtype is h.dtype is ember.float32


# --------------------------------------------------------------------------- gradcheck
GRADCHECK = [
    lambda x: x.sum((0, 2)),
    lambda x: x.mean(1, keepdim=True),
    lambda x: x.var(1),
    lambda x: x.var((0, 2), correction=0),
    lambda x: x.std(-1, keepdim=True),
    lambda x: ember.var_mean(x, 1)[0] * ember.var_mean(x, 1)[1],
    lambda x: x.max(),
    lambda x: x.max(1).values,
    lambda x: x.min(-1, keepdim=True)[0],
    lambda x: x.amax((0, 2)),
    lambda x: x.amin(1),
    lambda x: x.prod(1),
    lambda x: x.prod(),
    lambda x: x.logsumexp((0, 1)),
    lambda x: x.cumsum(1),
    lambda x: x.cumprod(-1),
    lambda x: x.norm(),
    lambda x: x.norm(1, dim=1),
    lambda x: x.norm(3, dim=(0, 2)),
    lambda x: x.norm(0.5, dim=-1),
    lambda x: x.norm(math.inf, dim=1),
]


@pytest.mark.parametrize("fn", GRADCHECK)
def test_gradcheck(fn):
    gradcheck_op(fn, [rand(2, 3, 4, seed=33)])


def test_gradcheck_prod_and_cumprod_with_zeros():
    x = rand(3, 4, seed=34)
    x[0, 1] = 0
    x[2, [0, 3]] = 0
    for fn in (
        lambda t: t.prod(1),
        lambda t: t.prod(),
        lambda t: t.cumprod(1),
        lambda t: t.prod(0),
    ):
        gradcheck_op(fn, [x])


# ------------------------------------------------------------- double backward (HVP vs torch)
def _hvp(lib, fn, x, w, v):
    t = lib.tensor(x.astype(np.float64), requires_grad=True)
    y = (fn(t) * lib.tensor(w.astype(np.float64))).sum()
    (g,) = lib.autograd.grad(y, t, create_graph=True)
    (h,) = lib.autograd.grad((g * lib.tensor(v.astype(np.float64))).sum(), t)
    return np.asarray(g.detach().numpy()), np.asarray(h.detach().numpy())


def _zeros_input(shape, seed):
    x = rand(*shape, seed=seed)
    x[0, 1] = 0
    x[1, [0, 2]] = 0
    return x


HVP = {
    "sum": lambda t: t.sum(1) ** 2,
    "mean": lambda t: t.mean((0, 2), keepdim=True) ** 3,
    "var": lambda t: t.var(1),
    "var_all": lambda t: t.var() * t.sum(),
    "std": lambda t: t.std(-1, correction=0),
    "logsumexp": lambda t: t.logsumexp(1),
    "logsumexp_tuple": lambda t: t.logsumexp((0, 2), keepdim=True),
    "prod": lambda t: t.prod(1),
    "prod_all": lambda t: t.prod(),
    "max": lambda t: t.max(1).values ** 2,
    "max_all": lambda t: t.max() * t.sum(),
    "amax": lambda t: t.amax((0, 1)) ** 2,
    "norm2": lambda t: t.norm(dim=1),
    "norm3": lambda t: t.norm(3),
    "cumsum": lambda t: t.cumsum(1) ** 2,
    "cumprod": lambda t: t.cumprod(-1),
}


@pytest.mark.parametrize("name", sorted(HVP))
def test_hessian_vector_product_matches_torch(name):
    x = rand(3, 4, 2, seed=35)
    rng = np.random.default_rng(36)
    shape = tuple(torch.as_tensor(HVP[name](torch.tensor(x))).shape)
    w, v = rng.standard_normal(shape), rng.standard_normal(x.shape)
    eg, eh = _hvp(ember, HVP[name], x, w, v)
    tg, th = _hvp(torch, HVP[name], x, w, v)
    np.testing.assert_allclose(eg, tg, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(eh, th, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name", ["prod", "prod_all", "cumprod"])
def test_hessian_vector_product_with_zeros(name):
    fn = {
        "prod": lambda t: t.prod(1),
        "prod_all": lambda t: t.prod(),
        "cumprod": lambda t: t.cumprod(1),
    }[name]
    x = _zeros_input((3, 4), 37)
    rng = np.random.default_rng(38)
    shape = tuple(fn(torch.tensor(x)).shape)
    w, v = rng.standard_normal(shape), rng.standard_normal(x.shape)
    eg, eh = _hvp(ember, fn, x, w, v)
    tg, th = _hvp(torch, fn, x, w, v)
    np.testing.assert_allclose(eg, tg, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(eh, th, rtol=1e-7, atol=1e-9)


# ------------------------------------------------------------------------- dim errors
DIM_ERRORS = {
    "sum": lambda x: x.sum(3),
    "mean": lambda x: x.mean((0, -4)),
    "var": lambda x: x.var(3),
    "std": lambda x: x.std(-4),
    "var_mean": lambda x: ember.var_mean(x, 5),
    "max": lambda x: x.max(3),
    "min": lambda x: x.min(-4),
    "argmax": lambda x: x.argmax(3),
    "argmin": lambda x: x.argmin(3),
    "amax": lambda x: x.amax((0, 3)),
    "amin": lambda x: x.amin(-4),
    "aminmax": lambda x: ember.aminmax(x, dim=3),
    "prod": lambda x: x.prod(3),
    "logsumexp": lambda x: x.logsumexp(3),
    "cumsum": lambda x: x.cumsum(3),
    "cumprod": lambda x: x.cumprod(-4),
    "norm": lambda x: x.norm(dim=3),
    "all": lambda x: x.all(3),
    "any": lambda x: x.any(-4),
    "count_nonzero": lambda x: x.count_nonzero(3),
}


@pytest.mark.parametrize("op", sorted(DIM_ERRORS))
def test_out_of_range_dim_names_op_dim_and_ndim(op):
    x = ember.ones(2, 3, 4)
    with pytest.raises(IndexError) as info:
        DIM_ERRORS[op](x)
    msg = str(info.value)
    assert msg.startswith(f"{op}:"), msg
    assert "range of [-3, 2]" in msg and "ndim 3" in msg
    assert "got 3" in msg or "got -4" in msg or "got 5" in msg


def test_0d_dim_errors():
    with pytest.raises(IndexError, match=r"max: .*\[-1, 0\].*got 1"):
        ember.tensor(1.0).max(1)
    with pytest.raises(IndexError, match=r"sum: .*got -2.*ndim 0"):
        ember.tensor(1.0).sum(-2)


def test_duplicate_dims_rejected():
    with pytest.raises(RuntimeError, match="var: dim .* multiple times"):
        ember.ones(2, 3).var((1, -1))


def test_methods_and_functions_exist():
    x = ember.ones(2, 3)
    for name in (
        "var",
        "std",
        "max",
        "min",
        "argmax",
        "argmin",
        "amax",
        "amin",
        "aminmax",
        "prod",
        "logsumexp",
        "cumsum",
        "cumprod",
        "norm",
        "all",
        "any",
        "count_nonzero",
    ):
        assert callable(getattr(x, name)) and callable(getattr(ember, name)), name
    assert callable(ember.var_mean) and callable(ember.std_mean)
