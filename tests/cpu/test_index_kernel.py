"""The row scatter-add loop (ember/cpu/_index_kernels.py) under ember.ops.index_kernels.add_rows:
bit for bit np.add.at (it adds the same rows in the same order) and the NumPy path it replaces
(kernels off), through embedding, index_add and indexing backward, and against torch."""

from __future__ import annotations

import numpy as np
import pytest

import ember
import ember.nn.functional as F
from ember.cpu import compile as cpu_compile
from ember.ops import index_kernels as K
from tests.oracle import torch


def _kernels():
    return cpu_compile.load("index")


def _bits_equal(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a.view(f"u{a.itemsize}"), b.view(f"u{b.itemsize}"))


def _both(out, idx, src, monkeypatch):
    """add_rows into copies of ``out`` with the kernel and with the NumPy path."""
    fast = out.copy()
    K.add_rows(fast, idx, src)
    monkeypatch.setenv("EMBER_CPU_KERNELS", "0")
    slow = out.copy()
    K.add_rows(slow, idx, src)
    monkeypatch.setenv("EMBER_CPU_KERNELS", "1")
    return fast, slow


def _padding_tokens(rng, n, shape, pad, repeats):
    idx = rng.integers(0, n, shape)
    idx.reshape(-1)[rng.permutation(idx.size)[:repeats]] = pad
    return idx


CASES = {
    "random repeats": lambda rng: rng.integers(0, 50, 300),
    "one long run": lambda rng: np.full(400, 7),
    "run in the middle": lambda rng: np.concatenate([np.arange(20), np.full(100, 3), [5, 3]]),
    "padding": lambda rng: _padding_tokens(rng, 1000, 2048, 0, 512),
    "no repeats": lambda rng: rng.permutation(1000)[:200],
    "small vocabulary": lambda rng: rng.integers(0, 5, 600),
    "single": lambda rng: np.array([3]),
    "empty": lambda rng: np.zeros(0, np.int64),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("tail", [(), (1,), (64,), (512,), (3, 5)])
@pytest.mark.parametrize("case", list(CASES))
def test_matches_add_at_and_the_numpy_path(case, tail, dtype, kernels_on, monkeypatch):
    rng = np.random.default_rng(len(case) + len(tail))
    idx = CASES[case](rng).astype(np.int64)
    n = max(1000 if case == "padding" else 50, int(idx.max(initial=0)) + 1)
    src = rng.standard_normal((idx.size, *tail)).astype(dtype)
    zero = np.zeros((n, *tail), dtype)
    ref = zero.copy()
    np.add.at(ref, idx, src)
    fast, slow = _both(zero, idx, src, monkeypatch)
    _bits_equal(fast, ref)  # np.add.at's bits
    cols = int(np.prod(tail))
    starts = np.unique(idx).size
    if 1 < cols <= K._REDUCEAT_MAX_COLS and idx.size >= K._REDUCEAT_MIN_MEAN * starts < idx.size:
        # narrow rows in long runs: the NumPy path takes np.add.reduceat, whose sums are not
        # np.add.at's bits (the kernel's are)
        np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-5)
    else:
        _bits_equal(fast, slow)  # into a zero gradient the NumPy path gives np.add.at's bits
    base = rng.standard_normal((n, *tail)).astype(dtype)  # into a non-zero target
    ref = base.copy()
    np.add.at(ref, idx, src)
    fast, _ = _both(base, idx, src, monkeypatch)
    _bits_equal(fast, ref)


def test_int32_indices_negative_indices_and_strided_sources(kernels_on, count_calls):
    calls = count_calls(_kernels(), "add_rows")
    rng = np.random.default_rng(1)
    idx = rng.integers(-40, 40, 500).astype(np.int32)
    src = rng.standard_normal((64, 500)).astype(np.float32).T  # not contiguous
    out = rng.standard_normal((40, 64)).astype(np.float32)
    ref = out.copy()
    np.add.at(ref, idx, src)
    K.add_rows(out, idx, src)
    _bits_equal(out, ref)
    assert len(calls) == 1


@pytest.mark.parametrize("bad", [10, -11, 1 << 40])
def test_out_of_range_index_raises_and_writes_nothing(bad, kernels_on):
    out = np.zeros((10, 4), np.float32)
    idx = np.array([1, 2, bad, 3])
    with pytest.raises(IndexError, match=f"index {bad} is out of bounds"):
        K.add_rows(out, idx, np.ones((4, 4), np.float32))
    assert not out.any()


