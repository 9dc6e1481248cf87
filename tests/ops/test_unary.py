"""Unary math and activations vs PyTorch: forward, every gradient, gradcheck in float64, double
backward, dtypes (integer promotion, float16/bfloat16), in-place variants and erf's accuracy."""

import math

import ml_dtypes
import numpy as np
import pytest

import ember
from tests.oracle import check_op, gradcheck_op, rand, torch

F = torch.nn.functional

# name -> (low, high) of the random inputs (inside the op's domain, away from kinks)
FLOAT_OPS = {
    "exp": (-3, 3),
    "exp2": (-3, 3),
    "expm1": (-3, 3),
    "log": (0.1, 4),
    "log1p": (-0.9, 4),
    "log2": (0.1, 4),
    "log10": (0.1, 4),
    "sqrt": (0.1, 4),
    "rsqrt": (0.1, 4),
    "reciprocal": (0.2, 3),
    "sin": (-4, 4),
    "cos": (-4, 4),
    "tan": (-1.2, 1.2),
    "sinh": (-2, 2),
    "cosh": (-2, 2),
    "asin": (-0.9, 0.9),
    "acos": (-0.9, 0.9),
    "atan": (-3, 3),
    "erf": (-3, 3),
    "square": (-3, 3),
    "abs": (-3, 3),
    "sigmoid": (-6, 6),
    "tanh": (-3, 3),
    "relu": (-3, 3),
}
PIECEWISE = ("sign", "floor", "ceil", "trunc", "round", "frac")
SHAPES = [(3, 4), (), (0, 3), (2, 3, 4)]


def _torch_fn(name):
    return getattr(torch, name)


@pytest.mark.parametrize("name", sorted(FLOAT_OPS))
@pytest.mark.parametrize("shape", SHAPES)
def test_float_ops_match_torch(name, shape):
    lo, hi = FLOAT_OPS[name]
    x = rand(*shape, low=lo, high=hi, seed=1)
    check_op(lambda t: getattr(ember, name)(t), [x], torch_fn=_torch_fn(name))
    check_op(lambda t: getattr(t, name)(), [x])  # the Tensor method, same code in both


@pytest.mark.parametrize("name", sorted(FLOAT_OPS) + list(PIECEWISE))
def test_noncontiguous_input(name):
    lo, hi = FLOAT_OPS.get(name, (-3, 3))
    check_op(
        lambda t: getattr(t, name)(), [rand(4, 5, low=lo, high=hi, seed=2)], noncontiguous=True
    )


@pytest.mark.parametrize("name", PIECEWISE)
@pytest.mark.parametrize("shape", SHAPES)
def test_piecewise_ops_match_torch(name, shape):
    """sign/floor/ceil/trunc/round have a zero gradient, frac passes it through (as torch)."""
    x = rand(*shape, low=-4, high=4, seed=3)
    out = check_op(lambda t: getattr(ember, name)(t), [x], torch_fn=_torch_fn(name))
    if x.size:
        assert out[0].grad_fn is not None


def test_special_values_match_torch():
    vals = np.array(
        [0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan, 2.5, -2.5, 0.5, 1e-30, -1e30, 88.0, -100.0],
        dtype=np.float32,
    )
    for name in sorted(FLOAT_OPS) + list(PIECEWISE) + ["gelu", "silu", "softplus"]:
        fn = getattr(F, name) if name in ("gelu", "silu", "softplus") else _torch_fn(name)
        e = getattr(ember, name)(ember.tensor(vals)).numpy()
        t = fn(torch.from_numpy(vals.copy())).numpy()
        if name == "gelu":  # torch's vectorised CPU gelu gives nan at +inf; inf is right
            assert e[4] == np.inf and np.isnan(t[4])
            e, t = np.delete(e, 4), np.delete(t, 4)
        np.testing.assert_allclose(e, t, rtol=2e-6, atol=1e-30, err_msg=name)


def test_round_decimals():
    x = rand(3, 4, low=-10, high=10, seed=4)
    check_op(
        lambda t: ember.round(t, decimals=2), [x], torch_fn=lambda t: torch.round(t, decimals=2)
    )
    check_op(lambda t: t.round(decimals=1), [x])
    assert ember.round(ember.tensor([0.5, 1.5, 2.5, -0.5])).tolist() == [0.0, 2.0, 2.0, -0.0]


