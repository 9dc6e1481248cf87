"""clamp/clip, minimum/maximum, fmin/fmax, where, lerp, logaddexp, nan_to_num vs PyTorch,
including torch's gradient rules at the boundaries and on ties."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import ember
from tests.oracle import check_op, gradcheck_op, rand, torch


# ----------------------------------------------------------------------------- clamp
@pytest.mark.parametrize(
    "kw",
    [
        dict(min=-0.5),
        dict(max=0.7),
        dict(min=-0.5, max=0.7),
        dict(min=1.0, max=-1.0),
        dict(min=0, max=1),
    ],
)
@pytest.mark.parametrize("shape", [(3, 4), (), (0, 2), (2, 3, 4)])
def test_clamp_scalar_bounds(kw, shape):
    x = rand(*shape, seed=1)
    check_op(lambda t: ember.clamp(t, **kw), [x], torch_fn=lambda t: torch.clamp(t, **kw))
    check_op(lambda t: t.clamp(**kw), [x])
    check_op(lambda t: t.clip(**kw), [x])


def test_clamp_gradient_passes_at_the_boundaries():
    """torch: x gets the gradient where min <= x <= max, both ends included."""
    x = np.array([-1.0, -0.5, 0.0, 0.5, 1.0, 2.0], dtype=np.float32)
    for kw in (dict(min=-0.5, max=0.5), dict(min=-0.5), dict(max=0.5)):
        check_op(
            lambda t, kw=kw: ember.clamp(t, **kw),
            [x],
            torch_fn=lambda t, kw=kw: torch.clamp(t, **kw),
        )
    lo = np.array([-0.5] * 6, dtype=np.float32)
    hi = np.array([0.5, 0.5, 0.0, 0.5, 1.0, 1.0], dtype=np.float32)
    check_op(
        lambda t, a, b: ember.clamp(t, a, b),
        [x, lo, hi],
        torch_fn=lambda t, a, b: torch.clamp(t, a, b),
    )


@pytest.mark.parametrize(
    "shapes",
    [
        ((3, 4), (4,), (3, 1)),
        ((3, 4), (), (3, 4)),
        ((2, 4), (4,), (2, 1)),
        ((4, 2, 3), (2, 1), (3,)),
    ],
)
def test_clamp_tensor_bounds_broadcast(shapes):
    sx, sl, sh = shapes
    x, lo, hi = rand(*sx, seed=2), rand(*sl, seed=3, high=0.0), rand(*sh, seed=4, low=0.0)
    check_op(
        lambda t, a, b: ember.clamp(t, a, b),
        [x, lo, hi],
        torch_fn=lambda t, a, b: torch.clamp(t, a, b),
    )
    check_op(
        lambda t, a: ember.clamp(t, min=a), [x, lo], torch_fn=lambda t, a: torch.clamp(t, min=a)
    )
    check_op(
        lambda t, b: ember.clamp(t, max=b), [x, hi], torch_fn=lambda t, b: torch.clamp(t, max=b)
    )
    check_op(
        lambda t, a: ember.clamp_min(t, a), [x, lo], torch_fn=lambda t, a: torch.clamp_min(t, a)
    )
    check_op(lambda t, b: t.clamp_max(b), [x, hi])


@pytest.mark.parametrize("shapes", [((4,), (2, 4), (4,)), ((2, 1, 3), (4, 1), (3,))])
def test_clamp_bounds_wider_than_input(shapes):
    """The output takes the broadcast shape; torch's own backward fails on this case
    (it cannot put the gradient back into x's shape), so the gradient is gradchecked."""
    x, lo, hi = (rand(*s, seed=60 + i) for i, s in enumerate(shapes))
    check_op(
        lambda t, a, b: ember.clamp(t, a, b),
        [x, lo, hi],
        grad=False,
        torch_fn=lambda t, a, b: torch.clamp(t, a, b),
    )
    gradcheck_op(lambda t, a, b: ember.clamp(t, a, b), [x, lo, hi])


def test_clamp_min_greater_than_max_gradients():
    x, lo, hi = rand(3, 4, seed=5), rand(3, 4, seed=6), rand(3, 4, seed=7)
    check_op(
        lambda t, a, b: ember.clamp(t, a, b),
        [x, lo, hi],
        torch_fn=lambda t, a, b: torch.clamp(t, a, b),
    )


def test_clamp_noncontiguous_and_gradcheck():
    check_op(lambda t: t.clamp(-0.5, 0.5), [rand(4, 5, seed=8)], noncontiguous=True)
    gradcheck_op(lambda t: ember.clamp(t, -0.5, 0.5), [rand(3, 4, seed=9)])
    gradcheck_op(
        lambda t, a, b: ember.clamp(t, a, b),
        [rand(3, 4, seed=10), rand(4, seed=11, high=0), rand(3, 1, seed=12, low=0)],
    )


def test_clamp_dtypes_follow_torch():
    i = np.array([-2, 0, 3], dtype=np.int64)
    for kw in (dict(min=0), dict(min=0.5), dict(max=1.5, min=-1)):
        e = ember.clamp(ember.tensor(i), **kw)
        t = torch.clamp(torch.from_numpy(i), **kw)
        assert e.dtype.name == str(t.dtype).removeprefix("torch.")
        np.testing.assert_allclose(e.numpy(), t.numpy())
    e = ember.clamp(ember.tensor(i), min=ember.tensor(0.5))
    assert e.dtype is ember.float32
    h = ember.ones(3, dtype=ember.bfloat16).clamp(0, 0.5)
    assert h.dtype is ember.bfloat16 and h.tolist() == [0.5, 0.5, 0.5]
    assert np.isnan(ember.clamp(ember.tensor([np.nan]), 0, 1).item())


def test_clamp_errors():
    with pytest.raises(RuntimeError, match="clamp: At least one of 'min' or 'max'"):
        ember.clamp(ember.ones(2))
    with pytest.raises(
        RuntimeError,
        match=r"clamp: shapes \(2,\) and \(3,\) cannot be "
        r"broadcast.*tensor a \(2\).*tensor b \(3\)",
    ):
        ember.clamp(ember.ones(2), ember.zeros(3))


def test_clamp_inplace():
    x = rand(3, 4, seed=13)
    check_op(lambda t: (t * 1).clamp_(-0.5, 0.5) * 2, [x])
    check_op(lambda t, a: (t * 1).clamp_(min=a), [x, rand(4, seed=14)])
    e = ember.tensor(x)
    assert ember.clamp_(e, max=0.0) is e and e.numpy().max() <= 0
    e.clip_(-0.1, 0.0)
    assert e.numpy().min() >= -0.1


def test_clamp_double_backward():
    x = ember.tensor(rand(3, 4, seed=15).astype(np.float64), requires_grad=True)
    assert ember.autograd.gradgradcheck(lambda t: ember.clamp(t, -0.5, 0.5) * t, [x])


# ------------------------------------------------------------------ maximum / minimum
@pytest.mark.parametrize("op", ["maximum", "minimum", "fmax", "fmin"])
@pytest.mark.parametrize(
    "shapes", [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 3), (4, 1)), ((), (3,)), ((0, 3), (3,))]
)
def test_minmax_match_torch(op, shapes):
    a, b = rand(*shapes[0], seed=16), rand(*shapes[1], seed=17)
    check_op(
        lambda x, y: getattr(ember, op)(x, y),
        [a, b],
        torch_fn=lambda x, y: getattr(torch, op)(x, y),
    )
    check_op(lambda x, y: getattr(x, op)(y), [a, b])


