"""normalize, cosine_similarity, pairwise_distance and their modules against torch: forward and
every input gradient over dims, p values, eps edge cases (zero vectors, eps that clamps),
broadcasting, 0-d and non-contiguous inputs; float64 gradcheck; reprs; error messages."""

from __future__ import annotations

import math

import numpy as np
import pytest

import ember
import ember.nn as enn
import ember.nn.functional as F
from tests.oracle import DEVICE, check_op, gradcheck_op, rand, torch

tnn = torch.nn
TF = torch.nn.functional


def with_zero_rows(*shape, seed=0):
    """Random values with the first row (along dim 0) all zero: the eps edge case."""
    x = rand(*shape, seed=seed)
    x[0] = 0.0
    return x


# ------------------------------------------------------------------------------ normalize
@pytest.mark.parametrize("p", [2.0, 1, 3, 0.5, math.inf])
@pytest.mark.parametrize("dim", [0, 1, -1, (0, 2)])
def test_normalize_matches_torch(p, dim):
    x = rand(4, 5, 3, seed=1)
    check_op(lambda t: (F if isinstance(t, ember.Tensor) else TF).normalize(t, p, dim), [x])


@pytest.mark.parametrize("eps", [1e-12, 0.5, 10.0])
def test_normalize_eps_clamps_the_norm_and_zero_vectors(eps):
    x = with_zero_rows(3, 4)
    x[1] *= 1e-3  # a small row: eps decides whether it is clamped

    def fn(t):
        return (F if isinstance(t, ember.Tensor) else TF).normalize(t, 2.0, 1, eps)

    # a zero row's gradient is g / eps (1e12 for the default eps): compare relatively
    check_op(fn, [x], rtol=1e-4, atol=1e-5)


def test_normalize_defaults_0d_1d_and_noncontiguous():
    check_op(lambda t: (F if isinstance(t, ember.Tensor) else TF).normalize(t), [rand(3, 6)])
    check_op(lambda t: (F if isinstance(t, ember.Tensor) else TF).normalize(t, dim=0), [rand(5)])
    check_op(
        lambda t: (F if isinstance(t, ember.Tensor) else TF).normalize(t, dim=0),
        [np.array(2.0, np.float32)],
    )
    check_op(
        lambda t: (F if isinstance(t, ember.Tensor) else TF).normalize(t, dim=0),
        [rand(4, 3, seed=3)],
        noncontiguous=True,
    )


def test_normalize_gradcheck_and_errors():
    gradcheck_op(lambda t: F.normalize(t, 2.0, 1), [rand(3, 4, seed=2)])
    gradcheck_op(lambda t: F.normalize(t, 3.0, 0), [rand(3, 4, seed=2)])
    with pytest.raises(IndexError, match=r"normalize: Dimension out of range"):
        F.normalize(ember.randn(2, 3), dim=2)
    with pytest.raises(RuntimeError, match="Expected a floating point"):
        F.normalize(ember.tensor([[1, 2]]))


# ------------------------------------------------------------------------ cosine_similarity
COS_SHAPES = [
    ((4, 5), (4, 5), 1),
    ((4, 5), (4, 5), 0),
    ((1, 5), (4, 5), 1),  # broadcast
    ((5,), (3, 5), -1),  # broadcast across ranks
    ((2, 3, 4), (2, 1, 4), 2),
    ((2, 3, 4), (2, 1, 4), -2),
    ((2, 3, 4), (3, 1), 0),
    ((6,), (6,), 0),
    ((), (), 0),
]


@pytest.mark.parametrize("s1,s2,dim", COS_SHAPES)
def test_cosine_similarity_matches_torch(s1, s2, dim):
    a, b = rand(*s1, seed=1), rand(*s2, seed=2)
    check_op(
        lambda x, y: (F if isinstance(x, ember.Tensor) else TF).cosine_similarity(x, y, dim), [a, b]
    )


@pytest.mark.parametrize("eps", [1e-8, 1e-3, 0.7])
def test_cosine_similarity_zero_and_tiny_vectors(eps):
    """torch clamps each norm separately (in place under no_grad): a zero vector gives 0 and
    the gradient flows as if the norm were not clamped."""
    a = with_zero_rows(4, 5, seed=1)
    b = rand(4, 5, seed=2)
    b[1] = 0.0
    a[2] *= 1e-4
    b[3] *= 1e-5

    def fn(x, y):
        return (F if isinstance(x, ember.Tensor) else TF).cosine_similarity(x, y, 1, eps)

    check_op(fn, [a, b], rtol=1e-4, atol=1e-4)


