"""The fused softmax / log_softmax row loops (ember/cpu/_softmax_kernels.py) against torch and
against the NumPy path they replace (EMBER_CPU_KERNELS=0): row lengths that are and are not
multiples of the vector width, many rows (the threaded blocks), special values, masked rows,
1 vs 2 threads, strided inputs, and the paths that keep NumPy."""

from __future__ import annotations

import numpy as np
import pytest

import ember
from ember.cpu import compile as cpu_compile
from ember.ops import nn_ops
from ember.ops import parallel as P
from tests.oracle import rand, torch

OPS = ["softmax", "log_softmax"]
SHAPES = [(5, 1), (3, 7), (2, 3, 128), (9, 513), (4, 4096), (300, 513), (64, 4096), (2048, 128)]


def _run(op, x, g, dim=-1):
    t = ember.tensor(x, requires_grad=True)
    y = getattr(t, op)(dim)
    y.backward(ember.tensor(g))
    return y.detach().numpy(), t.grad.numpy()


def _torch(op, x, g, dim=-1):
    t = torch.tensor(x, requires_grad=True)
    y = getattr(t, op)(dim)
    y.backward(torch.tensor(g))
    return y.detach().numpy(), t.grad.numpy()


@pytest.fixture
def loops(kernels_on, count_calls):
    """The call lists of the four loops (kernels on)."""
    kernels = cpu_compile.load("softmax")
    names = ("softmax_forward", "softmax_backward", "log_softmax_forward", "log_softmax_backward")
    return {name: count_calls(kernels, name) for name in names}