@pytest.mark.parametrize("op", ["maximum", "minimum", "fmax", "fmin"])
def test_minmax_ties_and_nan_follow_torch(op):
    """maximum/minimum split a tie half and half; fmax/fmin give it to the first operand;
    NaN propagates (maximum) or is ignored (fmax), with torch's gradients."""
    a = np.array([1.0, 2.0, 3.0, np.nan, 5.0, np.nan, 0.0], dtype=np.float32)
    b = np.array([1.0, 1.0, 4.0, 1.0, np.nan, np.nan, -0.0], dtype=np.float32)
    check_op(
        lambda x, y: getattr(ember, op)(x, y),
        [a, b],
        torch_fn=lambda x, y: getattr(torch, op)(x, y),
    )
    check_op(
        lambda x, y: getattr(ember, op)(x, y),
        [a[:3], a[:3].copy()],
        torch_fn=lambda x, y: getattr(torch, op)(x, y),
    )


def test_minmax_noncontiguous_gradcheck_and_dtypes():
    check_op(
        lambda x, y: ember.maximum(x, y),
        [rand(4, 5, seed=18), rand(4, 5, seed=19)],
        torch_fn=torch.maximum,
        noncontiguous=True,
    )
    for op in ("maximum", "minimum", "fmax", "fmin"):
        gradcheck_op(
            lambda x, y, op=op: getattr(ember, op)(x, y), [rand(3, 4, seed=20), rand(4, seed=21)]
        )
    i = ember.tensor([1, 5, 3])
    assert ember.maximum(i, ember.tensor([1.5, 1.0, 1.0])).dtype is ember.float32
    assert ember.maximum(i, i).dtype is ember.int64
    assert ember.maximum(ember.tensor([True]), ember.tensor([False])).dtype is ember.bool
    assert (
        ember.maximum(ember.ones(2, requires_grad=True), ember.zeros(2)).grad_fn.name()
        == "MaximumBackward"
    )
    with pytest.raises(RuntimeError, match=r"maximum: shapes \(2,\) and \(3,\)"):
        ember.maximum(ember.ones(2), ember.ones(3))


