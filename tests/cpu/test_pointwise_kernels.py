"""ember/cpu's leaky_relu, elu (selu, celu) and quadratic-then-linear (smooth_l1, huber) loops
against the NumPy path (EMBER_CPU_KERNELS=0) and torch: bitwise for leaky_relu and the loss,
within 2 ulp for elu (its expm1 / exp are a polynomial, NumPy's are SIMD libm variants)."""

from __future__ import annotations

import numpy as np
import pytest

import ember
import ember.nn.functional as F
from ember.cpu import _pointwise_kernels as K
from ember.cpu import pointwise as cpu_pointwise
from ember.ops import parallel

torch = pytest.importorskip("torch")

SPECIAL = np.array(
    [0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5, 1e-30, -1e-30]
    + [1e-45, -1e-45, 3e38, -3e38, -16.0, -17.33, -20.0, -30.0, -87.4, -103.0, -104.0, -200.0],
    np.float32,
)
SMALL = 1000
LARGE = cpu_pointwise.MIN_SPLIT + 4097  # split over the threads


def _data(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n, dtype=np.float32) * np.float32(3)
    x[: SPECIAL.size] = SPECIAL
    x[SPECIAL.size : 2 * SPECIAL.size] = rng.permutation(SPECIAL)
    return x.reshape(-1, 8) if n % 8 == 0 else x


def _bits(a) -> np.ndarray:
    return np.ascontiguousarray(a, np.float32).view(np.int32)


