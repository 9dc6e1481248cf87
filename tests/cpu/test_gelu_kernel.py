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


def _threads(fn, threads: int):
    before = P.get_num_threads()
    P.set_num_threads(threads)
    try:
        with np.errstate(all="ignore"):
            return fn()
    finally:
        P.set_num_threads(before)


def _fused(x, threads: int):
    """(gelu(x), gelu'(x)) from ember/cpu's loops: the backward loop with g = 1."""
    forward, backward = cpu_gelu.gelu_exact()
    ones = np.ones_like(x)
    return _threads(
        lambda: (A.pointwise_loop(forward, [x]), A.pointwise_loop(backward, [ones, x])), threads
    )


def _numpy_blocks(x, threads: int):
    return _threads(lambda: A._gelu_exact_f32(x), threads)


@pytest.mark.parametrize("n", [1, 100, 70_001, 1 << 20])
def test_fused_gelu_matches_the_numpy_blocks_and_torch(n, kernels_on):
    x = _inputs(n)
    out, deriv = _fused(x, 2)
    ref_out, ref_deriv = _numpy_blocks(x, 2)
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
    one, two = _fused(x, 1), _fused(x, 2)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_gelu_module_uses_the_loops_forward_and_backward(dtype, kernels_on, count_calls):
    kernels = cpu_compile.load("gelu")
    forward = count_calls(kernels, "gelu_exact")
    backward = count_calls(kernels, "gelu_exact_grad")
    x = (np.random.default_rng(1).standard_normal((640, 513)) * 3).astype(dtype)
    xe = ember.tensor(x, requires_grad=True)
    y = F.gelu(xe)
    g = np.random.default_rng(2).standard_normal(x.shape).astype(dtype)
    y.backward(ember.tensor(g))
    assert forward and backward, "the fused loops did not run"
    xt = torch.tensor(x.astype(np.float32), requires_grad=True)
    yt = torch.nn.functional.gelu(xt)
    yt.backward(torch.tensor(g.astype(np.float32)))
    tol = 2e-6 if dtype == np.float32 else 2e-3
    ref_y = yt.detach().numpy().astype(dtype).astype(np.float32)
    ref_g = xt.grad.numpy().astype(dtype).astype(np.float32)
    np.testing.assert_allclose(y.detach().numpy().astype(np.float32), ref_y, rtol=tol, atol=tol)
    np.testing.assert_allclose(xe.grad.numpy().astype(np.float32), ref_g, rtol=tol, atol=tol)


def test_kernels_switched_off_between_forward_and_backward(kernels_on, monkeypatch):
    """The forward kept no gelu'(x) (the loop recomputes it): the NumPy backward rebuilds it."""
    x = np.random.default_rng(3).standard_normal((64, 33)).astype(np.float32)
    xe = ember.tensor(x, requires_grad=True)
    y = F.gelu(xe)
    monkeypatch.setenv("EMBER_CPU_KERNELS", "0")
    y.backward(ember.ones_like(y))
    xt = torch.tensor(x, requires_grad=True)
    torch.nn.functional.gelu(xt).sum().backward()
    np.testing.assert_allclose(xe.grad.numpy(), xt.grad.numpy(), rtol=2e-6, atol=2e-6)


def test_double_backward_through_the_loops(kernels_on):
    x = np.random.default_rng(4).standard_normal(50).astype(np.float32)
    xe = ember.tensor(x, requires_grad=True)
    (gx,) = ember.autograd.grad(F.gelu(xe).sum(), xe, create_graph=True)
    (ggx,) = ember.autograd.grad(gx.sum(), xe)
    xt = torch.tensor(x, requires_grad=True)
    (tx,) = torch.autograd.grad(torch.nn.functional.gelu(xt).sum(), xt, create_graph=True)
    (ttx,) = torch.autograd.grad(tx.sum(), xt)
    np.testing.assert_allclose(gx.detach().numpy(), tx.detach().numpy(), rtol=2e-6, atol=2e-6)
    np.testing.assert_allclose(ggx.numpy(), ttx.numpy(), rtol=1e-5, atol=1e-6)


