"""Exact float32 gelu in blocks over the CPU threads: any block size and thread count gives
the one-block result, which matches torch's gelu and its derivative."""

import numpy as np
import pytest

from ember.ops import activation as A
from ember.ops import parallel as P
from tests.oracle import torch


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n", [1000, 300_001, 1 << 20])
def test_gelu_blocks_agree_with_one_block_and_torch(threads, n, monkeypatch):
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32) * 3
    before = P.get_num_threads()
    P.set_num_threads(threads)
    try:
        out, deriv = A._gelu_exact_f32(x)
        monkeypatch.setattr(A, "_GELU_BLOCK", 1 << 30)  # one block, one thread
        monkeypatch.setattr(A, "_GELU_MIN_BLOCK", 1 << 30)
        out1, deriv1 = A._gelu_exact_f32(x)
    finally:
        P.set_num_threads(before)
    np.testing.assert_array_equal(out, out1)
    np.testing.assert_array_equal(deriv, deriv1)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.gelu(xt)
    yt.sum().backward()
    np.testing.assert_allclose(out, yt.detach().numpy(), rtol=2e-6, atol=2e-6)
    np.testing.assert_allclose(deriv, xt.grad.numpy(), rtol=2e-6, atol=2e-6)
