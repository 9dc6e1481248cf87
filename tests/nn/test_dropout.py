"""Dropout: statistics of the mask (keep rate, 1/(1-p) scaling), eval identity, determinism
under a seed or a generator, gradient = mask * scale, in-place forms, channel-wise variants
and alpha dropout, plus torch's argument checks and reprs. The masks cannot equal torch's
(different RNGs), so the tests check the defining properties instead."""

from __future__ import annotations

import numpy as np
import pytest

import ember
import ember.nn as enn
import ember.nn.functional as F
from tests.oracle import torch

tnn = torch.nn


def _arr(t):
    return t.detach().numpy()


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_keep_rate_and_scaling(p):
    x = ember.ones(200, 500)
    y = _arr(F.dropout(x, p, training=True))
    kept = y != 0
    # 100k Bernoulli draws: the keep rate is within 5 standard deviations of 1 - p
    sd = np.sqrt(p * (1 - p) / y.size)
    assert abs(kept.mean() - (1 - p)) < 5 * sd
    np.testing.assert_allclose(y[kept], 1 / (1 - p), rtol=1e-6)
    assert abs(y.mean() - 1) < 5 * sd / (1 - p)  # inverted dropout keeps the expectation
    assert y.dtype == np.float32


def test_dropout_gradient_is_mask_times_scale():
    x = ember.tensor(
        np.random.default_rng(0).standard_normal((30, 40)).astype(np.float32), requires_grad=True
    )
    g = np.random.default_rng(1).standard_normal((30, 40)).astype(np.float32)
    y = F.dropout(x, 0.3)
    y.backward(ember.tensor(g))
    kept = _arr(y) != 0
    assert 0.6 < kept.mean() < 0.8
    np.testing.assert_allclose(_arr(y)[kept], _arr(x)[kept] / 0.7, rtol=1e-6)
    np.testing.assert_allclose(_arr(x.grad), g * np.where(kept, 1 / 0.7, 0.0), rtol=1e-6)
    assert ember.autograd.gradcheck(
        lambda t: F.dropout(t, 0.4, generator=ember.Generator().manual_seed(3)),
        [ember.randn(4, 5, dtype=ember.float64, requires_grad=True)],
    )


def test_dropout_eval_and_p0_return_the_input():
    x = ember.randn(4, 5)
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0, training=True) is x
    m = enn.Dropout(0.5)
    m.eval()
    assert m(x) is x
    assert torch.nn.functional.dropout(torch.ones(2), 0.5, False) is not None  # same contract


def test_dropout_p1_zeroes_everything_with_zero_gradient():
    x = ember.randn(3, 4, requires_grad=True)
    y = F.dropout(x, 1.0)
    assert not _arr(y).any()
    y.sum().backward()
    assert not _arr(x.grad).any()


def test_dropout_is_deterministic_under_seed_and_generator():
    ember.manual_seed(123)
    a = _arr(F.dropout(ember.ones(50, 50), 0.5))
    ember.manual_seed(123)
    b = _arr(F.dropout(ember.ones(50, 50), 0.5))
    c = _arr(F.dropout(ember.ones(50, 50), 0.5))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(b, c)
    gen1, gen2 = ember.Generator().manual_seed(7), ember.Generator().manual_seed(7)
    m1, m2 = enn.Dropout(0.5, generator=gen1), enn.Dropout(0.5, generator=gen2)
    ember.manual_seed(1)
    d = _arr(m1(ember.ones(20, 20)))
    ember.manual_seed(2)  # the default generator does not matter with an own generator
    e = _arr(m2(ember.ones(20, 20)))
    np.testing.assert_array_equal(d, e)


def test_dropout_inplace():
    x = ember.ones(10, 10)
    y = F.dropout(x, 0.5, inplace=True)
    assert y is x
    assert set(np.unique(_arr(x))) <= {0.0, 2.0}
    leaf = ember.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        F.dropout(leaf, 0.5, inplace=True)
    a = ember.ones(8, 8, requires_grad=True)
    h = a * 1
    out = enn.Dropout(0.5, inplace=True)(h)
    assert out is h
    out.sum().backward()
    np.testing.assert_array_equal(_arr(a.grad), _arr(h))  # grad = mask * 2 = h's values


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_dropout_rejects_bad_p(p):
    with pytest.raises(ValueError, match=f"between 0 and 1, but got {p}"):
        F.dropout(ember.ones(2), p)
    with pytest.raises(ValueError, match=f"between 0 and 1, but got {p}"):
        enn.Dropout(p)
    with pytest.raises(ValueError, match=f"between 0 and 1, but got {p}"):
        tnn.Dropout(p)


