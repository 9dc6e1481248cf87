"""NumPy tests of the composite twins written in ember/cuda (the oracles of the kernels that
have no composite elsewhere): the causal scale+mask+softmax and its backward, and the
GradScaler unscale + found-inf check. Runs in the default suite (no GPU needed)."""

from __future__ import annotations

import numpy as np
import pytest

from ember.cuda import attention, multi_tensor

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("shape", [(5, 5), (2, 3, 7, 7), (4, 3, 6), (3, 6, 4)])
def test_causal_softmax_composite_matches_torch(shape):
    rng = np.random.default_rng(1)
    s = rng.standard_normal(shape).astype(np.float32) * 3
    g = rng.standard_normal(shape).astype(np.float32)
    scale = 0.37
    tgt, src = shape[-2:]
    mask = torch.ones(tgt, src, dtype=torch.bool).tril()
    st = torch.tensor(s, requires_grad=True)
    ref = torch.softmax((st * scale).masked_fill(~mask, float("-inf")), -1)
    ref.backward(torch.tensor(g))
    y = attention.causal_softmax_composite(s, scale)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, ref.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert np.all(y[..., np.triu_indices(tgt, 1, src)[0], np.triu_indices(tgt, 1, src)[1]] == 0)
    dx = attention.causal_softmax_backward_composite(y, g, scale)
    np.testing.assert_allclose(dx, st.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_causal_attention_composite_path_on_numpy_needs_cupy():
    q = np.ones((2, 3, 4), np.float32)
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        attention.causal_attention(q, q, q, 0.5)


@pytest.mark.parametrize("bad", [None, np.inf, -np.inf, np.nan])
def test_unscale_and_check_composite(bad):
    rng = np.random.default_rng(2)
    grads = [rng.standard_normal(n).astype(np.float32) for n in (3, 0, 17)]
    grads.append(rng.standard_normal((4, 5)).astype(np.float16))
    if bad is not None:
        grads[2][5] = bad
    before = [g.astype(np.float64) for g in grads]
    found = multi_tensor.unscale_and_check_composite(grads + [None], 0.25)
    assert found.shape == () and found.dtype == np.float32
    assert float(found) == (0.0 if bad is None else 1.0)
    for g, b in zip(grads, before):
        finite = np.isfinite(b)
        np.testing.assert_allclose(g[finite].astype(np.float64), b[finite] * 0.25, rtol=1e-3)


def test_cuda_causal_function_on_numpy_with_the_composite_softmax(monkeypatch):
    """CudaCausal (the Function the GPU path of scaled_dot_product_attention uses) and the
    launcher's GEMM composition, run on NumPy with the kernel swapped for its composite twin:
    forward, gradients and double backward equal the CPU attention."""
    import ember
    import ember.nn.functional as F
    from ember.nn.functional import _causal_attention as causal
    from ember.tensor.tensor import Tensor

    monkeypatch.setattr(attention, "causal_softmax_forward", attention.causal_softmax_composite)
    monkeypatch.setattr(
        attention, "causal_softmax_backward", attention.causal_softmax_backward_composite
    )
    monkeypatch.setenv("EMBER_CUDA_FLASH", "0")
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal((2, 3, 9, 8)).astype(np.float32) for _ in range(3)]
    g = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    results = []
    for fused in (True, False):
        ts = [Tensor(a.copy(), requires_grad=True) for a in arrays]
        if fused:
            out = causal.CudaCausal(8**-0.5).apply(*ts)
        else:
            out = F.scaled_dot_product_attention(*ts, is_causal=True)
        grads = ember.autograd.grad(out, ts, Tensor(g), create_graph=True)
        second = ember.autograd.grad(sum((gr * gr).sum() for gr in grads), ts)
        results.append([out.data] + [x.data for x in grads] + [x.data for x in second])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    ts = [Tensor(a.copy(), requires_grad=True) for a in arrays]
    causal.CudaCausal(8**-0.5).apply(*ts).backward(Tensor(g))  # the raw-array backward
    for t, ref in zip(ts, results[1][1:4]):
        np.testing.assert_allclose(t.grad.data, ref, rtol=1e-4, atol=1e-5)


def test_cuda_ok_is_false_on_numpy_and_when_kernels_are_off(monkeypatch):
    from ember.nn.functional import _causal_attention as causal

    q = np.zeros((2, 4, 8), np.float32)
    assert not causal.cuda_ok(q, q, q)
    monkeypatch.setenv("EMBER_CUDA_KERNELS", "0")
    assert not causal.cuda_ok(q, q, q)