def test_minmax_double_backward():
    x = ember.tensor(rand(3, 4, seed=22).astype(np.float64), requires_grad=True)
    y = ember.tensor(rand(4, seed=23).astype(np.float64), requires_grad=True)
    assert ember.autograd.gradgradcheck(lambda a, b: ember.maximum(a, b) * a * b, [x, y])


# ----------------------------------------------------------------------------- where
@pytest.mark.parametrize(
    "shapes",
    [
        ((3, 4), (3, 4), (3, 4)),
        ((3, 4), (4,), (3, 1)),
        ((4,), (2, 4), ()),
        ((), (3,), (3,)),
        ((0, 2), (2,), (0, 2)),
    ],
)
def test_where_matches_torch(shapes):
    sc, sa, sb = shapes
    cond = np.asarray(rand(*sc, seed=24) > 0)
    a, b = rand(*sa, seed=25), rand(*sb, seed=26)
    check_op(
        lambda c, x, y: ember.where(c, x, y),
        [cond, a, b],
        torch_fn=lambda c, x, y: torch.where(c, x, y),
    )
    check_op(lambda c, x, y: x.where(c, y), [cond, a, b])


def test_where_scalars_and_promotion_follow_torch():
    cond = np.array([True, False, True])
    x = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    check_op(
        lambda c, t: ember.where(c, t, 0.0), [cond, x], torch_fn=lambda c, t: torch.where(c, t, 0.0)
    )
    check_op(
        lambda c, t: ember.where(c, -1, t), [cond, x], torch_fn=lambda c, t: torch.where(c, -1, t)
    )
    cases = [
        (np.array([1, 2, 3]), 2.5),
        (1, 0),
        (1.0, 0),
        (np.array([1, 2, 3]), np.float64(2.5)),
        (np.array([1, 2, 3], dtype=np.int32), np.array([1.0, 2.0, 3.0])),
    ]
    for a, b in cases:
        ea = ember.tensor(a) if isinstance(a, np.ndarray) else a
        ta = torch.from_numpy(a) if isinstance(a, np.ndarray) else a
        eb = ember.tensor(b) if isinstance(b, np.ndarray) else b
        tb = torch.from_numpy(b) if isinstance(b, np.ndarray) else b
        e = ember.where(ember.tensor(cond), ea, eb)
        t = torch.where(torch.from_numpy(cond), ta, tb)
        assert e.dtype.name == str(t.dtype).removeprefix("torch."), (a, b)
        np.testing.assert_allclose(e.numpy(), t.numpy())
    e = ember.where(
        ember.tensor(cond), ember.tensor(1.0, dtype=ember.float64), ember.tensor([1, 2, 3])
    )
    assert e.dtype is ember.float64