@pytest.mark.parametrize("name", sorted(set(FLOAT_OPS) - {"relu", "abs", "square"}))
def test_integer_inputs_promote_to_default_float(name):
    lo, hi = FLOAT_OPS[name]
    vals = np.arange(int(math.ceil(lo)), int(math.floor(hi)) + 1, dtype=np.int64)
    if name in ("acos", "asin"):
        vals = np.array([0], dtype=np.int64)
    for ints in (vals, vals.astype(np.int32), vals > 0):
        e = getattr(ember, name)(ember.tensor(ints))
        t = getattr(torch, name)(torch.from_numpy(ints))
        assert e.dtype.name == str(t.dtype).removeprefix("torch."), name
        np.testing.assert_allclose(e.numpy(), t.numpy(), rtol=1e-6, err_msg=name)
    ember.set_default_dtype(ember.float64)
    assert getattr(ember, name)(ember.tensor(vals)).dtype is ember.float64


@pytest.mark.parametrize(
    "name", ["abs", "square", "relu", "sign", "floor", "ceil", "round", "trunc"]
)
def test_integer_inputs_keep_their_dtype(name):
    ints = np.array([-3, 0, 2, 7], dtype=np.int64)
    e = getattr(ember, name)(ember.tensor(ints))
    t = getattr(torch, name)(torch.from_numpy(ints))
    assert e.dtype is ember.int64
    np.testing.assert_array_equal(e.numpy(), t.numpy())


def test_bool_inputs_follow_torch():
    b = ember.tensor([True, False])
    assert ember.square(b).dtype is ember.int64
    assert ember.sign(b).dtype is ember.bool
    assert ember.sigmoid(b).dtype is ember.float32
    with pytest.raises(RuntimeError, match="relu: Boolean inputs not supported"):
        ember.relu(b)
    with pytest.raises(RuntimeError, match="abs: not implemented for 'bool'"):
        ember.abs(b)


