"""The fused CPU Adam step (ember/cpu/_adam_kernels.py) against its oracle, the NumPy kernel of
ember.optim.adam: bitwise the same parameters and state for every option, on the calling
thread and in blocks over two threads, and close to torch.optim.Adam / AdamW."""

from __future__ import annotations

import numpy as np
import pytest

import ember
from ember import nn, optim
from ember.cpu import compile as cpu_compile
from ember.ops import parallel as P
from ember.optim import adam as adam_mod
from ember.optim import foreach

pytest.importorskip("numba")

BIG = (1 << 20) + 5  # above adam_mod.CPU_SPLIT_MIN: blocks over the threads
SHAPES = [(1,), (3, 5), (33,), (BIG,)]
STEPS = 4

CONFIGS = [
    (name, {"lr": 0.01, "weight_decay": wd, "maximize": mx, "amsgrad": ams, "betas": betas})
    for name in ("Adam", "AdamW")
    for wd in (0.0, 0.1)
    for mx in (False, True)
    for ams in (False, True)
    for betas in ((0.9, 0.999), (0.4, 0.99))  # 1 - beta1 > 0.5: lerp_'s other formula
]
IDS = [
    f"{n}-wd{kw['weight_decay']}-max{int(kw['maximize'])}-ams{int(kw['amsgrad'])}-b{kw['betas'][0]}"
    for n, kw in CONFIGS
]


def make_params(shapes, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def make_grads(shapes, steps=STEPS, dtype=np.float32, seed=1):
    """Gradients over eight decades, with exact and negative zeros: every rounding matters."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        gs = []
        for s in shapes:
            g = rng.standard_normal(s) * 10.0 ** rng.uniform(-6, 2, s)
            g.reshape(-1)[::17] = 0.0
            g.reshape(-1)[5::19] = -0.0
            gs.append(g.astype(dtype))
        out.append(gs)
    return out


def ember_run(name, kw, inits, grads, foreach_=False):
    """Parameters and state (``step`` left out) after feeding ``grads``."""
    params = [nn.Parameter(ember.tensor(a.copy())) for a in inits]
    opt = getattr(optim, name)(params, foreach=foreach_, **kw)
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = ember.tensor(g.copy())
        opt.step()
    state = [[t.data.copy() for k, t in opt.state[p].items() if k != "step"] for p in params]
    return [p.data.copy() for p in params], state


@pytest.fixture
def calls(monkeypatch):
    """Count the fused kernel's calls (element counts) and the threaded runs, on two threads."""
    kernels = cpu_compile.load("adam")
    seen = {"sizes": [], "blocks": 0}
    for fname in ("adam_step", "adam_step_amsgrad"):
        fn = getattr(kernels, fname)

        def counting(*args, fn=fn):
            seen["sizes"].append(args[0].size)
            return fn(*args)

        monkeypatch.setattr(kernels, fname, counting)
    run_blocks = adam_mod.run_blocks

    def counting_blocks(*args, **kwargs):
        seen["blocks"] += 1
        return run_blocks(*args, **kwargs)

    monkeypatch.setattr(adam_mod, "run_blocks", counting_blocks)
    monkeypatch.setattr(foreach, "NUM_THREADS", None)
    before = P.get_num_threads()
    P.set_num_threads(2)
    yield seen
    P.set_num_threads(before)


def fused_and_numpy(name, kw, shapes, calls, monkeypatch, foreach_=False, dtype=np.float32):
    inits, grads = make_params(shapes, dtype), make_grads(shapes, dtype=dtype)
    monkeypatch.setenv("EMBER_CPU_KERNELS", "1")
    fused = ember_run(name, kw, inits, grads, foreach_)
    fused_calls = list(calls["sizes"])
    monkeypatch.setenv("EMBER_CPU_KERNELS", "0")
    reference = ember_run(name, kw, inits, grads, foreach_)
    assert len(calls["sizes"]) == len(fused_calls), "the kernel ran while kernels were off"
    return fused, reference, fused_calls, grads


def assert_same_bits(a, b):
    """Equal bit patterns (so -0.0 differs from 0.0); NaNs only need to be NaN in both."""
    assert a.dtype == b.dtype and a.shape == b.shape
    nan = np.isnan(a)
    np.testing.assert_array_equal(nan, np.isnan(b))
    bits = f"u{a.itemsize}"
    np.testing.assert_array_equal(a.view(bits)[~nan], b.view(bits)[~nan])


def assert_bitwise(fused, reference):
    (fp, fs), (rp, rs) = fused, reference
    for a, b in zip(fp, rp):
        assert_same_bits(a, b)
    for sa, sb in zip(fs, rs):
        assert len(sa) == len(sb)
        for a, b in zip(sa, sb):
            assert_same_bits(a, b)


@pytest.mark.parametrize("name,kw", CONFIGS, ids=IDS)
def test_fused_is_bitwise_the_numpy_kernel(name, kw, calls, monkeypatch):
    fused, reference, sizes, _ = fused_and_numpy(name, kw, SHAPES, calls, monkeypatch)
    assert_bitwise(fused, reference)
    # the tiny arrays went whole through the kernel, the big one in blocks on two threads
    small = [int(np.prod(s)) for s in SHAPES[:-1]]
    assert sorted(set(sizes) & set(small)) == sorted(small)
    assert BIG not in sizes and max(sizes) < BIG
    assert calls["blocks"] == STEPS


@pytest.mark.parametrize("name,kw", [CONFIGS[i] for i in (0, 7, 10, 21, 31)])
def test_flat_path_fused_is_bitwise_the_numpy_kernel(name, kw, calls, monkeypatch):
    """foreach=True: one kernel call over the group's flat buffers."""
    shapes = SHAPES[:-1] + [(300, 7)]
    fused, reference, sizes, _ = fused_and_numpy(name, kw, shapes, calls, monkeypatch, True)
    assert_bitwise(fused, reference)
    assert sizes == [sum(int(np.prod(s)) for s in shapes)] * STEPS


@pytest.mark.parametrize("name,kw", CONFIGS, ids=IDS)
def test_fused_matches_torch(name, kw, calls, monkeypatch):
    torch = pytest.importorskip("torch")
    shapes = SHAPES[:-1] + [(257, 129)]
    inits, grads = make_params(shapes), make_grads(shapes)
    monkeypatch.setenv("EMBER_CPU_KERNELS", "1")
    got, state = ember_run(name, kw, inits, grads)
    assert calls["sizes"]
    tparams = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in inits]
    topt = getattr(torch.optim, name)(tparams, foreach=False, **kw)
    for step_grads in grads:
        for p, g in zip(tparams, step_grads):
            p.grad = torch.from_numpy(g.copy())
        topt.step()
    for a, p in zip(got, tparams):
        np.testing.assert_allclose(a, p.detach().numpy(), rtol=1e-6, atol=1e-7)
    # torch's lerp_ and addcmul_ fuse a multiply-add (one rounding where NumPy has two): m
    # differs in the last bits, relatively more where b1 m and (1 - b1) g nearly cancel
    for st, p in zip(state, tparams):
        tst = [t.numpy() for k, t in topt.state[p].items() if k != "step"]
        for a, b in zip(st, tst):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * np.abs(b).max())


