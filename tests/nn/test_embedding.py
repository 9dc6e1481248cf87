"""Embedding and one_hot against torch: lookups of any index shape, the weight gradient
(repeated indices accumulate, padding_idx gets none), max_norm renormalisation,
scale_grad_by_freq, from_pretrained, initialisation, reprs and errors."""

from __future__ import annotations

import numpy as np
import pytest

import ember
import ember.nn as enn
import ember.nn.functional as F
from tests.oracle import torch

tnn = torch.nn
TF = torch.nn.functional


def _pair(num=10, dim=4, seed=0, **kwargs):
    tmod = tnn.Embedding(num, dim, **kwargs)
    with torch.no_grad():
        tmod.weight.copy_(
            torch.tensor(np.random.default_rng(seed).standard_normal((num, dim)).astype(np.float32))
        )
        if tmod.padding_idx is not None:
            tmod.weight[tmod.padding_idx].fill_(0)
    emod = enn.Embedding(num, dim, **kwargs)
    emod.load_state_dict({"weight": tmod.weight.detach().numpy().copy()})
    return emod, tmod


def _compare(emod, tmod, idx, seed=1):
    ye, yt = emod(ember.tensor(idx)), tmod(torch.tensor(idx))
    np.testing.assert_allclose(ye.detach().numpy(), yt.detach().numpy(), rtol=1e-6)
    g = np.random.default_rng(seed).standard_normal(tuple(yt.shape)).astype(np.float32)
    ye.backward(ember.tensor(g))
    yt.backward(torch.tensor(g))
    np.testing.assert_allclose(
        emod.weight.grad.numpy(), tmod.weight.grad.numpy(), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        emod.weight.detach().numpy(), tmod.weight.detach().numpy(), rtol=1e-6
    )


@pytest.mark.parametrize(
    "idx",
    [
        np.array([1, 2, 4, 5, 4, 3, 2, 9]),
        np.array([[0, 2, 0, 5], [4, 3, 3, 9]]),
        np.array(7),
        np.zeros((0, 3), np.int64),
        np.array([[[1, 1], [1, 1]]], np.int32),
    ],
)
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"padding_idx": 2},
        {"padding_idx": -1},
        {"max_norm": 1.0},
        {"max_norm": 1.5, "norm_type": 1.0},
        {"scale_grad_by_freq": True},
        {"padding_idx": 0, "scale_grad_by_freq": True},
    ],
)
def test_embedding_matches_torch(idx, kwargs):
    emod, tmod = _pair(**kwargs)
    assert repr(emod) == repr(tmod)
    _compare(emod, tmod, idx)


def test_padding_idx_gets_no_gradient_and_stays_zero():
    emod = enn.Embedding(6, 3, padding_idx=1)
    assert not emod.weight[1].detach().numpy().any()
    opt_before = emod.weight.detach().numpy().copy()
    emod(ember.tensor([[1, 1, 2], [1, 0, 5]])).sum().backward()
    grad = emod.weight.grad.numpy()
    assert not grad[1].any()
    np.testing.assert_array_equal(grad[[0, 2, 5]], 1.0)
    assert not grad[[3, 4]].any()
    np.testing.assert_array_equal(emod.weight.detach().numpy(), opt_before)


def test_init_is_standard_normal_with_padding_row_zeroed():
    emod = enn.Embedding(2000, 50, padding_idx=3)
    w = emod.weight.detach().numpy()
    assert w.dtype == np.float32 and w.shape == (2000, 50)
    assert not w[3].any()
    rest = np.delete(w, 3, axis=0)
    assert abs(rest.mean()) < 0.01 and abs(rest.std() - 1) < 0.01
    ember.manual_seed(5)
    a = enn.Embedding(5, 3).weight.detach().numpy()
    ember.manual_seed(5)
    np.testing.assert_array_equal(a, enn.Embedding(5, 3).weight.detach().numpy())
    assert enn.Embedding(3, 2, dtype=ember.float64).weight.dtype is ember.float64