def test_kernels_off_means_no_loop(kernels_off):
    assert cpu_gelu.gelu_exact() is None
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

    calls = []

    def broken(name, *args):
        calls.append(name)
        raise ImportError("no LLVM here")

    monkeypatch.setattr(cpu_compile, "_modules", {})
    monkeypatch.setattr(importlib, "import_module", broken)
    for _ in range(2):  # the same error again, without a second attempt
        with pytest.raises(RuntimeError, match="gelu kernels with numba failed.*KERNELS=0"):
            cpu_compile.load("gelu")
    assert len(calls) == 1


def test_no_writable_cache_compiles_in_memory(kernels_on, monkeypatch):
    """numba's cache=True raises "no locator available" where neither the package folder nor
    the user cache dir is writable (a read-only install): the loops then compile uncached."""
    import importlib
    import sys

    real = importlib.import_module
    calls = []

    def no_locator_first(name, *args):
        if name != "ember.cpu._gelu_kernels":  # numba's own imports while compiling
            return real(name, *args)
        calls.append(name)
        if len(calls) == 1:
            raise RuntimeError(
                f"cannot cache function 'gelu_exact': no locator available for {name}"
            )
        return real(name, *args)

    monkeypatch.setattr(cpu_compile, "_modules", {})
    monkeypatch.setitem(cpu_compile.JIT_OPTIONS, "cache", True)
    monkeypatch.delitem(sys.modules, "ember.cpu._gelu_kernels", raising=False)
    monkeypatch.setattr(importlib, "import_module", no_locator_first)
    module = cpu_compile.load("gelu")
    assert len(calls) >= 2  # the failed import, then the uncached one
    assert cpu_compile.JIT_OPTIONS["cache"] is False
    out = np.empty(3, np.float32)
    module.gelu_exact(np.array([-1.0, 0.0, 1.0], np.float32), out)
    np.testing.assert_allclose(out, [-0.15865526, 0.0, 0.8413447], rtol=1e-6)


def test_loops_are_cached_under_a_hash_of_every_cpu_source(kernels_on, monkeypatch, tmp_path):
    """numba's cache checks only the defining file's stamp; Ember keys the cache directory by
    all of ember/cpu's sources, so an edited helper (``_exp``, ``_rows``) means a fresh cache."""
    from pathlib import Path

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    cpu_compile._sources_hash.cache_clear()
    before = cpu_compile._sources_hash()

    @cpu_compile.jit("float32(float32)", **cpu_compile.JIT_OPTIONS)
    def twice(v):
        return v + v

    assert twice(np.float32(1.5)) == 3.0
    assert list((tmp_path / "ember" / before).rglob("*.nbi")), "nothing cached under the hash"
    real = Path.read_bytes

    def edited(path):
        data = real(path)
        return data + b"# edited" if path.name == "_exp.py" else data

    monkeypatch.setattr(Path, "read_bytes", edited)
    cpu_compile._sources_hash.cache_clear()
    assert cpu_compile._sources_hash() != before
    monkeypatch.undo()
    cpu_compile._sources_hash.cache_clear()


def test_pruning_old_versions_keeps_other_numba_caches(kernels_on, monkeypatch, tmp_path):
    """Only Ember's own folder in $NUMBA_CACHE_DIR is pruned: a user's numba caches beside it
    stay, and the newest _KEEP older versions of Ember's stay too."""
    import os
    import time

    theirs = tmp_path / "their_project"
    theirs.mkdir()
    old = tmp_path / "ember"
    for i in range(cpu_compile._KEEP + 3):
        (old / f"v{i:02d}").mkdir(parents=True)
        os.utime(old / f"v{i:02d}", (time.time() + i, time.time() + i))
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    cpu_compile._sources_hash.cache_clear()
    path = cpu_compile._cache_dir()
    assert theirs.is_dir()
    kept = sorted(p.name for p in old.iterdir())
    assert kept == [f"v{i:02d}" for i in range(3, cpu_compile._KEEP + 3)]
    assert path.startswith(str(old))
    cpu_compile._sources_hash.cache_clear()


def test_families_lists_every_kernel_module():
    """``ember.cpu.FAMILIES`` names exactly the ``_<family>_kernels.py`` modules ``load`` takes."""
    from pathlib import Path

    import ember.cpu

    found = {
        p.name[1 : -len("_kernels.py")]
        for p in Path(ember.cpu.__file__).parent.glob("_*_kernels.py")
    }
    assert set(ember.cpu.FAMILIES) == found