def test_where_noncontiguous_gradcheck_double_backward():
    cond = rand(4, 5, seed=27) > 0
    check_op(
        lambda c, x, y: ember.where(c, x, y),
        [cond, rand(4, 5, seed=28), rand(4, 5, seed=29)],
        noncontiguous=True,
        torch_fn=lambda c, x, y: torch.where(c, x, y),
    )
    gradcheck_op(
        lambda c, x, y: ember.where(c, x, y), [cond[:, :3], rand(4, 3, seed=30), rand(3, seed=31)]
    )
    x = ember.tensor(rand(3, 3, seed=32).astype(np.float64), requires_grad=True)
    assert ember.autograd.gradgradcheck(lambda t: ember.where(t > 0, t * t, t * 3), [x])


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int32, np.int64])
def test_large_where_blends_bits_exactly(dtype):
    """From _SELECT_MIN elements on, NumPy arrays select by blending bit patterns (no branch
    per element): the result must be np.where's bit for bit, NaN payloads and signed zeros
    included, with array, broadcast and scalar branches."""
    from ember.ops.pointwise import _SELECT_MIN, select

    rng = np.random.default_rng(0)
    shape = (4, _SELECT_MIN // 2)
    cond = rng.standard_normal(shape) > 0
    a = (rng.standard_normal(shape) * 100).astype(dtype)
    b = (rng.standard_normal(shape[1:]) * 100).astype(dtype)  # broadcast along rows
    if np.dtype(dtype).kind == "f":
        a[0, :3] = [np.nan, -0.0, np.inf]
        a[1, 0] = np.nan
        a.view(np.dtype(f"u{a.itemsize}"))[1, 0] |= 1  # a NaN with other payload bits
    for x, y in [(a, b), (a, dtype(3)), (-2, b), (a, a[::-1])]:
        want = np.where(cond, x, y)
        got = select(cond, x, y)
        assert got.dtype == want.dtype and got.shape == want.shape
        bits = np.dtype(f"u{want.itemsize}")
        np.testing.assert_array_equal(got.view(bits), want.view(bits))


def test_large_where_and_leaky_relu_match_torch():
    x = rand(64, 1024, seed=31)
    y = rand(64, 1024, seed=32)
    check_op(lambda t, u: ember.where(t > 0, t * 2, u), [x, y],
             torch_fn=lambda t, u: torch.where(t > 0, t * 2, u))  # fmt: skip
    import ember.nn.functional as F

    check_op(lambda t: F.leaky_relu(t, 0.2), [x],
             torch_fn=lambda t: torch.nn.functional.leaky_relu(t, 0.2))  # fmt: skip
    check_op(lambda t: F.elu(t), [x], torch_fn=lambda t: torch.nn.functional.elu(t))


def test_where_errors_and_single_argument():
    with pytest.raises(
        RuntimeError,
        match="where: expected condition to be a boolean tensor, but got a tensor with dtype int64",
    ):
        ember.where(ember.tensor([1, 0]), 1.0, 0.0)
    with pytest.raises(RuntimeError, match=r"where: shapes \(2,\), \(3,\)|where: shapes"):
        ember.where(ember.tensor([True, False]), ember.ones(3), 0.0)
    c = np.array([[True, False], [False, True]])
    got = ember.where(ember.tensor(c))
    want = torch.where(torch.from_numpy(c))
    assert len(got) == 2
    for g, w in zip(got, want):
        assert g.dtype is ember.int64
        np.testing.assert_array_equal(g.numpy(), w.numpy())


# ------------------------------------------------------------------------------ lerp
@pytest.mark.parametrize("weight", [0.3, 0.75, 0.0, 1.0, -0.5, 2])
def test_lerp_scalar_weight(weight):
    s, e = rand(3, 4, seed=33), rand(4, seed=34)
    check_op(
        lambda a, b: ember.lerp(a, b, weight),
        [s, e],
        torch_fn=lambda a, b: torch.lerp(a, b, weight),
    )
    check_op(lambda a, b: a.lerp(b, weight), [s, e])


@pytest.mark.parametrize(
    "shapes",
    [((3, 4), (3, 4), (3, 4)), ((3, 4), (4,), (3, 1)), ((), (2,), ()), ((0, 2), (2,), (2,))],
)
def test_lerp_tensor_weight(shapes):
    s, e, w = (rand(*sh, seed=35 + i) for i, sh in enumerate(shapes))
    check_op(
        lambda a, b, c: ember.lerp(a, b, c), [s, e, w], torch_fn=lambda a, b, c: torch.lerp(a, b, c)
    )


def test_lerp_gradcheck_double_backward_inplace_errors():
    gradcheck_op(
        lambda a, b, c: ember.lerp(a, b, c),
        [rand(3, 4, seed=40), rand(4, seed=41), rand(3, 1, seed=42)],
    )
    gradcheck_op(lambda a, b: ember.lerp(a, b, 0.7), [rand(3, 4, seed=43), rand(4, seed=44)])
    args = [
        ember.tensor(rand(2, 3, seed=45 + i).astype(np.float64), requires_grad=True)
        for i in range(3)
    ]
    assert ember.autograd.gradgradcheck(lambda a, b, c: ember.lerp(a, b, c) * a, args)
    check_op(lambda a, b: (a * 1).lerp_(b, 0.25), [rand(3, 4, seed=48), rand(3, 4, seed=49)])
    with pytest.raises(
        RuntimeError, match="lerp: expected dtype float32 for `end` but got dtype float64"
    ):
        ember.lerp(ember.ones(2), ember.ones(2, dtype=ember.float64), 0.5)
    with pytest.raises(RuntimeError, match="expected dtype float32 for `weight`"):
        ember.lerp(ember.ones(2), ember.ones(2), ember.ones(2, dtype=ember.float64))


def test_lerp_bfloat16_keeps_dtype():
    a = ember.zeros(3, dtype=ember.bfloat16)
    b = ember.ones(3, dtype=ember.bfloat16)
    out = ember.lerp(a, b, 0.25)
    assert out.dtype is ember.bfloat16 and out.tolist() == [0.25] * 3


# ------------------------------------------------------------------- logaddexp / nan_to_num
@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((3, 4), (4,)), ((), (2,))])
def test_logaddexp(shapes):
    a, b = rand(*shapes[0], seed=50, low=-5, high=5), rand(*shapes[1], seed=51)
    check_op(
        lambda x, y: ember.logaddexp(x, y), [a, b], torch_fn=lambda x, y: torch.logaddexp(x, y)
    )
    gradcheck_op(lambda x, y: ember.logaddexp(x, y), [a, b])
    big = np.array([1000.0, -1000.0, 0.0], dtype=np.float32)
    check_op(
        lambda x, y: ember.logaddexp(x, y),
        [big, big[::-1].copy()],
        torch_fn=lambda x, y: torch.logaddexp(x, y),
    )