def test_module_train_eval_and_repr():
    for ecls, tcls, args in (
        (enn.Dropout, tnn.Dropout, ()),
        (enn.Dropout, tnn.Dropout, (0.2, True)),
        (enn.Dropout1d, tnn.Dropout1d, (0.3,)),
        (enn.Dropout2d, tnn.Dropout2d, (0.2, True)),
        (enn.Dropout3d, tnn.Dropout3d, ()),
        (enn.AlphaDropout, tnn.AlphaDropout, (0.1,)),
        (enn.FeatureAlphaDropout, tnn.FeatureAlphaDropout, ()),
    ):
        assert repr(ecls(*args)) == repr(tcls(*args))
    m = enn.Dropout(0.5)
    x = ember.ones(100, 100)
    assert (_arr(m(x)) == 0).any()
    m.eval()
    np.testing.assert_array_equal(_arr(m(x)), 1)
    assert repr(enn.Dropout()) == "Dropout(p=0.5, inplace=False)"
    assert enn.Dropout().state_dict() == {}


@pytest.mark.parametrize(
    "fn,shape,mask_shape",
    [
        (F.dropout1d, (4, 6, 50), (4, 6, 1)),
        (F.dropout1d, (6, 50), (6, 1)),
        (F.dropout2d, (4, 6, 5, 5), (4, 6, 1, 1)),
        (F.dropout3d, (3, 6, 2, 3, 4), (3, 6, 1, 1, 1)),
        (F.dropout3d, (6, 2, 3, 4), (6, 1, 1, 1)),
    ],
)
def test_channel_dropout_zeroes_whole_channels(fn, shape, mask_shape):
    x = ember.ones(*shape, requires_grad=True)
    y = fn(x, 0.5, training=True)
    arr = _arr(y)
    k = sum(1 for s in mask_shape if s != 1)  # the leading dims with one draw each
    rows = arr.reshape(int(np.prod(shape[:k])), -1)
    for row in rows:
        assert len(set(row.tolist())) == 1 and row[0] in (0.0, 2.0)
    assert {0.0, 2.0} <= set(rows[:, 0].tolist())  # some channels dropped, some kept
    y.sum().backward()
    np.testing.assert_array_equal(_arr(x.grad), arr)


def test_channel_dropout_errors_and_warnings():
    with pytest.raises(RuntimeError, match="dropout1d: Expected 2D or 3D input"):
        F.dropout1d(ember.ones(2, 3, 4, 5))
    with pytest.warns(UserWarning, match="Received a 3D input to dropout2d"):
        F.dropout2d(ember.ones(2, 3, 4))
    with pytest.warns(UserWarning, match="Received a 2-D input to dropout2d"):
        F.dropout2d(ember.ones(2, 3))


@pytest.mark.parametrize("feature", [False, True])
def test_alpha_dropout_keeps_mean_and_variance(feature):
    rng = np.random.default_rng(0)
    x = ember.tensor(rng.standard_normal((400, 50, 4)).astype(np.float32), requires_grad=True)
    fn = F.feature_alpha_dropout if feature else F.alpha_dropout
    y = fn(x, 0.2, training=True)
    arr = _arr(y)
    assert abs(arr.mean()) < 0.05 and abs(arr.std() - 1) < 0.05
    # the gradient is a * mask: 0 where dropped, a where kept
    y.sum().backward()
    a = 1 / np.sqrt((1.7580993408473766**2 * 0.2 + 1) * 0.8)
    np.testing.assert_allclose(np.unique(_arr(x.grad)), [0.0, a], rtol=1e-6)
    assert fn(x, 0.2, training=False) is x
    t = torch.randn(3)
    assert torch.nn.functional.alpha_dropout(t, 0.2, False) is t  # same eval contract


def test_dropout_half_and_float64_keep_dtype():
    for dt in ("float16", "bfloat16", "float64"):
        y = F.dropout(ember.ones(10, 10, dtype=dt), 0.5)
        assert y.dtype.name == dt
        assert set(np.unique(_arr(y.float()))) <= {0.0, 2.0}
