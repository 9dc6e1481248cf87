"""The fused layer-norm row loops (ember/cpu/_layernorm_kernels.py) against torch and against
the NumPy blocks they replace, over widths that are and are not multiples of the vector width,
row blocks on two threads, each affine combination and each subset of wanted gradients."""

from __future__ import annotations

import numpy as np
import pytest

import ember
import ember.nn.functional as F
from ember.cpu import compile as cpu_compile
from ember.nn.functional import _layer_norm as N
from ember.ops import parallel as P
from tests.oracle import check_op, rand, torch

TF = torch.nn.functional


@pytest.fixture
def two_threads_small_blocks(monkeypatch):
    before = P.get_num_threads()
    P.set_num_threads(2)
    monkeypatch.setattr(N, "_LN_BLOCK", 37 * 40)  # blocks of 40 rows at d = 37
    yield
    P.set_num_threads(before)


def _layer_norm_grads(x, w, b, g, needs=(True, True, True)):
    xe = ember.tensor(x, requires_grad=needs[0])
    we = None if w is None else ember.tensor(w, requires_grad=needs[1])
    be = None if b is None else ember.tensor(b, requires_grad=needs[2])
    y = F.layer_norm(xe, x.shape[-1:], we, be, eps=1e-5)
    y.backward(ember.tensor(g))
    grads = [None if t is None or t.grad is None else t.grad.numpy() for t in (xe, we, be)]
    return y.detach().numpy(), grads


@pytest.mark.parametrize("shape", [(3, 5, 128), (2049, 37), (7, 2), (4, 300), (1, 16)])
@pytest.mark.parametrize("affine", ["both", "weight", "bias", "none"])
def test_fused_layer_norm_matches_torch(shape, affine, kernels_on, count_calls):
    kernels = cpu_compile.load("layernorm")
    fwd = count_calls(kernels, "layer_norm_forward")
    bwd = count_calls(kernels, "layer_norm_backward")
    d = shape[-1]
    w = rand(d, seed=2) if affine in ("both", "weight") else None
    b = rand(d, seed=3) if affine in ("both", "bias") else None
    args = [rand(*shape, seed=1)] + [a for a in (w, b) if a is not None]

    def call(lib, x, *wb):
        it = iter(wb)
        wt = next(it) if w is not None else None
        bt = next(it) if b is not None else None
        return lib.layer_norm(x, (d,), wt, bt, eps=1e-5)

    check_op(lambda *a: call(F, *a), args, torch_fn=lambda *a: call(TF, *a), atol=1e-5, rtol=1e-4)
    assert fwd and bwd, "the fused loops did not run"


def test_fused_layer_norm_in_row_blocks_on_two_threads(two_threads_small_blocks, kernels_on):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2049, 37)) * 3 + 5).astype(np.float32)
    w, b, g = (rng.standard_normal(s).astype(np.float32) for s in (37, 37, (2049, 37)))
    assert -(-2049 // N._ln_rows(2049, 37)) > 50
    out, grads = _layer_norm_grads(x, w, b, g)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    yt = TF.layer_norm(xt, (37,), wt, bt, eps=1e-5)
    yt.backward(torch.tensor(g))
    np.testing.assert_allclose(out, yt.detach().numpy(), rtol=1e-5, atol=1e-5)
    for mine, theirs in zip(grads, (xt.grad, wt.grad, bt.grad)):
        np.testing.assert_allclose(mine, theirs.numpy(), rtol=1e-4, atol=1e-4)
    again, grads_again = _layer_norm_grads(x, w, b, g)  # deterministic: the same bits
    np.testing.assert_array_equal(out, again)
    for a, c in zip(grads, grads_again):
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize(
    "needs",
    [(True, False, False), (False, True, False), (False, False, True), (False, True, True)],
)
def test_fused_backward_for_each_subset_of_gradients(needs, kernels_on, monkeypatch):
    rng = np.random.default_rng(1)
    x, g = (rng.standard_normal((300, 48)).astype(np.float32) for _ in range(2))
    w, b = (rng.standard_normal(48).astype(np.float32) for _ in range(2))
    out, grads = _layer_norm_grads(x, w, b, g, needs)
    monkeypatch.setenv("EMBER_CPU_KERNELS", "0")
    ref_out, ref_grads = _layer_norm_grads(x, w, b, g, needs)
    np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-6)
    for need, mine, ref in zip(needs, grads, ref_grads):
        assert (mine is None) == (not need)
        if need:
            np.testing.assert_allclose(mine, ref, rtol=1e-4, atol=1e-5)


def test_fused_layer_norm_takes_noncontiguous_and_half_inputs(kernels_on, count_calls):
    calls = count_calls(cpu_compile.load("layernorm"), "layer_norm_forward")
    x = rand(40, 24, seed=4)
    check_op(
        lambda t: F.layer_norm(t, (40,)),
        [x.T.copy()],
        torch_fn=lambda t: TF.layer_norm(t, (40,)),
        noncontiguous=True,
    )
    h = ember.tensor(x.astype(np.float16))
    y = F.layer_norm(h, (24,))
    assert y.dtype == ember.float16
    ref = TF.layer_norm(torch.tensor(x.astype(np.float16)).float(), (24,)).half().numpy()
    np.testing.assert_allclose(y.numpy().astype(np.float32), ref.astype(np.float32), atol=2e-3)
    assert len(calls) == 2


def test_constant_rows_and_large_offsets(kernels_on):
    """A constant row normalises to 0 (variance 0 + eps); a row far from zero keeps its
    precision (mean summed in float64, variance of the centred row): float64 is the oracle
    here, torch's float32 Welford is 0.2% off on the 1e4 row."""
    x = np.full((4, 64), 7.0, np.float32)
    x[1] = np.linspace(1e4, 1e4 + 1, 64, dtype=np.float32)
    x[2, 0] = np.nan
    x[3] = np.random.default_rng(2).standard_normal(64).astype(np.float32)
    y = F.layer_norm(ember.tensor(x), (64,)).numpy()
    ref = TF.layer_norm(torch.tensor(x), (64,)).numpy()
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ref))
    x64 = x.astype(np.float64)
    exact = (x64 - x64.mean(1, keepdims=True)) / np.sqrt(x64.var(1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(y[[0, 1, 3]], exact[[0, 1, 3]], rtol=1e-5, atol=1e-5)


def test_width_one_gives_the_bias_and_zero_gradient(kernels_on):
    """d = 1: xhat is exactly 0, so out = b and dx = 0 (torch returns rounding noise there)."""
    x = rand(7, 1, seed=5)
    w, b = np.array([1.5], np.float32), np.array([0.25], np.float32)
    g = rand(7, 1, seed=6)
    out, (dx, dw, db) = _layer_norm_grads(x, w, b, g)
    np.testing.assert_array_equal(out, np.full((7, 1), 0.25, np.float32))
    np.testing.assert_array_equal(dx, np.zeros((7, 1), np.float32))
    np.testing.assert_array_equal(dw, [0.0])
    np.testing.assert_allclose(db, [g.sum()], rtol=1e-6)
