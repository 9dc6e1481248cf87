"""The fused exact-GELU loop (ember/cpu/_gelu_kernels.py) against the NumPy blocks it replaces
(its oracle) and torch, on ordinary, huge, tiny and special inputs, on one and two threads."""

from __future__ import annotations

import numpy as np
import pytest

import ember
import ember.nn.functional as F
from ember.cpu import compile as cpu_compile
from ember.cpu import gelu as cpu_gelu
from ember.ops import activation as A
from ember.ops import parallel as P
from tests.oracle import torch

SPECIAL = [0.0, -0.0, 1e-30, -1e-30, 1e-45, 5.0, -5.0, 13.0, -13.0, 13.25, -13.25, 14.0]
SPECIAL += [-14.0, 20.0, -20.0, 1e30, -1e30, 3e38, -3e38, np.inf, -np.inf, np.nan]


def _inputs(n: int) -> np.ndarray:
    rng = np.random.default_rng(n)
    x = (rng.standard_normal(n) * 4).astype(np.float32)
    x[: len(SPECIAL)] = SPECIAL[: min(n, len(SPECIAL))]
    return x


def _gelu(x, threads: int):
    before = P.get_num_threads()
    P.set_num_threads(threads)
    try:
        with np.errstate(all="ignore"):
            return A._gelu_exact_f32(x)
    finally:
        P.set_num_threads(before)


@pytest.mark.parametrize("n", [1, 100, 70_001, 1 << 20])
def test_fused_gelu_matches_the_numpy_blocks_and_torch(n, kernels_on, monkeypatch, count_calls):
    x = _inputs(n)
    calls = count_calls(cpu_compile.load("gelu"), "gelu_exact")
    out, deriv = _gelu(x, 2)
    assert calls, "the fused loop did not run"
    monkeypatch.setenv("EMBER_CPU_KERNELS", "0")
    ref_out, ref_deriv = _gelu(x, 2)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref_out))
    np.testing.assert_array_equal(np.isnan(deriv), np.isnan(ref_deriv))
    fin = np.isfinite(ref_out) & np.isfinite(ref_deriv)
    np.testing.assert_array_equal(out[~fin & ~np.isnan(out)], ref_out[~fin & ~np.isnan(out)])
    # exp2 inlined (a polynomial) against NumPy's: a few units in the last place of Phi, which
    # the cancellation in Phi(-|x|) = 1/2 - r(t) t exp(-x^2/2) / 2 turns into an absolute bound
    bound = 4 * 2.0**-24 * (np.abs(x[fin]) + 1)
    assert (np.abs(out[fin] - ref_out[fin]) <= bound).all()
    assert (np.abs(deriv[fin] - ref_deriv[fin]) <= bound).all()
    assert (out == ref_out).mean() > 0.75  # mostly the same bits
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.gelu(xt)
    yt.sum().backward()
    tf = np.abs(x) < 1e38  # torch's forward overflows to inf at 3e38 (and NaN at inf)
    np.testing.assert_allclose(out[tf], yt.detach().numpy()[tf], rtol=2e-6, atol=2e-6)
    np.testing.assert_array_equal(np.isnan(deriv), np.isnan(xt.grad.numpy()))
    np.testing.assert_allclose(deriv, xt.grad.numpy(), rtol=2e-6, atol=2e-6)


def test_fused_gelu_is_the_same_on_one_and_two_threads(kernels_on):
    x = _inputs(1 << 20)
    one, two = _gelu(x, 1), _gelu(x, 2)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])


def test_gelu_module_uses_the_loop_forward_and_backward(kernels_on, count_calls):
    calls = count_calls(cpu_compile.load("gelu"), "gelu_exact")
    x = np.random.default_rng(1).standard_normal((64, 33)).astype(np.float32)
    xe = ember.tensor(x, requires_grad=True)
    y = F.gelu(xe)
    y.backward(ember.ones_like(y))
    assert len(calls) == 1  # the backward reuses the forward's gelu'
    xt = torch.tensor(x, requires_grad=True)
    torch.nn.functional.gelu(xt).sum().backward()
    yt = torch.nn.functional.gelu(xt).detach().numpy()
    np.testing.assert_allclose(y.detach().numpy(), yt, rtol=2e-6, atol=2e-6)
    np.testing.assert_allclose(xe.grad.numpy(), xt.grad.numpy(), rtol=2e-6, atol=2e-6)


def test_kernels_off_means_no_loop(kernels_off):
    assert cpu_gelu.gelu_exact_block() is None
    assert cpu_compile.load("gelu") is None


@pytest.mark.parametrize(
    "arr, ok",
    [
        (np.zeros(3, np.float32), True),
        (np.zeros(3, np.float64), False),
        (np.zeros(3, np.float16), False),
        (np.ma.masked_array(np.zeros(3, np.float32)), False),
    ],
)
def test_the_loop_takes_plain_float32_arrays_only(arr, ok):
    assert cpu_gelu.supports(arr) is ok


def test_a_kernel_that_fails_to_compile_says_how_to_go_on(kernels_on, monkeypatch):
    import importlib

    def broken(name, *args):
        raise ImportError("no LLVM here")

    monkeypatch.setattr(cpu_compile, "_modules", {})
    monkeypatch.setattr(importlib, "import_module", broken)
    with pytest.raises(RuntimeError, match="gelu kernels with numba failed.*EMBER_CPU_KERNELS=0"):
        cpu_compile.load("gelu")