def test_from_pretrained_shares_and_freezes():
    w = ember.tensor(np.arange(12, dtype=np.float32).reshape(4, 3))
    emb = enn.Embedding.from_pretrained(w)
    assert not emb.weight.requires_grad
    assert emb.weight.data is w.data
    np.testing.assert_array_equal(emb(ember.tensor([3, 0])).numpy(), [[9, 10, 11], [0, 1, 2]])
    trainable = enn.Embedding.from_pretrained(w, freeze=False, padding_idx=0)
    assert trainable.weight.requires_grad and trainable.padding_idx == 0
    t = tnn.Embedding.from_pretrained(torch.tensor(w.numpy()), freeze=False, padding_idx=0)
    assert repr(trainable) == repr(t)
    with pytest.raises(AssertionError, match="expected to be 2-dimensional"):
        enn.Embedding.from_pretrained(ember.ones(3))


def test_functional_embedding_and_one_hot():
    w = np.random.default_rng(2).standard_normal((7, 3)).astype(np.float32)
    idx = np.array([[6, 0], [2, 2]])
    we, wt = ember.tensor(w, requires_grad=True), torch.tensor(w, requires_grad=True)
    ye, yt = (
        F.embedding(ember.tensor(idx), we, padding_idx=2),
        TF.embedding(torch.tensor(idx), wt, padding_idx=2),
    )
    np.testing.assert_allclose(ye.detach().numpy(), yt.detach().numpy())
    ye.sum().backward()
    yt.sum().backward()
    np.testing.assert_allclose(we.grad.numpy(), wt.grad.numpy())
    for num in (-1, 9):
        np.testing.assert_array_equal(
            F.one_hot(ember.tensor(idx), num).numpy(), TF.one_hot(torch.tensor(idx), num).numpy()
        )
    assert F.one_hot(ember.tensor([1, 0]), 3).dtype is ember.int64


def test_embedding_double_backward_and_gradcheck():
    w = ember.tensor(np.random.default_rng(3).standard_normal((5, 2)), requires_grad=True)
    idx = ember.tensor([0, 4, 4, 1])
    # (padding_idx is left out: its row is used but gets no gradient, by design)
    assert ember.autograd.gradcheck(lambda t: F.embedding(idx, t), [w])
    assert ember.autograd.gradgradcheck(lambda t: F.embedding(idx, t) ** 2, [w])


def test_embedding_errors():
    with pytest.raises(AssertionError, match="Padding_idx must be within num_embeddings"):
        enn.Embedding(5, 2, padding_idx=5)
    with pytest.raises(AssertionError, match="Padding_idx must be within num_embeddings"):
        enn.Embedding(5, 2, padding_idx=-6)
    with pytest.raises(
        AssertionError,
        match=r"Shape of weight does not match.*expected "
        r"\(5, 2\), got \(4, 2\)",
    ):
        enn.Embedding(5, 2, _weight=ember.ones(4, 2))
    with pytest.raises(IndexError):
        enn.Embedding(5, 2)(ember.tensor([5]))
    with pytest.raises(RuntimeError, match="Expected tensor for argument #1 'indices'"):
        enn.Embedding(5, 2)(ember.tensor([1.0]))
    with pytest.raises(NotImplementedError, match="sparse=True"):
        enn.Embedding(5, 2, sparse=True)(ember.tensor([1]))


def test_embedding_state_dict_round_trip_with_torch():
    emod, tmod = _pair(8, 3, padding_idx=0)
    assert list(emod.state_dict()) == list(tmod.state_dict()) == ["weight"]
    other = tnn.Embedding(8, 3)
    other.load_state_dict({k: torch.tensor(v.numpy()) for k, v in emod.state_dict().items()})
    np.testing.assert_array_equal(other.weight.detach().numpy(), tmod.weight.detach().numpy())