def assert_bitwise(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    nan = np.isnan(a)
    np.testing.assert_array_equal(nan, np.isnan(b))
    # NaN payloads follow the operand order of each compiler's code: NaN-ness is enough
    np.testing.assert_array_equal(_bits(np.where(nan, 0, a)), _bits(np.where(nan, 0, b)))


def _ulps(a, b):
    def ordered(v):
        i = _bits(v).astype(np.int64)
        return np.where(i < 0, -(i & 0x7FFFFFFF), i)

    return np.abs(ordered(a) - ordered(b))


def assert_ulps(a, b, ulps: int, signed_zeros: bool = True):
    a, b = np.asarray(a), np.asarray(b)
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    ok = ~np.isnan(a)
    if not signed_zeros:
        ok &= a != 0
    assert _ulps(a[ok], b[ok]).max(initial=0) <= ulps
    np.testing.assert_array_equal(np.signbit(a[ok]), np.signbit(b[ok]))


def _run(call, x, g, monkeypatch, kernels: bool):
    """(output, input gradient) of ``call`` with the CPU kernels on or off."""
    monkeypatch.setenv("EMBER_CPU_KERNELS", "1" if kernels else "0")
    t = ember.tensor(x.copy(), requires_grad=True)
    with np.errstate(over="ignore", invalid="ignore"):  # leaky_relu's NumPy path warns
        out = call(t)
        out.backward(ember.tensor(g))
    return out.data, t.grad.data


def _torch(call, x, g):
    t = torch.from_numpy(x.copy()).requires_grad_()
    out = call(t)
    out.backward(torch.from_numpy(g))
    return out.detach().numpy(), t.grad.numpy()


# ------------------------------------------------------------------ leaky_relu
@pytest.mark.parametrize("n", [SMALL, LARGE])
@pytest.mark.parametrize("slope", [0.01, 0.0, -0.3, 2.0, 1e-40])
def test_leaky_relu_bitwise_numpy_and_torch(monkeypatch, n, slope):
    x, g = _data(n), _data(n, 1)
    on = _run(lambda t: F.leaky_relu(t, slope), x, g, monkeypatch, True)
    off = _run(lambda t: F.leaky_relu(t, slope), x, g, monkeypatch, False)
    ref = _torch(lambda t: torch.nn.functional.leaky_relu(t, slope), x, g)
    for a, b, r in zip(on, off, ref):
        assert_bitwise(a, b)
        assert_bitwise(a, r)


def test_leaky_relu_inplace_and_double_backward(kernels_on):
    x = np.random.default_rng(4).standard_normal(SMALL, dtype=np.float32)
    x[:2] = 0.0, -0.0  # the kink: slope there
    a = ember.tensor(x.copy(), requires_grad=True)
    b = a * 1.0
    F.leaky_relu_(b, -0.5)  # negative slope: backward must see x, not the output
    b.backward(ember.tensor(np.ones_like(x)))
    want = np.where(x > 0, np.float32(1), np.float32(-0.5))
    assert_bitwise(a.grad.data, want)
    a = ember.tensor(x.copy(), requires_grad=True)
    (gx,) = ember.autograd.grad(F.leaky_relu(a, 0.1).sum(), [a], create_graph=True)
    assert_bitwise(gx.data, np.where(x > 0, np.float32(1), np.float32(0.1)))


# ------------------------------------------------------------------------- elu
ELUS = [
    ("elu", lambda t: F.elu(t), lambda t: torch.nn.functional.elu(t)),
    ("elu 0.5", lambda t: F.elu(t, 0.5), lambda t: torch.nn.functional.elu(t, 0.5)),
    ("elu -1", lambda t: F.elu(t, -1.0), lambda t: torch.nn.functional.elu(t, -1.0)),
    ("selu", lambda t: F.selu(t), lambda t: torch.nn.functional.selu(t)),
    ("celu 2", lambda t: F.celu(t, 2.0), lambda t: torch.nn.functional.celu(t, 2.0)),
    ("celu 0.3", lambda t: F.celu(t, 0.3), lambda t: torch.nn.functional.celu(t, 0.3)),
]


@pytest.mark.parametrize("n", [SMALL, LARGE])
@pytest.mark.parametrize("case", ELUS, ids=[c[0] for c in ELUS])
def test_elu_matches_numpy_and_torch(monkeypatch, n, case):
    _, ours, theirs = case
    # a finite gradient: torch multiplies it by the coefficients first (g * 1.76 may overflow)
    x, g = _data(n), np.random.default_rng(1).standard_normal(n, dtype=np.float32)
    g = g.reshape(x.shape)
    on = _run(ours, x, g, monkeypatch, True)
    off = _run(ours, x, g, monkeypatch, False)
    ref = _torch(theirs, x, g)
    for a, b, r in zip(on, off, ref):
        assert_ulps(a, b, 4)  # each side within 2 ulp of the exact value
        # a negative alpha turns elu(-0) into +0 on both Ember paths, torch keeps -0
        assert_ulps(a, r, 4, signed_zeros=case[0] != "elu -1")
    if case[0] != "elu -1":  # elu(-0) = -0
        assert np.signbit(on[0].reshape(-1)[1]) and on[0].reshape(-1)[1] == 0


def test_elu_loop_accuracy_against_float64():
    """The inlined expm1 / exp: within 1 ulp of the correctly rounded value over the whole
    non-positive range, subnormal results included."""
    x = np.concatenate([-np.logspace(-45, 2.1, 1 << 18), [0.0, -0.0, -np.inf]])
    x = x.astype(np.float32)
    one = np.float32(1)
    out = np.empty_like(x)
    K.elu(x, one, one, one, out)
    t = x.astype(np.float64)
    assert_ulps(out, np.expm1(t).astype(np.float32), 1)
    K.elu_grad(np.ones_like(x), x, one, one, one, out)
    assert_ulps(out, np.exp(t).astype(np.float32), 1)


def test_celu_negative_alpha_keeps_numpy(kernels_on, count_calls):
    calls = count_calls(K, "elu")  # launcher reads the module attribute at each call
    x = _data(SMALL)
    t = ember.tensor(x, requires_grad=True)
    F.celu(t, -1.0)
    assert calls == []


# ------------------------------------------------------- smooth_l1 / huber
LOSSES = [
    ("smooth_l1 1", lambda a, b, r: F.smooth_l1_loss(a, b, reduction=r), {}),
    ("smooth_l1 0.3", lambda a, b, r: F.smooth_l1_loss(a, b, reduction=r, beta=0.3), {}),
    ("smooth_l1 0", lambda a, b, r: F.smooth_l1_loss(a, b, reduction=r, beta=0.0), {}),
    ("smooth_l1 tiny", lambda a, b, r: F.smooth_l1_loss(a, b, reduction=r, beta=1e-45), {}),
    ("huber 1", lambda a, b, r: F.huber_loss(a, b, reduction=r), {}),
    ("huber 2.5", lambda a, b, r: F.huber_loss(a, b, reduction=r, delta=2.5), {}),
]
TORCH_LOSSES = {
    "smooth_l1 1": lambda a, b, r: torch.nn.functional.smooth_l1_loss(a, b, reduction=r),
    "smooth_l1 0.3": lambda a, b, r: torch.nn.functional.smooth_l1_loss(
        a, b, reduction=r, beta=0.3
    ),
    "smooth_l1 0": lambda a, b, r: torch.nn.functional.smooth_l1_loss(a, b, reduction=r, beta=0.0),
    "smooth_l1 tiny": lambda a, b, r: torch.nn.functional.smooth_l1_loss(
        a, b, reduction=r, beta=1e-45
    ),
    "huber 1": lambda a, b, r: torch.nn.functional.huber_loss(a, b, reduction=r),
    "huber 2.5": lambda a, b, r: torch.nn.functional.huber_loss(a, b, reduction=r, delta=2.5),
}


def _loss_run(call, x, y, g, reduction, monkeypatch, kernels: bool):
    monkeypatch.setenv("EMBER_CPU_KERNELS", "1" if kernels else "0")
    a, b = ember.tensor(x.copy(), requires_grad=True), ember.tensor(y.copy(), requires_grad=True)
    with np.errstate(over="ignore", invalid="ignore"):  # l1's NumPy gradient warns
        out = call(a, b, reduction)
        out.backward(ember.tensor(g) if reduction == "none" else None)
    return out.data, a.grad.data, b.grad.data


def _loss_torch(name, x, y, g, reduction):
    a = torch.from_numpy(x.copy()).requires_grad_()
    b = torch.from_numpy(y.copy()).requires_grad_()
    out = TORCH_LOSSES[name](a, b, reduction)
    out.backward(torch.from_numpy(g) if reduction == "none" else None)
    return out.detach().numpy(), a.grad.numpy(), b.grad.numpy()


@pytest.mark.parametrize("n", [SMALL, LARGE])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("case", LOSSES, ids=[c[0] for c in LOSSES])
def test_losses_bitwise_numpy_and_torch(monkeypatch, n, reduction, case):
    name, call, _ = case
    x, y, g = _data(n), _data(n, 1), _data(n, 2)
    y.reshape(-1)[-5:] = x.reshape(-1)[-5:]  # d = 0: gradient 0
    y.reshape(-1)[-10:-5] = x.reshape(-1)[-10:-5] - np.float32(1.0)  # d = 1: at the kink
    on = _loss_run(call, x, y, g, reduction, monkeypatch, True)
    off = _loss_run(call, x, y, g, reduction, monkeypatch, False)
    for a, b in zip(on, off):
        assert_bitwise(a, b)
    if reduction == "none":  # torch sums its own way: reductions are compared below
        # within 2 ulp: the NumPy path rounds 0.5 d^2 / beta and d / beta its own way, and
        # the target's gradient is -gx by ember's subtraction (signed zeros differ at d = 0)
        for a, r in zip(on, _loss_torch(name, x, y, g, reduction)):
            np.testing.assert_allclose(a, r, rtol=2.5e-7, atol=0)


def test_losses_finite_against_torch_reductions(kernels_on):
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((2, 5000), dtype=np.float32)
    for name, call, _ in LOSSES:
        for reduction in ("mean", "sum"):
            a, b = ember.tensor(x, requires_grad=True), ember.tensor(y)
            out = call(a, b, reduction)
            out.backward()
            r_out, r_gx, _ = _loss_torch(name, x, y, np.ones_like(x), reduction)
            np.testing.assert_allclose(out.data, r_out, rtol=1e-5)
            np.testing.assert_allclose(a.grad.data, r_gx, rtol=1e-6, atol=0)


# ------------------------------------------------------ threads, counting, fallbacks
CALLS = [
    ("leaky", lambda t: F.leaky_relu(t, 0.2)),
    ("elu", lambda t: F.celu(t, 0.7)),
    ("loss", lambda t: F.huber_loss(t, t.detach() * 0.5, reduction="none", delta=0.8)),
]


@pytest.mark.parametrize("case", CALLS, ids=[c[0] for c in CALLS])
def test_one_and_two_threads_bitwise(monkeypatch, case):
    x, g = _data(LARGE), _data(LARGE, 1)
    before = parallel.get_num_threads()
    try:
        parallel.set_num_threads(1)
        one = _run(case[1], x, g, monkeypatch, True)
        parallel.set_num_threads(2)
        two = _run(case[1], x, g, monkeypatch, True)
    finally:
        parallel.set_num_threads(before)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(_bits(a), _bits(b))


def test_blocks():
    assert cpu_pointwise.blocks(1000, 2) == (1000, 1)
    assert cpu_pointwise.blocks(1 << 21, 1) == (1 << 21, 1)
    block, threads = cpu_pointwise.blocks(1 << 21, 2)
    assert threads == 2 and block == 1 << 19
    assert cpu_pointwise.blocks(cpu_pointwise.MIN_SPLIT, 2)[0] == cpu_pointwise.MIN_SPLIT // 2


def test_the_loops_ran(kernels_on, count_calls):
    names = [
        "leaky_relu",
        "leaky_relu_grad",
        "elu",
        "elu_grad",
        "quadratic_then_linear",
        "quadratic_then_linear_grad",
        "quadratic_then_linear_grad_scalar",
    ]
    calls = {name: count_calls(K, name) for name in names}
    x = _data(SMALL)
    g = ember.tensor(_data(SMALL, 1))
    for fn in (lambda t: F.leaky_relu(t), F.elu, lambda t: F.huber_loss(t, t * 0, "none")):
        t = ember.tensor(x, requires_grad=True)
        fn(t).backward(g)
    t = ember.tensor(x, requires_grad=True)
    F.smooth_l1_loss(t, ember.tensor(np.zeros_like(x)), reduction="sum").backward()  # stride 0
    assert {k: len(v) for k, v in calls.items()} == {
        "leaky_relu": 1,
        "leaky_relu_grad": 1,
        "elu": 1,
        "elu_grad": 1,
        "quadratic_then_linear": 2,
        "quadratic_then_linear_grad": 1,
        "quadratic_then_linear_grad_scalar": 1,
    }


def test_kernels_off_never_loads(kernels_off, count_calls):
    calls = count_calls(K, "leaky_relu")
    t = ember.tensor(_data(SMALL)[8:], requires_grad=True)  # finite
    F.leaky_relu(t).sum().backward()
    assert calls == [] and cpu_pointwise.leaky_relu() is None


@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_other_dtypes_keep_numpy(kernels_on, count_calls, dtype):
    calls = [count_calls(K, n) for n in ("leaky_relu", "elu", "quadratic_then_linear")]
    x = _data(SMALL)[8:].astype(dtype)  # finite
    for fn in (F.leaky_relu, F.elu, lambda t: F.smooth_l1_loss(t, t * 0)):
        fn(ember.tensor(x, requires_grad=True)).sum().backward()
    assert calls == [[], [], []]


def test_non_contiguous_and_0d(kernels_on):
    x = _data(SMALL * 8).reshape(-1, 8)[:, ::2]  # a strided view
    t = ember.tensor(x, requires_grad=True)
    out = F.leaky_relu(t, 0.1)
    assert_bitwise(out.data, np.where(x > 0, x, x * np.float32(0.1)))
    s = ember.tensor(np.float32(-2.0), requires_grad=True)
    out = F.elu(s)
    out.backward()
    assert out.shape == () and abs(float(out.data) - np.expm1(-2.0)) < 1e-6
    assert abs(float(s.grad.data) - np.exp(-2.0)) < 1e-6
