"""Exact float32 gelu in blocks over the CPU threads: any block size and thread count gives
the one-block result, which matches torch's gelu and its derivative."""

import numpy as np
import pytest

from ember.ops import activation as A
from ember.ops import parallel as P
from tests.oracle import torch


@pytest.fixture(autouse=True)
def numpy_path(monkeypatch):
    """These tests are about the NumPy gelu blocks: ember/cpu's fused loop stays off (it is
    tested against these blocks in tests/cpu)."""
    monkeypatch.setenv("EMBER_CPU_KERNELS", "0")


def _set_block(monkeypatch, block: int) -> None:
    monkeypatch.setattr(A, "_GELU_BLOCK", block)
    monkeypatch.setattr(A, "_GELU_MIN_BLOCK", block)


def _blocked_equals_one_block(x, threads: int, block, monkeypatch):
    """(gelu, gelu') of x in blocks of ``block`` (None: the defaults) on ``threads`` threads,
    after checking they are bitwise the one-block, one-thread result."""
    before = P.get_num_threads()
    P.set_num_threads(threads)
    try:
        with np.errstate(all="ignore"):  # as Gelu.forward: x * x overflows for 3e38
            if block is not None:
                _set_block(monkeypatch, block)
            out, deriv = A._gelu_exact_f32(x)
            _set_block(monkeypatch, 1 << 30)  # one block, one thread
            out1, deriv1 = A._gelu_exact_f32(x)
    finally:
        P.set_num_threads(before)
    np.testing.assert_array_equal(out, out1)
    np.testing.assert_array_equal(deriv, deriv1)
    return out, deriv


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n", [1000, 300_001, 1 << 20])
def test_gelu_blocks_agree_with_one_block_and_torch(threads, n, monkeypatch):
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32) * 3
    out, deriv = _blocked_equals_one_block(x, threads, None, monkeypatch)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.gelu(xt)
    yt.sum().backward()
    np.testing.assert_allclose(out, yt.detach().numpy(), rtol=2e-6, atol=2e-6)
    np.testing.assert_allclose(deriv, xt.grad.numpy(), rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("threads", [1, 2])
def test_gelu_exp2_range_guard_large_and_special_inputs(threads, monkeypatch):
    """|x| > 13.2 puts exp2's argument below -126 (its slow path): those blocks take the guarded
    path. Either path gives each element the same bits, and huge or infinite x give torch's
    values (gelu'(+-1e30) = 1 or 0, gelu'(+-inf) = NaN, not +-inf from a floored exp2)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal(1 << 18).astype(np.float32) * 10
    x[:8] = [np.inf, -np.inf, 1e30, -1e30, 3e38, -3e38, 13.25, -13.25]
    x[-70_000:] = rng.standard_normal(70_000).astype(np.float32)  # blocks on the fast path
    out, deriv = _blocked_equals_one_block(x, threads, 1 << 14, monkeypatch)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.gelu(xt)
    yt.sum().backward()
    np.testing.assert_array_equal(np.isnan(deriv), np.isnan(xt.grad.numpy()))
    np.testing.assert_allclose(deriv, xt.grad.numpy(), rtol=2e-6, atol=2e-6)
    fin = np.abs(x) < 1e38  # torch's forward overflows to inf at 3e38 (and NaN at inf)
    np.testing.assert_allclose(out[fin], yt.detach().numpy()[fin], rtol=2e-6, atol=2e-6)