def test_nan_to_num():
    x = np.array([1.0, np.nan, np.inf, -np.inf, -2.0], dtype=np.float32)
    check_op(lambda t: ember.nan_to_num(t), [x], torch_fn=torch.nan_to_num)
    kw = dict(nan=0.5, posinf=9.0, neginf=-9.0)
    check_op(lambda t: ember.nan_to_num(t, **kw), [x], torch_fn=lambda t: torch.nan_to_num(t, **kw))
    check_op(lambda t: t.nan_to_num(posinf=3.0), [x])
    h = ember.tensor([np.inf, np.nan], dtype=ember.bfloat16).nan_to_num()
    assert h.dtype is ember.bfloat16 and np.isfinite(h.numpy().astype(np.float32)).all()
    i = ember.tensor([1, 2])
    assert ember.nan_to_num(i).tolist() == [1, 2]
    e = ember.tensor(x)
    assert e.nan_to_num_() is e and np.isfinite(e.numpy()).all()
    gradcheck_op(lambda t: ember.nan_to_num(t), [rand(2, 3, seed=52)])


# ------------------------------------------------------------------ property: broadcasting
THREE_WAY = {
    "clamp": (lambda m, x, a, b: m.clamp(x, a, b)),
    "where": (lambda m, x, a, b: m.where(x > 0, a, b)),
    "lerp": (lambda m, x, a, b: m.lerp(x, a, b)),
    "maximum": (lambda m, x, a, b: m.maximum(m.minimum(x, a), b)),
    "fmax": (lambda m, x, a, b: m.fmax(m.fmin(x, a), b)),
}


@settings(max_examples=40, deadline=None)
@given(
    shapes=hnp.mutually_broadcastable_shapes(
        num_shapes=3, min_dims=0, max_dims=3, min_side=1, max_side=3
    ),
    op=st.sampled_from(sorted(THREE_WAY)),
    seed=st.integers(0, 2**16),
)
def test_broadcast_gradients_match_torch(shapes, op, seed):
    """Random broadcast-compatible shapes: forward and every gradient equal torch's (float64,
    so ties are rare; the first operand takes the output shape as torch's backward needs)."""
    out_shape = shapes.result_shape
    sx = out_shape if op == "clamp" else shapes.input_shapes[0]
    arrays = [
        np.asarray(np.random.default_rng(seed + i).uniform(-2, 2, size=s))
        for i, s in enumerate((sx,) + tuple(shapes.input_shapes[1:]))
    ]
    if op == "clamp":
        arrays[1] = np.asarray(arrays[1] - 1.0)  # mostly min < max, sometimes not
    fn = THREE_WAY[op]
    check_op(
        lambda x, a, b: fn(ember, x, a, b),
        arrays,
        torch_fn=lambda x, a, b: fn(torch, x, a, b),
        seed=seed,
    )
