"""ember.nn.init: gains and fans against torch.nn.init, and sample statistics against the
formulas torch documents (the draws come from different generators, so values differ)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import ember
import ember.nn as enn
from ember.nn import init

torch = pytest.importorskip("torch")


def stats(t):
    a = t.detach().numpy().astype(np.float64).ravel()
    return a.mean(), a.std(), a.min(), a.max()


@pytest.mark.parametrize(
    "name,param",
    [
        ("linear", None),
        ("conv1d", None),
        ("conv2d", None),
        ("conv3d", None),
        ("conv_transpose1d", None),
        ("conv_transpose2d", None),
        ("conv_transpose3d", None),
        ("sigmoid", None),
        ("tanh", None),
        ("relu", None),
        ("leaky_relu", None),
        ("leaky_relu", 0.2),
        ("leaky_relu", 1),
        ("leaky_relu", math.sqrt(5)),
        ("selu", None),
    ],
)
def test_calculate_gain_matches_torch(name, param):
    assert init.calculate_gain(name, param) == pytest.approx(
        torch.nn.init.calculate_gain(name, param), rel=1e-15
    )


def test_calculate_gain_errors():
    with pytest.raises(ValueError, match="Unsupported nonlinearity gelu"):
        init.calculate_gain("gelu")
    with pytest.raises(ValueError, match="negative_slope True not a valid number"):
        init.calculate_gain("leaky_relu", True)


@pytest.mark.parametrize("shape", [(2, 3), (4, 3, 5), (8, 4, 3, 3), (2, 3, 1, 2, 2), (5, 0)])
def test_fans_match_torch(shape):
    ours = init._calculate_fan_in_and_fan_out(ember.empty(*shape))
    assert ours == torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(*shape))


def test_fan_errors():
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        init._calculate_fan_in_and_fan_out(ember.empty(3))
    with pytest.raises(ValueError, match="Mode fan_avg not supported"):
        init.kaiming_uniform_(ember.empty(3, 3), mode="fan_avg")


def test_uniform_and_normal_statistics():
    t = init.uniform_(ember.empty(200, 500), -0.5, 1.5)
    mean, std, lo, hi = stats(t)
    assert t.dtype == ember.float32
    assert -0.5 <= lo and hi < 1.5 and mean == pytest.approx(0.5, abs=0.01)
    assert std == pytest.approx(2 / math.sqrt(12), rel=0.01)
    mean, std, _, _ = stats(init.normal_(ember.empty(200, 500), 3.0, 0.5))
    assert mean == pytest.approx(3.0, abs=0.005) and std == pytest.approx(0.5, rel=0.01)


def test_constant_zeros_ones_eye_dirac_match_torch():
    assert np.all(init.constant_(ember.empty(2, 3), 0.25).numpy() == 0.25)
    assert np.all(init.zeros_(ember.ones(4)).numpy() == 0)
    assert np.all(init.ones_(ember.zeros(4)).numpy() == 1)
    for shape in [(3, 5), (5, 3)]:
        np.testing.assert_array_equal(
            init.eye_(ember.empty(*shape)).numpy(), torch.nn.init.eye_(torch.empty(*shape)).numpy()
        )
    for shape, groups in [
        ((4, 2, 3), 1),
        ((6, 4, 3, 3), 2),
        ((4, 4, 3, 3, 3), 1),
        ((2, 5, 4, 4), 1),
    ]:
        np.testing.assert_array_equal(
            init.dirac_(ember.empty(*shape), groups).numpy(),
            torch.nn.init.dirac_(torch.empty(*shape), groups).numpy(),
        )
    with pytest.raises(ValueError, match="Only tensors with 2 dimensions"):
        init.eye_(ember.empty(2, 2, 2))
    with pytest.raises(ValueError, match="3, 4, or 5 dimensions"):
        init.dirac_(ember.empty(2, 2))
    with pytest.raises(ValueError, match="dim 0 must be divisible by groups"):
        init.dirac_(ember.empty(3, 2, 3), groups=2)


@pytest.mark.parametrize("shape", [(256, 512), (64, 32, 3, 3)])
@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
@pytest.mark.parametrize(
    "nonlinearity,a", [("leaky_relu", math.sqrt(5)), ("relu", 0), ("leaky_relu", 0), ("tanh", 0)]
)
def test_kaiming_statistics(shape, mode, nonlinearity, a):
    fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(*shape))
    fan = fan_in if mode == "fan_in" else fan_out
    std = torch.nn.init.calculate_gain(nonlinearity, a) / math.sqrt(fan)
    bound = math.sqrt(3.0) * std
    t = init.kaiming_uniform_(ember.empty(*shape), a=a, mode=mode, nonlinearity=nonlinearity)
    m, s, lo, hi = stats(t)
    assert -bound <= lo and hi <= bound and hi > 0.99 * bound and lo < -0.99 * bound
    assert abs(m) < 0.02 * bound and s == pytest.approx(std, rel=0.02)
    t = init.kaiming_normal_(ember.empty(*shape), a=a, mode=mode, nonlinearity=nonlinearity)
    m, s, _, _ = stats(t)
    assert abs(m) < 0.04 * std and s == pytest.approx(std, rel=0.02)


@pytest.mark.parametrize("shape", [(300, 200), (32, 16, 5, 5)])
def test_xavier_statistics(shape):
    fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(*shape))
    std = 0.7 * math.sqrt(2.0 / (fan_in + fan_out))
    m, s, lo, hi = stats(init.xavier_uniform_(ember.empty(*shape), gain=0.7))
    bound = math.sqrt(3.0) * std
    assert -bound <= lo and hi <= bound and hi > 0.99 * bound
    assert s == pytest.approx(std, rel=0.02)
    m, s, _, _ = stats(init.xavier_normal_(ember.empty(*shape), gain=0.7))
    assert abs(m) < 0.05 * std and s == pytest.approx(std, rel=0.02)


def _truncnorm_moments(mean, std, a, b):
    phi = lambda x: math.exp(-x * x / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    cdf = lambda x: (1 + math.erf(x / math.sqrt(2))) / 2  # noqa: E731
    al, be = (a - mean) / std, (b - mean) / std
    z = cdf(be) - cdf(al)
    mu = mean + (phi(al) - phi(be)) / z * std
    var = std**2 * (1 + (al * phi(al) - be * phi(be)) / z - ((phi(al) - phi(be)) / z) ** 2)
    return mu, math.sqrt(var)


@pytest.mark.parametrize(
    "mean,std,a,b",
    [
        (0.0, 1.0, -2.0, 2.0),  # wide: normal proposals
        (0.0, 0.02, -0.04, 0.04),  # the ViT default
        (1.0, 1.0, 1.5, 3.0),  # narrow one-sided: uniform proposals
        (0.0, 1.0, 2.0, 2.5),  # far tail (p < 0.03)
    ],
)
def test_trunc_normal_bounds_and_moments(mean, std, a, b):
    t = init.trunc_normal_(ember.empty(400, 500), mean, std, a, b)
    m, s, lo, hi = stats(t)
    mu, sigma = _truncnorm_moments(mean, std, a, b)
    assert a <= lo and hi <= b
    assert m == pytest.approx(mu, abs=0.01 * sigma + 1e-7)
    assert s == pytest.approx(sigma, rel=0.01)
    assert t.dtype == ember.float32


def test_trunc_normal_warns_when_mean_is_far():
    with pytest.warns(UserWarning, match="mean is more than 2 std"):
        init.trunc_normal_(ember.empty(10), mean=5.0, std=1.0, a=-1.0, b=1.0)


@pytest.mark.parametrize("shape", [(6, 6), (10, 4), (4, 10), (8, 3, 2, 2)])
def test_orthogonal(shape):
    t = init.orthogonal_(ember.empty(*shape), gain=2.0)
    q = t.numpy().reshape(shape[0], -1).astype(np.float64) / 2.0
    small = q.T @ q if q.shape[0] >= q.shape[1] else q @ q.T
    np.testing.assert_allclose(small, np.eye(small.shape[0]), atol=1e-5)
    with pytest.raises(ValueError, match="2 or more dimensions"):
        init.orthogonal_(ember.empty(3))


def test_generator_gives_reproducible_independent_draws():
    for fn in (
        init.uniform_,
        init.normal_,
        init.trunc_normal_,
        init.xavier_uniform_,
        init.kaiming_normal_,
        init.orthogonal_,
    ):
        g1 = ember.Generator().manual_seed(7)
        g2 = ember.Generator().manual_seed(7)
        a = fn(ember.empty(5, 4), generator=g1).numpy().copy()
        ember.manual_seed(123)
        b = fn(ember.empty(5, 4), generator=g2).numpy()
        np.testing.assert_array_equal(a, b)
        c = fn(ember.empty(5, 4), generator=g1).numpy()
        assert not np.array_equal(a, c)


def test_init_works_on_parameters_and_keeps_them_leaves():
    p = enn.Parameter(ember.empty(8, 4))
    for fn in (
        init.kaiming_uniform_,
        init.xavier_normal_,
        init.trunc_normal_,
        init.zeros_,
        init.orthogonal_,
        init.eye_,
        init.ones_,
        lambda t: init.constant_(t, 2.0),
    ):
        assert fn(p) is p
        assert p.requires_grad and p.grad_fn is None and isinstance(p, enn.Parameter)


@pytest.mark.parametrize("dtype", [ember.float64, ember.bfloat16, ember.float16])
def test_init_keeps_dtype(dtype):
    for fn in (
        init.kaiming_uniform_,
        init.normal_,
        init.trunc_normal_,
        init.orthogonal_,
        init.xavier_uniform_,
    ):
        t = fn(ember.empty(16, 8, dtype=dtype))
        assert t.dtype == dtype
        assert np.isfinite(t.numpy().astype(np.float64)).all()


def test_kaiming_on_empty_tensor_warns_and_is_a_no_op():
    t = ember.empty(0, 3)
    with pytest.warns(UserWarning, match="zero-element tensors is a no-op"):
        assert init.kaiming_uniform_(t) is t
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert init.orthogonal_(t) is t