def test_cosine_similarity_dtypes_noncontiguous_and_module():
    def fn(x, y):
        return (F if isinstance(x, ember.Tensor) else TF).cosine_similarity(x, y)

    check_op(fn, [rand(3, 4, seed=1), rand(3, 4, seed=2, dtype=np.float64)])
    ints = np.arange(12).reshape(3, 4) - 5
    check_op(fn, [ints, rand(3, 4, seed=2)])
    check_op(fn, [rand(4, 3, seed=1), rand(4, 3, seed=2)], noncontiguous=True)
    check_op(
        lambda x, y: (enn if isinstance(x, ember.Tensor) else tnn).CosineSimilarity(0, 0.5)(x, y),
        [rand(3, 4, seed=3), rand(3, 4, seed=4)],
    )
    assert repr(enn.CosineSimilarity(dim=0, eps=1e-3)) == repr(tnn.CosineSimilarity(0, 1e-3))
    m = enn.CosineSimilarity(dim=-1, eps=0.1)
    assert (m.dim, m.eps) == (-1, 0.1)


def test_cosine_similarity_gradcheck_and_errors():
    gradcheck_op(lambda x, y: F.cosine_similarity(x, y), [rand(3, 4, seed=1), rand(1, 4, seed=2)])
    # (where eps clamps a norm, torch's gradient is deliberately not the derivative: the clamp
    # is invisible to autograd, so only unclamped inputs are finite-difference checked)
    gradcheck_op(
        lambda x, y: F.cosine_similarity(x, y, 0, 1e-3), [rand(3, 2, seed=1), rand(3, 2, seed=2)]
    )
    with pytest.raises(
        RuntimeError,
        match=r"cosine_similarity: shapes \(2, 3\) and \(4, 3\)"
        r".*size of tensor a \(2\) must match the size of tensor b \(4\)",
    ):
        F.cosine_similarity(ember.randn(2, 3), ember.randn(4, 3))
    with pytest.raises(IndexError, match="cosine_similarity: Dimension out of range"):
        F.cosine_similarity(ember.randn(2, 3), ember.randn(2, 3), dim=2)
    with pytest.raises(RuntimeError, match="expected common dtype to be floating point"):
        F.cosine_similarity(ember.tensor([[1, 2]]), ember.tensor([[1, 2]]))


# ------------------------------------------------------------------------ pairwise_distance
@pytest.mark.parametrize("p", [2.0, 1.0, 3.0, 0.5, math.inf])
@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize(
    "s1,s2", [((4, 5), (4, 5)), ((4, 5), (5,)), ((1, 5), (3, 5)), ((5,), (5,))]
)
def test_pairwise_distance_matches_torch(p, keepdim, s1, s2):
    a, b = rand(*s1, seed=1), rand(*s2, seed=2)

    def fn(x, y):
        return (F if isinstance(x, ember.Tensor) else TF).pairwise_distance(x, y, p, 1e-6, keepdim)

    check_op(fn, [a, b])


@pytest.mark.parametrize("eps", [1e-6, 0.0, 0.3])
def test_pairwise_distance_eps_and_identical_inputs(eps):
    a = rand(3, 4, seed=1)
    b = a.copy()
    b[1] += 0.5  # one row differs; the others are zero distance apart (eps=0: norm at 0)

    def fn(x, y):
        return (F if isinstance(x, ember.Tensor) else TF).pairwise_distance(x, y, eps=eps)

    check_op(fn, [a, b])


def test_pairwise_distance_0d_p0_ints_noncontiguous_and_module():
    def fn(x, y):
        return (F if isinstance(x, ember.Tensor) else TF).pairwise_distance(x, y)

    check_op(fn, [np.array(1.5, np.float32), np.array(-0.5, np.float32)])
    check_op(fn, [np.arange(6).reshape(2, 3), np.ones((2, 3), np.int64)])
    check_op(fn, [rand(4, 3, seed=1), rand(4, 3, seed=2)], noncontiguous=True)
    check_op(
        lambda x, y: (F if isinstance(x, ember.Tensor) else TF).pairwise_distance(x, y, 0),
        [rand(3, 4, seed=1), rand(3, 4, seed=2)],
        grad=False,  # p=0 counts non-zeros: no gradient
    )
    check_op(
        lambda x, y: (enn if isinstance(x, ember.Tensor) else tnn).PairwiseDistance(1, 0, True)(
            x, y
        ),
        [rand(3, 4, seed=3), rand(3, 4, seed=4)],
    )
    assert repr(enn.PairwiseDistance(p=1, eps=0, keepdim=True)) == repr(
        tnn.PairwiseDistance(p=1, eps=0, keepdim=True)
    )
    m = enn.PairwiseDistance(3.0, 1e-3, True)
    assert (m.norm, m.eps, m.keepdim) == (3.0, 1e-3, True)


def test_pairwise_distance_gradcheck_and_errors():
    gradcheck_op(lambda x, y: F.pairwise_distance(x, y), [rand(3, 4, seed=1), rand(4, seed=2)])
    gradcheck_op(
        lambda x, y: F.pairwise_distance(x, y, 3.0, 0.0, True),
        [rand(3, 4, seed=1), rand(3, 4, seed=2)],
    )
    with pytest.raises(RuntimeError, match=r"pairwise_distance: shapes \(2, 3\) and \(4, 3\)"):
        F.pairwise_distance(ember.randn(2, 3), ember.randn(4, 3))


def test_distance_ops_keep_the_device():
    out = F.cosine_similarity(ember.randn(2, 3), ember.randn(2, 3))
    assert out.device.type == DEVICE