@pytest.fixture
def threads():
    before = P.get_num_threads()
    yield P.set_num_threads
    P.set_num_threads(before)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_torch_and_numpy(op, shape, kernels_on, loops, monkeypatch):
    x = rand(*shape, seed=1, low=-8, high=8)
    g = rand(*shape, seed=2)
    y, dx = _run(op, x, g)
    assert loops[f"{op}_forward"] and loops[f"{op}_backward"], "the fused loops did not run"
    ty, tdx = _torch(op, x, g)
    np.testing.assert_allclose(y, ty, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(dx, tdx, rtol=1e-5, atol=1e-6)
    monkeypatch.setenv("EMBER_CPU_KERNELS", "0")
    ny, ndx = _run(op, x, g)
    np.testing.assert_allclose(y, ny, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(dx, ndx, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("n", [1, 7, 128, 513])
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the NumPy path's
def test_special_values_like_numpy(op, n, kernels_on, loops, monkeypatch):
    """-inf entries (masked), an all -inf row (NaN, as torch), +inf, NaN, huge values: the
    same NaN pattern as the NumPy path and torch, and their values elsewhere."""
    rows = []
    for fill in (
        {0: -np.inf},
        {j: -np.inf for j in range(n)},
        {0: np.inf},
        {n - 1: np.nan},
        {0: np.inf, n - 1: np.inf},
        {0: 3e38, n - 1: -3e38},
        {j: -3e38 for j in range(n)},
        {j: 1e30 for j in range(n)},
    ):
        r = rand(n, seed=len(rows), low=-4, high=4)
        for j, v in fill.items():
            r[j] = v
        rows.append(r)
    x = np.stack(rows * 50)  # 400 rows
    g = rand(*x.shape, seed=3)
    y, dx = _run(op, x, g)
    assert loops[f"{op}_forward"] and loops[f"{op}_backward"]
    monkeypatch.setenv("EMBER_CPU_KERNELS", "0")
    ny, ndx = _run(op, x, g)
    ty, tdx = _torch(op, x, g)
    for ours, ref, rtol in ((y, ny, 1e-6), (y, ty, 1e-6), (dx, ndx, 1e-5), (dx, tdx, 1e-5)):
        np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
        np.testing.assert_allclose(ours, ref, rtol=rtol, atol=1e-6)  # NaN == NaN here


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("n", [7, 128, 4096])
def test_thread_count_does_not_change_the_bits(op, n, kernels_on, loops, threads, monkeypatch):
    monkeypatch.setattr(nn_ops, "_BLOCK_ELEMENTS", 4 * n)  # blocks of 4 rows: many blocks
    x = rand((1 << 18) // n + 3, n, seed=4, low=-6, high=6)
    x[0, : n // 2] = -np.inf
    x[1] = -np.inf
    g = rand(*x.shape, seed=5)
    threads(1)
    one = _run(op, x, g)
    threads(2)
    two = _run(op, x, g)
    assert len(loops[f"{op}_forward"]) > 2, "the blocks did not run"
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("op", OPS)
def test_strided_input_and_gradient(op, kernels_on, loops):
    """A transposed input is made contiguous; a broadcast gradient (``sum().backward()``)
    too."""
    x = rand(513, 40, seed=6).T  # (40, 513), rows strided
    t = ember.tensor(x, requires_grad=True)
    y = getattr(t, op)(-1)
    y.sum().backward()
    assert loops[f"{op}_forward"] and loops[f"{op}_backward"]
    tt = torch.tensor(np.ascontiguousarray(x), requires_grad=True)
    ty = getattr(tt, op)(-1)
    ty.sum().backward()
    np.testing.assert_allclose(y.detach().numpy(), ty.detach().numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(t.grad.numpy(), tt.grad.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize(
    "case",
    ["dim0", "float64", "float16", "bfloat16", "empty", "empty_rows", "create_graph"],
)
def test_other_cases_keep_numpy(op, case, kernels_on, loops):
    x = rand(6, 9, seed=7)
    dim = 0 if case == "dim0" else -1
    if case == "empty":
        x = x[:, :0]
    elif case == "empty_rows":
        x = x[:0]
    t = ember.tensor(x, requires_grad=True)
    if case == "float64":
        t = ember.tensor(x.astype(np.float64), requires_grad=True)
    elif case in ("float16", "bfloat16"):
        t = ember.tensor(x, requires_grad=True)
        t = t.half() if case == "float16" else t.bfloat16()
    y = getattr(t, op)(dim)
    if case == "create_graph":  # the Tensor-op backward, whose own backward may use the loops
        (gx,) = ember.autograd.grad((y * y).sum(), [t], create_graph=True)
        assert loops[f"{op}_forward"] and not loops[f"{op}_backward"]
        gx.sum().backward()
        tt = torch.tensor(x, requires_grad=True)
        ty = getattr(tt, op)(dim)
        (tgx,) = torch.autograd.grad((ty * ty).sum(), [tt], create_graph=True)
        tgx.sum().backward()
        np.testing.assert_allclose(gx.detach().numpy(), tgx.detach().numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(t.grad.numpy(), tt.grad.numpy(), rtol=1e-4, atol=1e-5)
        return
    y.sum().backward()
    assert not loops[f"{op}_forward"] and not loops[f"{op}_backward"]


@pytest.mark.parametrize("op", OPS)
def test_dtype_argument_float32_runs_the_loops(op, kernels_on, loops):
    x = np.arange(12, dtype=np.int64).reshape(3, 4)
    e = getattr(ember.tensor(x), op)(-1, dtype=ember.float32)
    t = getattr(torch.tensor(x), op)(-1, dtype=torch.float32)
    assert loops[f"{op}_forward"]
    np.testing.assert_allclose(e.numpy(), t.numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("op", OPS)
def test_kernels_off_keeps_numpy(op, kernels_off):
    x = rand(4, 7, seed=8)
    y, dx = _run(op, x, rand(4, 7, seed=9))
    ty, tdx = _torch(op, x, rand(4, 7, seed=9))
    np.testing.assert_allclose(y, ty, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dx, tdx, rtol=1e-5, atol=1e-6)


def test_a_very_long_row_sums_in_float64_chunks(kernels_on):
    """One float32 sum over an 8M-element row drifted by 1.6e-4 (relative); chunks of 4096
    added in float64 keep softmax at float32 precision."""
    x = (np.random.default_rng(0).standard_normal(1 << 23) * 3).astype(np.float32)
    y = ember.nn.functional.softmax(ember.tensor(x), -1).numpy()
    exact = np.exp(x.astype(np.float64) - x.max())
    exact /= exact.sum()
    assert np.abs(y - exact).max() / exact.max() < 1e-6