# ------------------------------------------------------------------------ activations
ACTIVATIONS = {
    "relu": (lambda t: ember.relu(t), torch.relu),
    "sigmoid": (lambda t: ember.sigmoid(t), torch.sigmoid),
    "tanh": (lambda t: ember.tanh(t), torch.tanh),
    "gelu": (lambda t: ember.gelu(t), F.gelu),
    "gelu_tanh": (
        lambda t: ember.gelu(t, approximate="tanh"),
        lambda t: F.gelu(t, approximate="tanh"),
    ),
    "silu": (lambda t: ember.silu(t), F.silu),
    "softplus": (lambda t: ember.softplus(t), F.softplus),
    "softplus_beta": (
        lambda t: ember.softplus(t, beta=2.0, threshold=3.0),
        lambda t: F.softplus(t, beta=2.0, threshold=3.0),
    ),
    "softplus_small_beta": (
        lambda t: ember.softplus(t, beta=0.5, threshold=1.0),
        lambda t: F.softplus(t, beta=0.5, threshold=1.0),
    ),
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@pytest.mark.parametrize("shape", SHAPES + [(64, 33)])
def test_activations_match_torch(name, shape):
    fn, tfn = ACTIVATIONS[name]
    check_op(fn, [rand(*shape, low=-5, high=5, seed=5)], torch_fn=tfn)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activations_noncontiguous_and_methods(name):
    fn, tfn = ACTIVATIONS[name]
    check_op(fn, [rand(6, 7, low=-5, high=5, seed=6)], torch_fn=tfn, noncontiguous=True)
    x = rand(2, 3, seed=7)
    base = name.split("_")[0]
    check_op(lambda t: getattr(t, base)(), [x], torch_fn=lambda t: getattr(F, base)(t))


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activations_float16(name):
    fn, tfn = ACTIVATIONS[name]
    check_op(
        fn,
        [rand(4, 5, low=-4, high=4, seed=8, dtype=np.float16)],
        torch_fn=tfn,
        atol=2e-3,
        rtol=2e-3,
    )


@pytest.mark.parametrize("name", sorted(ACTIVATIONS) + ["erf", "exp", "log1p"])
def test_bfloat16_matches_torch(name):
    """torch.from_numpy has no bfloat16: compare against torch on the same values."""
    if name in ACTIVATIONS:
        fn, tfn = ACTIVATIONS[name]
    else:
        fn, tfn = (lambda t: getattr(ember, name)(t)), _torch_fn(name)
    x = rand(4, 5, low=-0.9, high=3, seed=9).astype(ml_dtypes.bfloat16)
    ex = ember.tensor(x, requires_grad=True)
    out = fn(ex)
    assert out.dtype is ember.bfloat16
    g = rand(4, 5, seed=10).astype(ml_dtypes.bfloat16)
    out.backward(ember.tensor(g))
    tx = torch.tensor(x.astype(np.float32)).to(torch.bfloat16).requires_grad_(True)
    tout = tfn(tx)
    tout.backward(torch.tensor(g.astype(np.float32)).to(torch.bfloat16))
    np.testing.assert_allclose(
        out.detach().numpy().astype(np.float32), tout.detach().float().numpy(), rtol=2e-2, atol=1e-2
    )
    np.testing.assert_allclose(
        ex.grad.numpy().astype(np.float32), tx.grad.float().numpy(), rtol=3e-2, atol=2e-2
    )
    assert ex.grad.dtype is ember.bfloat16


def test_float_only_activations_reject_integers():
    i = ember.tensor([1, 2])
    for fn in (ember.gelu, ember.silu, ember.softplus, ember.frac):
        with pytest.raises(RuntimeError, match="not implemented for 'int64'"):
            fn(i)
    with pytest.raises(RuntimeError, match="approximate argument must be either none or tanh"):
        ember.gelu(ember.ones(2), approximate="fast")
    with pytest.raises(TypeError, match="exp\\(\\): argument 'input' must be Tensor"):
        ember.exp(1.0)


def test_sigmoid_tails_keep_relative_precision():
    x = np.array([-100.0, -30.0, -20.0, 20.0, 100.0], dtype=np.float32)
    e = ember.sigmoid(ember.tensor(x)).numpy()
    t = torch.sigmoid(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(e, t, rtol=1e-6, atol=0)
    assert e[1] > 0  # 9.4e-14, not flushed to zero


def test_relu_gradient_at_zero_and_nan():
    check_op(
        lambda t: ember.relu(t), [np.array([-1.0, 0.0, 1.0, 2.0], np.float32)], torch_fn=torch.relu
    )
    out = ember.relu(ember.tensor([np.nan, -1.0]))
    assert np.isnan(out.numpy()[0])


# -------------------------------------------------------------------------- gradcheck
GRADCHECK_OPS = sorted(set(FLOAT_OPS) | set(PIECEWISE) | {"gelu", "silu", "softplus"})


@pytest.mark.parametrize("name", GRADCHECK_OPS)
def test_gradcheck(name):
    lo, hi = FLOAT_OPS.get(name, (-3, 3))
    gradcheck_op(lambda t: getattr(ember, name)(t), [rand(2, 3, low=lo, high=hi, seed=11)])


@pytest.mark.parametrize(
    "fn",
    [
        lambda t: ember.gelu(t, approximate="tanh"),
        lambda t: ember.softplus(t, beta=2.0, threshold=1.5),
        lambda t: ember.softplus(t, beta=0.5),
        lambda t: ember.round(t, decimals=1),
    ],
)
def test_gradcheck_with_arguments(fn):
    gradcheck_op(fn, [rand(3, 4, low=-3, high=3, seed=12)])


DOUBLE = sorted(set(FLOAT_OPS) - {"relu", "abs"}) + ["gelu", "silu", "softplus"]


@pytest.mark.parametrize("name", DOUBLE)
def test_gradgradcheck(name):
    lo, hi = FLOAT_OPS.get(name, (-3, 3))
    x = ember.tensor(rand(2, 3, low=lo, high=hi, seed=13).astype(np.float64), requires_grad=True)
    assert ember.autograd.gradgradcheck(lambda t: getattr(ember, name)(t), [x])


@pytest.mark.parametrize(
    "fn",
    [
        lambda t: ember.gelu(t, approximate="tanh"),
        lambda t: ember.relu(t) * t,
        lambda t: ember.abs(t) * t,
        lambda t: ember.softplus(t, beta=2.0, threshold=1.0),
    ],
)
def test_gradgradcheck_piecewise_and_arguments(fn):
    x = ember.tensor(rand(3, 3, low=-3, high=3, seed=14).astype(np.float64), requires_grad=True)
    assert ember.autograd.gradgradcheck(fn, [x])


HVP = {
    "tanh": (lambda m, t: m.tanh(t)),
    "sigmoid": (lambda m, t: m.sigmoid(t)),
    "gelu": (lambda m, t: (m.nn.functional.gelu if m is torch else m.gelu)(t)),
    "gelu_tanh": (
        lambda m, t: (m.nn.functional.gelu if m is torch else m.gelu)(t, approximate="tanh")
    ),
    "silu": (lambda m, t: (m.nn.functional.silu if m is torch else m.silu)(t)),
    "erf_exp_log": (lambda m, t: m.erf(t) * m.exp(t) + m.log(t * t + 1)),
    "rsqrt_sqrt": (lambda m, t: m.rsqrt(t * t + 1) * m.sqrt(t * t + 2)),
}


@pytest.mark.parametrize("name", sorted(HVP))
def test_hessian_vector_product_matches_torch(name):
    f = HVP[name]
    x = rand(4, 5, low=-3, high=3, seed=15)
    v = rand(4, 5, seed=16)
    ex = ember.tensor(x, requires_grad=True)
    (eg,) = ember.autograd.grad(f(ember, ex).sum(), [ex], create_graph=True)
    (ehv,) = ember.autograd.grad((eg * ember.tensor(v)).sum(), [ex])
    tx = torch.tensor(x, requires_grad=True)
    (tg,) = torch.autograd.grad(f(torch, tx).sum(), [tx], create_graph=True)
    (thv,) = torch.autograd.grad((tg * torch.tensor(v)).sum(), [tx])
    np.testing.assert_allclose(eg.detach().numpy(), tg.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ehv.numpy(), thv.numpy(), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------ in place
INPLACE_OPS = [
    "exp",
    "log",
    "sqrt",
    "sigmoid",
    "tanh",
    "relu",
    "abs",
    "sin",
    "erf",
    "square",
    "reciprocal",
    "rsqrt",
    "floor",
    "frac",
    "expm1",
    "log1p",
]


@pytest.mark.parametrize("name", INPLACE_OPS)
def test_inplace_variants(name):
    lo, hi = FLOAT_OPS.get(name, (0.2, 3))
    lo = max(lo, 0.2) if name in ("log", "sqrt", "rsqrt", "reciprocal") else lo
    x = rand(3, 4, low=lo, high=hi, seed=17)
    check_op(lambda t: getattr(t * 1, name + "_")() * 2, [x])
    e = ember.tensor(x)
    same = getattr(e, name + "_")()
    assert same is e and e._version == 1
    np.testing.assert_allclose(
        e.numpy(), getattr(torch, name)(torch.from_numpy(x)).numpy(), rtol=1e-6
    )
    assert getattr(ember, name + "_")(ember.tensor(x)).shape == x.shape


def test_inplace_on_leaf_requiring_grad_raises():
    x = ember.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        x.relu_()


def test_inplace_on_an_integer_tensor_cannot_hold_float():
    with pytest.raises(RuntimeError, match="can't be cast"):
        ember.tensor([1, 2]).exp_()


def test_modifying_a_saved_output_raises():
    x = ember.tensor(rand(3, seed=18), requires_grad=True)
    y = (x * 1).sigmoid()
    y.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


# ---------------------------------------------------------------------------------- erf
def _ulp_error(y, ref, dtype):
    ulp = np.spacing(np.abs(ref).astype(dtype)).astype(np.float64)
    return np.abs(y.astype(np.float64) - ref) / ulp


def _erf_grid(dtype):
    x = np.concatenate(
        [
            np.linspace(-7, 7, 700_001),
            10.0 ** np.linspace(-30, 1, 5001),
            -(10.0 ** np.linspace(-30, 1, 5001)),
            [0.84375, 1.25, 1 / 0.35, 6.0, 3.832506856900711],
        ]
    )
    x = x.astype(dtype)
    return x, np.array([math.erf(v) for v in x.astype(np.float64)])


def test_erf_float64_is_accurate_to_one_ulp():
    x, ref = _erf_grid(np.float64)
    y = ember.erf(ember.tensor(x)).numpy()
    assert y.dtype == np.float64
    assert _ulp_error(y, ref, np.float64).max() <= 1.0
    assert np.abs(y - ref).max() <= 2.3e-16


def test_erf_float32_error_bound():
    """The rational itself is < 1 ulp; float32 Horner steps without FMA add a few."""
    x, ref = _erf_grid(np.float32)
    y = ember.erf(ember.tensor(x)).numpy()
    assert y.dtype == np.float32
    err = _ulp_error(y, ref, np.float32)
    assert err.max() <= 6.0, err.max()
    assert err.mean() <= 1.0, err.mean()
    assert np.abs(y.astype(np.float64) - ref).max() <= 3.6e-7
    assert np.abs(y).max() <= 1.0  # never above 1, even where rounding pushes it


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16, ml_dtypes.bfloat16])
def test_erf_special_values(dtype):
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 10.0, -10.0], dtype=dtype)
    y = ember.erf(ember.tensor(x)).numpy().astype(np.float64)
    assert y[0] == 0 and np.signbit(y[1]) and not np.signbit(y[0])
    assert y[2] == 1 and y[3] == -1 and np.isnan(y[4]) and y[5] == 1 and y[6] == -1
    assert ember.erf(ember.tensor(x)).dtype.np == np.dtype(dtype)


def test_gelu_exact_float32_on_a_large_input():
    """The GPT hot path: 1M elements, float32 all the way, forward and backward vs torch."""
    x = np.random.default_rng(19).standard_normal(1 << 20).astype(np.float32) * 3
    check_op(lambda t: ember.gelu(t), [x], torch_fn=F.gelu, atol=2e-6, rtol=2e-6)
