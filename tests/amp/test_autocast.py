"""ember.autocast's behaviour: regions, nesting, the decorator, the cast cache, gradients back
to float32 parameters (values against torch.autocast), and the half-precision matmul that
emulates tensor cores on the CPU."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import ember
import ember.nn as nn
import ember.nn.functional as F
from ember.amp import autocast, get_autocast_dtype, is_autocast_enabled
from ember.autograd import autocast_state

torch = pytest.importorskip("torch")


def test_context_manager_decorator_and_nesting():
    x, w = ember.randn(2, 3), ember.randn(3, 4)
    assert not is_autocast_enabled("cpu")
    with ember.autocast("cpu", dtype=ember.float16) as ctx:
        assert isinstance(ctx, autocast) and is_autocast_enabled("cpu")
        assert get_autocast_dtype("cpu") == ember.float16
        assert (x @ w).dtype == ember.float16
        with autocast("cpu", dtype=ember.bfloat16):
            assert (x @ w).dtype == ember.bfloat16
            with autocast("cpu", enabled=False):
                assert (x @ w).dtype == ember.float32
            assert (x @ w).dtype == ember.bfloat16
        assert (x @ w).dtype == ember.float16
    assert not is_autocast_enabled("cpu") and (x @ w).dtype == ember.float32

    @ember.autocast("cpu", dtype=ember.bfloat16)
    def f(a, b):
        return a @ b

    assert f(x, w).dtype == ember.bfloat16
    assert (x @ w).dtype == ember.float32


def test_state_is_restored_after_an_exception_and_is_per_thread():
    with pytest.raises(ValueError, match="boom"):
        with autocast("cpu"):
            raise ValueError("boom")
    assert not is_autocast_enabled("cpu") and not autocast_state.state.enabled
    seen = []
    with autocast("cpu"):
        t = threading.Thread(target=lambda: seen.append(is_autocast_enabled("cpu")))
        t.start()
        t.join()
    assert seen == [False]


def test_defaults_and_errors():
    assert autocast("cpu").fast_dtype == ember.bfloat16  # torch's defaults
    with pytest.raises(ValueError, match="device_type 'cpu' or 'cuda', got 'tpu'"):
        autocast("tpu")
    with pytest.raises(ValueError, match="expected ember.float16 or ember.bfloat16"):
        autocast("cpu", dtype=ember.float32)
    with pytest.raises(TypeError, match="enabled to be a bool"):
        autocast("cpu", enabled="yes")


def test_cuda_autocast_does_not_touch_cpu_tensors():
    x = ember.randn(2, 3)
    with pytest.warns(UserWarning, match="CUDA is not available"):
        ctx = autocast("cuda")
    with ctx:
        assert (x @ x.t()).dtype == ember.float32


def test_float64_is_never_cast():
    a = ember.randn(3, 3, dtype=ember.float64)
    with autocast("cpu", dtype=ember.float16):
        assert (a @ a).dtype == ember.float64
        assert F.softmax(a, -1).dtype == ember.float64


def test_parameters_keep_their_dtype_and_get_float32_gradients_like_torch():
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((16, 12)).astype(np.float32)
    y_np = rng.integers(0, 5, 16)
    model = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 5))
    ref = torch.nn.Sequential(torch.nn.Linear(12, 32), torch.nn.ReLU(), torch.nn.Linear(32, 5))
    with torch.no_grad():
        for p, q in zip(model.parameters(), ref.parameters()):
            q.copy_(torch.from_numpy(p.data.copy()))
    for low, tlow in ((ember.bfloat16, torch.bfloat16), (ember.float16, torch.float16)):
        model.zero_grad()
        ref.zero_grad()
        with autocast("cpu", dtype=low):
            logits = model(ember.tensor(x_np))
            loss = F.cross_entropy(logits, ember.tensor(y_np))
        with torch.autocast("cpu", dtype=tlow):
            tlogits = ref(torch.from_numpy(x_np))
            tloss = torch.nn.functional.cross_entropy(tlogits, torch.from_numpy(y_np))
        assert logits.dtype == low and loss.dtype == ember.float32
        loss.backward()
        tloss.backward()
        tol = 2e-2 if low is ember.bfloat16 else 2e-3
        np.testing.assert_allclose(float(loss.item()), float(tloss.item()), rtol=tol)
        for p, q in zip(model.parameters(), ref.parameters()):
            assert p.dtype == ember.float32 and p.grad.dtype == ember.float32
            np.testing.assert_allclose(p.grad.data, q.grad.numpy(), atol=tol, rtol=tol * 5)


def test_cast_cache_casts_a_weight_once_per_region():
    w = nn.Parameter(ember.randn(4, 4))
    x = ember.randn(2, 4)
    cache = autocast_state.state.cache
    with autocast("cpu", dtype=ember.float16):
        a = x @ w
        b = (x * 2) @ w
        assert len(cache) == 1
        cast = next(iter(cache.values()))[2]
        # both products consume the same cast node
        assert a.grad_fn.next_edges[1][0] is b.grad_fn.next_edges[1][0] is cast.grad_fn
        with autocast("cpu", dtype=ember.float16):
            x @ w
        assert len(cache) == 1  # an inner region's exit keeps the outer region's cache
        with ember.no_grad():  # casts made without grad are not cached
            x @ nn.Parameter(ember.randn(4, 4))
        h = x @ w  # a non-leaf is not cached
        h @ (h.t() @ h)
        assert len(cache) == 1
        with ember.no_grad():
            w.mul_(2.0)  # an in-place change invalidates the entry
        c = x @ w
        assert c.grad_fn.next_edges[1][0] is not cast.grad_fn
        np.testing.assert_allclose(c.data, (x.data @ w.data).astype(np.float16), rtol=1e-2)
    assert len(cache) == 0  # the outermost exit clears it
    (a.sum() + b.sum()).backward()
    np.testing.assert_allclose(w.grad.data, np.repeat(3 * x.data.sum(0)[:, None], 4, 1), rtol=1e-2)


def test_cache_disabled():
    w = nn.Parameter(ember.randn(4, 4))
    with autocast("cpu", cache_enabled=False):
        ember.randn(2, 4) @ w
        assert len(autocast_state.state.cache) == 0


def test_backward_inside_the_region_runs_without_casts():
    x = ember.randn(3, 4, requires_grad=True)
    w = nn.Parameter(ember.randn(4, 5))
    with autocast("cpu", dtype=ember.float16):
        out = (x @ w).float()
        out.sum().backward()
    assert x.grad.dtype == ember.float32 and w.grad.dtype == ember.float32
    np.testing.assert_allclose(w.grad.data, np.repeat(x.data.sum(0)[:, None], 5, 1), rtol=1e-2)


def test_double_backward_through_the_casts():
    x = ember.randn(3, 4, requires_grad=True)
    w = nn.Parameter(ember.randn(4, 2))
    with autocast("cpu", dtype=ember.bfloat16):
        y = ((x @ w).float() ** 2).sum()
    (gx,) = ember.autograd.grad(y, x, create_graph=True)
    assert gx.dtype == ember.float32
    gx.sum().backward()
    assert w.grad is not None and w.grad.dtype == ember.float32


@pytest.mark.parametrize("low", [np.float16, "bfloat16"])
def test_half_matmul_emulates_tensor_cores(low):
    """float16/bfloat16 products accumulate in float32 and are rounded once: exactly the
    float32 product of the (already rounded) operands, rounded."""
    low = getattr(ember, low).np if isinstance(low, str) else np.dtype(low)
    rng = np.random.default_rng(1)
    a = rng.standard_normal((2, 33, 70)).astype(low)
    b = rng.standard_normal((70, 20)).astype(low)
    want = (a.astype(np.float32) @ b.astype(np.float32)).astype(low)
    got = (ember.tensor(a) @ ember.tensor(b)).data
    assert got.dtype == low
    np.testing.assert_array_equal(got.astype(np.float32), want.astype(np.float32))
    got2 = F.linear(ember.tensor(a[0]), ember.tensor(np.ascontiguousarray(b.T))).data
    # (another BLAS call: float32 sums in another order, so at most one rounding step apart)
    np.testing.assert_allclose(got2.astype(np.float32), want[0].astype(np.float32), rtol=1e-2)
    assert np.mean(got2.astype(np.float32) == want[0].astype(np.float32)) > 0.95


def test_half_conv_accumulates_in_float32():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float16)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float16)
    xt, wt = ember.tensor(x, requires_grad=True), ember.tensor(w, requires_grad=True)
    y = F.conv2d(xt, wt, padding=1)
    ref = F.conv2d(
        ember.tensor(x.astype(np.float32)), ember.tensor(w.astype(np.float32)), padding=1
    )
    assert y.dtype == ember.float16
    np.testing.assert_allclose(y.data.astype(np.float32), ref.data, rtol=2e-3, atol=2e-3)
    y.float().sum().backward()
    assert xt.grad.dtype == ember.float16 and wt.grad.dtype == ember.float16
    tx = torch.from_numpy(x.astype(np.float32)).requires_grad_()
    tw = torch.from_numpy(w.astype(np.float32)).requires_grad_()
    torch.nn.functional.conv2d(tx, tw, padding=1).sum().backward()
    np.testing.assert_allclose(
        wt.grad.data.astype(np.float32), tw.grad.numpy(), rtol=5e-3, atol=5e-2
    )


def test_ember_autocast_is_lazy():
    """``ember.autocast`` without importing ember.amp (or the trainer) at ``import ember``."""
    import subprocess
    import sys

    code = (
        "import sys, ember; assert 'ember.amp' not in sys.modules; "
        "a = ember.autocast; assert a is sys.modules['ember.amp.autocast'].autocast; "
        "assert ember.amp.GradScaler().get_scale() == 65536.0"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", ["float16", "bfloat16"])
def test_half_sums_and_means_accumulate_in_float32_like_torch(name):
    """Large low-precision reductions (what autocast leaves in the low dtype, e.g. mean)."""
    arr = np.full((4, 25000), 0.1, np.float32)
    t = ember.tensor(arr).to(getattr(ember, name))
    ref = torch.from_numpy(arr).to(getattr(torch, name))
    for got, want in (
        (t.mean(), ref.mean()),
        (t.sum(dtype=t.dtype), ref.sum(dtype=ref.dtype)),
        (t.mean(1), ref.mean(1)),
    ):
        assert got.dtype == t.dtype
        np.testing.assert_array_equal(got.float().data, want.float().numpy())
