"""The multi-tensor optimizer kernels and the fused GradScaler unscale against their
composites: ember.optim's NumPy kernels (through the optimizers themselves) and
``unscale_and_check_composite``. Needs a GPU with CuPy (marker ``cuda``)."""

from __future__ import annotations

import numpy as np
import pytest

import ember
from ember.cuda import multi_tensor as mt
from ember.tensor.tensor import Tensor
from tests.cuda.kernel_helpers import close, cupy_or_skip, rounded, storage, to_dev, to_host

pytestmark = pytest.mark.cuda

SIZES = (1, 7, 1000, 4099, 65537)


def _rand(n, seed, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(n) * scale).astype(np.float32)


def _cpu_optimizer(cls, kwargs, p0, grads):
    """The reference: the ember optimizer on the CPU (NumPy composite), one step per grad."""
    p = ember.nn.Parameter(Tensor(p0.copy()))
    opt = cls([p], **kwargs)
    for g in grads:
        p.grad = Tensor(g.copy())
        opt.step()
    return p.data, opt.state[p]


ADAM_CASES = [
    (ember.optim.Adam, dict(lr=1e-2)),
    (ember.optim.Adam, dict(lr=1e-2, weight_decay=0.1, amsgrad=True)),
    (ember.optim.Adam, dict(lr=1e-2, maximize=True, betas=(0.8, 0.9), eps=1e-6)),
    (ember.optim.AdamW, dict(lr=1e-2, weight_decay=0.1)),
    (ember.optim.AdamW, dict(lr=1e-3, weight_decay=0.5, amsgrad=True, maximize=True)),
]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("case", range(len(ADAM_CASES)))
def test_adam_kernel_matches_the_cpu_optimizer(n, case):
    cp = cupy_or_skip()
    cls, kw = ADAM_CASES[case]
    p0 = _rand(n, 0)
    grads = [_rand(n, s) for s in (1, 2, 3)]
    ref, state = _cpu_optimizer(cls, kw, p0, grads)
    beta1, beta2 = kw.get("betas", (0.9, 0.999))
    p, m, v = cp.asarray(p0), cp.zeros(n, np.float32), cp.zeros(n, np.float32)
    vmax = cp.zeros(n, np.float32) if kw.get("amsgrad") else None
    for step, g in enumerate(grads, start=1):
        mt.adam_step_(
            p, cp.asarray(g), m, v, step=step, lr=kw["lr"], beta1=beta1, beta2=beta2,
            eps=kw.get("eps", 1e-8), weight_decay=kw.get("weight_decay", 0.0 if cls is
            ember.optim.Adam else 1e-2), decoupled=cls is ember.optim.AdamW,
            maximize=kw.get("maximize", False), max_exp_avg_sq=vmax,
        )  # fmt: skip
    np.testing.assert_allclose(cp.asnumpy(p), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cp.asnumpy(m), state["exp_avg"].data, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(cp.asnumpy(v), state["exp_avg_sq"].data, rtol=1e-5, atol=1e-9)


SGD_CASES = [
    dict(lr=0.1),
    dict(lr=0.1, momentum=0.9),
    dict(lr=0.1, momentum=0.9, dampening=0.3, weight_decay=0.01),
    dict(lr=0.05, momentum=0.9, nesterov=True, maximize=True),
]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("case", range(len(SGD_CASES)))
def test_sgd_kernel_matches_the_cpu_optimizer(n, case):
    cp = cupy_or_skip()
    kw = SGD_CASES[case]
    p0 = _rand(n, 0)
    grads = [_rand(n, s) for s in (1, 2, 3)]
    ref, _ = _cpu_optimizer(ember.optim.SGD, kw, p0, grads)
    p = cp.asarray(p0)
    buf = cp.zeros(n, np.float32) if kw.get("momentum") else None
    for k, g in enumerate(grads):
        mt.sgd_step_(
            p, cp.asarray(g), buf, lr=kw["lr"], momentum=kw.get("momentum", 0.0),
            dampening=kw.get("dampening", 0.0), weight_decay=kw.get("weight_decay", 0.0),
            nesterov=kw.get("nesterov", False), maximize=kw.get("maximize", False), first=k == 0,
        )  # fmt: skip
    np.testing.assert_allclose(cp.asnumpy(p), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("low", ["float16", "bfloat16"])
def test_adam_fp32_master_weights_write_the_low_precision_model(low):
    cp = cupy_or_skip()
    n = 4099
    p0 = _rand(n, 0)
    g = rounded(_rand(n, 1), low)
    ref, _ = _cpu_optimizer(ember.optim.AdamW, dict(lr=1e-2), p0, [g])
    master = cp.asarray(p0)
    model = to_dev(cp, p0, low)
    m, v = cp.zeros(n, np.float32), cp.zeros(n, np.float32)
    mt.adam_step_(
        master, to_dev(cp, g, low), m, v, step=1, lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8,
        weight_decay=1e-2, decoupled=True, model=model,
    )  # fmt: skip
    np.testing.assert_allclose(cp.asnumpy(master), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(to_host(cp, model, low), rounded(cp.asnumpy(master), low))


@pytest.mark.parametrize("low", ["float16", "bfloat16"])
def test_low_precision_params_step_in_place(low):
    cp = cupy_or_skip()
    n = 1003
    p0, g = rounded(_rand(n, 0), low), rounded(_rand(n, 1), low)
    ref, _ = _cpu_optimizer(ember.optim.SGD, dict(lr=0.1, momentum=0.9), p0, [g])
    p, buf = to_dev(cp, p0, low), to_dev(cp, np.zeros(n, np.float32), low)
    mt.sgd_step_(p, to_dev(cp, g, low), buf, lr=0.1, momentum=0.9, first=True)
    close(to_host(cp, p, low), ref, low)


def test_fused_inv_scale_unscales_the_gradient_first():
    cp = cupy_or_skip()
    n = 513
    p0, g = _rand(n, 0), _rand(n, 1)
    ref, _ = _cpu_optimizer(ember.optim.SGD, dict(lr=0.1), p0, [g])
    p = cp.asarray(p0)
    mt.sgd_step_(p, cp.asarray(g * 1024), lr=0.1, inv_scale=cp.asarray(1 / 1024, np.float32))
    np.testing.assert_allclose(cp.asnumpy(p), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bad", [None, np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_unscale_and_check_matches_the_composite(bad, dtype):
    cp = cupy_or_skip()
    sizes = (1, 0, 4099, 7, 65537, 3)
    host = [_rand(n, i, scale=100) for i, n in enumerate(sizes)]
    if bad is not None:
        host[4][65536] = bad  # the very last element of a big one
    dev = [to_dev(cp, h, dtype) for h in host]
    found = mt.unscale_and_check_(dev, cp.asarray(0.125, np.float32))
    assert isinstance(found, cp.ndarray) and found.shape == () and found.dtype == np.float32
    ref_arrays = [storage(h, dtype).copy() for h in host] if dtype != "bfloat16" else None
    if ref_arrays is not None:
        ref_found = mt.unscale_and_check_composite(ref_arrays, 0.125)
        assert float(found) == float(ref_found)
    assert float(found) == (0.0 if bad is None else 1.0)
    for h, d in zip(host, dev):
        finite = np.isfinite(h)
        got = to_host(cp, d, dtype)
        close(got[finite], rounded(h, dtype)[finite] * 0.125, dtype)


def test_unscale_and_check_mixed_dtypes_and_python_scale():
    cp = cupy_or_skip()
    a = cp.asarray(_rand(100, 0))
    b = cp.asarray(_rand(33, 1).astype(np.float16))
    a_host, b_host = cp.asnumpy(a), cp.asnumpy(b)
    found = mt.unscale_and_check_([a, b, None], 0.5)
    assert float(found) == 0.0
    np.testing.assert_array_equal(cp.asnumpy(a), a_host * np.float32(0.5))
    np.testing.assert_array_equal(cp.asnumpy(b), b_host * np.float16(0.5))
    b[3] = np.inf  # the same buffers again: the cached pointer tables
    assert float(mt.unscale_and_check_([a, b], 2.0)) == 1.0
    np.testing.assert_array_equal(cp.asnumpy(a), a_host)


@pytest.mark.parametrize("cls,kw", [
    (ember.optim.AdamW, dict(lr=1e-2, weight_decay=0.1)),
    (ember.optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True)),
])  # fmt: skip
def test_optimizers_take_the_kernel_on_cupy_and_match_the_composite(cls, kw, monkeypatch):
    """The wired path: one flat launch per group with kernels on, the composite with
    EMBER_CUDA_KERNELS=0; both equal the CPU optimizer."""
    cp = cupy_or_skip()
    shapes = [(3, 5), (7,), (64, 33), (1,)]
    host = [_rand(int(np.prod(s)), i).reshape(s) for i, s in enumerate(shapes)]
    grads = [[_rand(h.size, 10 * k + i).reshape(h.shape) for i, h in enumerate(host)]
             for k in range(3)]  # fmt: skip
    results = {}
    for flag in ("1", "0"):
        monkeypatch.setenv("EMBER_CUDA_KERNELS", flag)
        params = [ember.nn.Parameter(Tensor(cp.asarray(h))) for h in host]
        opt = cls(params, **kw)
        for step in grads:
            for p, g in zip(params, step):
                p.grad = Tensor(cp.asarray(g))
            opt.step()
        results[flag] = [cp.asnumpy(p.data) for p in params]
    cpu = [ember.nn.Parameter(Tensor(h.copy())) for h in host]
    opt = cls(cpu, **kw)
    for step in grads:
        for p, g in zip(cpu, step):
            p.grad = Tensor(g.copy())
        opt.step()
    for a, b, c in zip(results["1"], results["0"], cpu):
        np.testing.assert_allclose(a, c.data, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(b, c.data, rtol=1e-5, atol=1e-6)