def test_other_dtypes_and_strided_arrays_keep_the_numpy_kernel(calls, monkeypatch):
    """float64 and non-contiguous float32 parameters: no fused call, NumPy's results."""
    kw = CONFIGS[3][1]
    fused, reference, sizes, _ = fused_and_numpy(
        "Adam", kw, [(5, 3), (40,)], calls, monkeypatch, dtype=np.float64
    )
    assert sizes == []
    assert_bitwise(fused, reference)

    inits, grads = make_params([(6, 4)]), make_grads([(6, 4)])
    results = []
    for enabled in ("1", "0"):
        monkeypatch.setenv("EMBER_CPU_KERNELS", enabled)
        p = nn.Parameter(ember.tensor(inits[0].copy()))
        p.data = np.asfortranarray(p.data)  # state arrays follow: zeros_like keeps the order
        opt = optim.Adam([p], foreach=False, **kw)
        for (g,) in grads:
            p.grad = ember.tensor(np.asfortranarray(g))
            opt.step()
        results.append(p.data.copy())
    assert calls["sizes"] == []
    assert_same_bits(results[0], results[1])


def test_kernel_off_leaves_the_numpy_kernel_alone(monkeypatch):
    """EMBER_CPU_KERNELS=0: the kernel carries no fused path (run_kernel runs it as before)."""
    p = nn.Parameter(ember.tensor(np.ones(4, np.float32)))
    opt = optim.Adam([p])
    group = opt.param_groups[0]
    monkeypatch.setenv("EMBER_CPU_KERNELS", "0")
    assert not hasattr(opt._make_kernel(group, 1.0, True, np), "run_fused")
    monkeypatch.setenv("EMBER_CPU_KERNELS", "1")
    assert hasattr(opt._make_kernel(group, 1.0, True, np), "run_fused")


@pytest.mark.parametrize("name,kw", [CONFIGS[i] for i in (3, 14, 27)])
def test_special_values_match_the_numpy_kernel(name, kw, calls, monkeypatch):
    """inf, NaN, huge and subnormal gradients: the same NaN/inf pattern and bits (AMSGrad's
    maximum keeps NumPy's NaN propagation from either side)."""
    special = np.array([np.inf, -np.inf, np.nan, 3e38, -3e38, 1e-40, -1e-40, 0.0], np.float32)
    inits = make_params([(64,)])
    grads = make_grads([(64,)])
    grads[1][0][:8] = special
    grads[2][0][8:16] = special[::-1]
    results = []
    for enabled in ("1", "0"):
        monkeypatch.setenv("EMBER_CPU_KERNELS", enabled)
        results.append(ember_run(name, kw, inits, grads))
    assert calls["sizes"] == [64] * STEPS
    assert np.isnan(results[0][0][0]).any()
    assert_bitwise(*results)