def test_other_dtypes_and_layouts_keep_the_numpy_path(kernels_on, count_calls):
    calls = count_calls(_kernels(), "add_rows")
    idx = np.array([0, 1, 1, 2, 1])
    for dtype in (np.float16, np.int64):
        out = np.zeros((3, 4), dtype)
        K.add_rows(out, idx, np.ones((5, 4), dtype))
        np.testing.assert_array_equal(out[:, 0], [1, 3, 1])
    out = np.zeros((4, 3), np.float32).T  # a transposed target
    K.add_rows(out, idx, np.ones((5, 4), np.float32))
    np.testing.assert_array_equal(out[:, 0], [1, 3, 1])
    out = np.zeros((3, 4), np.float32)  # mixed dtypes
    K.add_rows(out, idx, np.ones((5, 4), np.float64))
    np.testing.assert_array_equal(out[:, 0], [1, 3, 1])
    assert calls == []


def _embedding_grads(idx, w, g, padding_idx):
    t = ember.tensor(w, requires_grad=True)
    F.embedding(ember.tensor(idx), t, padding_idx=padding_idx).backward(ember.tensor(g))
    return t.grad.data


@pytest.mark.parametrize("padding_idx", [None, 0, 17])
@pytest.mark.parametrize("shape", [(32, 128), (4096,), (2, 3, 64)])
def test_embedding_backward(shape, padding_idx, kernels_on, monkeypatch, count_calls):
    rng = np.random.default_rng(len(shape))
    num, dim = 300, 96
    idx = _padding_tokens(rng, num, shape, 0 if padding_idx is None else padding_idx, 100)
    w = rng.standard_normal((num, dim)).astype(np.float32)
    g = rng.standard_normal((*shape, dim)).astype(np.float32)
    calls = count_calls(_kernels(), "add_rows")
    fast = _embedding_grads(idx, w, g, padding_idx)
    assert len(calls) == 1
    monkeypatch.setenv("EMBER_CPU_KERNELS", "0")
    _bits_equal(fast, _embedding_grads(idx, w, g, padding_idx))
    ref = np.zeros_like(w)
    np.add.at(ref, idx.reshape(-1), g.reshape(-1, dim))
    if padding_idx is not None:
        ref[padding_idx] = 0
    _bits_equal(fast, ref)
    tw = torch.tensor(w, requires_grad=True)
    torch.nn.functional.embedding(torch.tensor(idx), tw, padding_idx=padding_idx).backward(
        torch.tensor(g)
    )
    np.testing.assert_allclose(fast, tw.grad.numpy(), rtol=1e-5, atol=1e-5)
    if padding_idx is not None:
        assert not fast[padding_idx].any()


def test_index_add_and_indexing_backward(kernels_on, monkeypatch, count_calls):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((20, 6, 5)).astype(np.float32)
    src = rng.standard_normal((20, 300, 5)).astype(np.float32)
    zs = rng.standard_normal((30, 6, 5)).astype(np.float32)
    idx = rng.integers(-20, 20, 300)
    rows = rng.integers(-20, 20, (10, 30))

    def run():
        out = ember.tensor(x).index_add(1, ember.tensor(idx % 6), ember.tensor(src))
        y = ember.tensor(x, requires_grad=True)
        z = ember.tensor(zs, requires_grad=True)
        y.index_add(0, ember.tensor(idx[:30] % 20), z, alpha=1.5).sum().backward()
        v = ember.tensor(x, requires_grad=True)
        v[ember.tensor(rows)].backward(ember.tensor(np.ones((10, 30, 6, 5), np.float32)))
        return out.data, y.grad.data, z.grad.data, v.grad.data

    calls = count_calls(_kernels(), "add_rows")
    fast = run()
    assert len(calls) >= 2
    monkeypatch.setenv("EMBER_CPU_KERNELS", "0")
    slow = run()
    for a, b in zip(fast[1:], slow[1:]):
        _bits_equal(a, b)
    # 300 indices into 6 rows of 100: the NumPy path's np.add.reduceat sums, the kernel's are
    # np.add.at's bits
    np.testing.assert_allclose(fast[0], slow[0], rtol=1e-5, atol=1e-5)
    ref = x.copy()
    np.add.at(ref, (slice(None), idx % 6), src)
    _bits_equal(fast[0], ref)
    ref = np.zeros_like(x)
    np.add.at(ref, rows, 1)
    _bits_equal(fast[3], ref)
    t = torch.tensor(x).index_add(1, torch.tensor(idx % 6), torch.tensor(src))
    np.testing.assert_allclose(fast[0], t.numpy(), rtol=1e-5, atol=1e-5)
