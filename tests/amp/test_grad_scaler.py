"""GradScaler against torch.amp.GradScaler("cpu"): the same scripted sequence of finite, inf
and NaN gradients gives the same scale trajectory, the same skipped steps and the same
parameters; errors and state dicts match torch's."""

from __future__ import annotations

import math

import numpy as np
import pytest

import ember
from ember.amp import GradScaler
from ember.amp.grad_scaler import unscale_and_check
from ember.optim import SGD

torch = pytest.importorskip("torch")

INF, NAN = math.inf, math.nan
# per step: the coefficient that makes one gradient entry non-finite (None: all finite), and
# whether the step calls unscale_ itself first (as before gradient clipping)
SCRIPT = [
    (None, False), (None, True), (None, False), (INF, False), (None, False), (None, True),
    (None, False), (None, False), (NAN, True), (-INF, False), (None, False), (None, False),
    (None, False), (None, False), (None, False), (None, True), (None, False), (INF, True),
]  # fmt: skip


def _run_ember(script, **kwargs):
    w = ember.nn.Parameter(ember.tensor(np.linspace(-1, 1, 6, dtype=np.float32)))
    b = ember.nn.Parameter(ember.tensor(np.float32(0.5)))
    opt = SGD([{"params": [w]}, {"params": [b], "lr": 0.05}], lr=0.1)
    scaler = GradScaler("cpu", **kwargs)
    scales, skipped, values = [], [], []
    for k, (bad, unscale_first) in enumerate(script):
        coef = np.full(6, 0.25 + 0.01 * k, np.float32)
        if bad is not None:
            coef[k % 6] = bad
        opt.zero_grad()
        loss = (w * ember.tensor(coef)).sum() + b * 3.0
        scaler.scale(loss).backward()
        if unscale_first:
            scaler.unscale_(opt)
            assert w.grad.data[0] == pytest.approx(coef[0]) or bad is not None
        before = w.data.copy()
        scaler.step(opt)
        skipped.append(bool(np.array_equal(before, w.data, equal_nan=True)))
        scaler.update()
        scales.append(scaler.get_scale())
        values.append((w.data.copy(), float(b.item())))
    return scales, skipped, values, scaler


def _run_torch(script, **kwargs):
    w = torch.nn.Parameter(torch.linspace(-1, 1, 6, dtype=torch.float32))
    b = torch.nn.Parameter(torch.tensor(0.5))
    opt = torch.optim.SGD([{"params": [w]}, {"params": [b], "lr": 0.05}], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", **kwargs)
    scales, skipped, values = [], [], []
    for k, (bad, unscale_first) in enumerate(script):
        coef = np.full(6, 0.25 + 0.01 * k, np.float32)
        if bad is not None:
            coef[k % 6] = bad
        opt.zero_grad()
        loss = (w * torch.from_numpy(coef)).sum() + b * 3.0
        scaler.scale(loss).backward()
        if unscale_first:
            scaler.unscale_(opt)
        before = w.detach().clone()
        scaler.step(opt)
        skipped.append(bool(torch.equal(before, w.detach())))
        scaler.update()
        scales.append(scaler.get_scale())
        values.append((w.detach().numpy().copy(), float(b.item())))
    return scales, skipped, values, scaler


@pytest.mark.parametrize(
    "kwargs",
    [
        {"growth_interval": 3},
        {"init_scale": 1024.0, "growth_factor": 4.0, "backoff_factor": 0.25, "growth_interval": 2},
        {},  # torch's defaults: no growth within the script
    ],
)
def test_scale_trajectory_and_skipped_steps_match_torch(kwargs):
    scales, skipped, values, scaler = _run_ember(SCRIPT, **kwargs)
    t_scales, t_skipped, t_values, t_scaler = _run_torch(SCRIPT, **kwargs)
    assert scales == t_scales
    assert skipped == t_skipped
    assert skipped == [bad is not None for bad, _ in SCRIPT]
    for (w, b), (tw, tb) in zip(values, t_values):
        np.testing.assert_allclose(w, tw, rtol=1e-6, atol=1e-6)  # SGD rounds a bit differently
        assert b == pytest.approx(tb, rel=1e-6)
    assert scaler.state_dict() == t_scaler.state_dict()


def test_defaults_match_torch():
    s, t = GradScaler(), torch.amp.GradScaler("cpu")
    assert s.state_dict() == {**t.state_dict(), "scale": 65536.0}
    assert s.get_scale() == t.get_scale() == 65536.0
    assert s.get_growth_factor() == 2.0 and s.get_backoff_factor() == 0.5
    assert s.get_growth_interval() == 2000 and s.is_enabled()


def _one_param_step(scaler):
    w = ember.nn.Parameter(ember.ones(3))
    opt = SGD([w], lr=0.1)
    scaler.scale((w * 2.0).sum()).backward()
    return w, opt


def test_errors_like_torch():
    scaler = GradScaler("cpu")
    opt = SGD([ember.nn.Parameter(ember.ones(2))], lr=0.1)
    with pytest.raises(AssertionError, match="did not use scaler.scale"):
        scaler.unscale_(opt)
    w, opt = _one_param_step(scaler)
    scaler.unscale_(opt)
    np.testing.assert_allclose(w.grad.data, [2.0, 2.0, 2.0])
    with pytest.raises(RuntimeError, match=r"unscale_\(\) has already been called"):
        scaler.unscale_(opt)
    scaler.step(opt)
    with pytest.raises(RuntimeError, match=r"unscale_\(\) is being called after step\(\)"):
        scaler.unscale_(opt)
    with pytest.raises(RuntimeError, match=r"step\(\) has already been called"):
        scaler.step(opt)
    with pytest.raises(RuntimeError, match="Closure use is not currently supported"):
        scaler.step(opt, closure=lambda: None)
    scaler.update()
    empty = SGD([ember.nn.Parameter(ember.ones(2))], lr=0.1)  # no gradients at all
    with pytest.raises(AssertionError, match="No inf checks were recorded for this optimizer"):
        scaler.step(empty)
    with pytest.raises(ValueError, match="growth factor must be > 1.0"):
        GradScaler(growth_factor=1.0)
    with pytest.raises(ValueError, match="backoff factor must be < 1.0"):
        GradScaler(backoff_factor=1.0)
    with pytest.raises(ValueError, match="device 'cpu' or 'cuda'"):
        GradScaler("tpu")
    half = ember.nn.Parameter(ember.ones(2, dtype=ember.float16))
    half.grad = ember.ones(2, dtype=ember.float16)
    with pytest.raises(ValueError, match="Attempting to unscale FP16 gradients."):
        scaler.unscale_(SGD([half], lr=0.1))


def test_state_dict_round_trip_and_torch_interchange():
    _, _, _, scaler = _run_ember(SCRIPT[:5], growth_interval=3)
    state = scaler.state_dict()
    fresh = GradScaler("cpu")
    fresh.load_state_dict(state)
    assert fresh.state_dict() == state and fresh.get_scale() == scaler.get_scale()
    t = torch.amp.GradScaler("cpu")
    t.load_state_dict(state)  # the same keys and values as torch's
    assert t.state_dict() == state
    with pytest.raises(RuntimeError, match="The source state dict is empty"):
        GradScaler().load_state_dict({})


def test_update_with_new_scale_and_no_growth_past_float32_max():
    scaler = GradScaler(init_scale=2.0**127, growth_interval=1)
    w = ember.nn.Parameter(ember.ones(3))
    opt = SGD([w], lr=0.1)
    scaler.scale((w * 1e-30).sum()).backward()
    scaler.step(opt)
    scaler.update()
    assert scaler.get_scale() == 2.0**127  # doubling would overflow float32: kept
    scaler.update(new_scale=8.0)
    assert scaler.get_scale() == 8.0
    scaler.update(ember.tensor(4.0))
    assert scaler.get_scale() == 4.0


def test_disabled_scaler_is_a_pass_through():
    scaler = GradScaler(enabled=False)
    w = ember.nn.Parameter(ember.ones(3))
    opt = SGD([w], lr=0.5)
    loss = (w * 2.0).sum()
    assert scaler.scale(loss) is loss
    loss.backward()
    scaler.unscale_(opt)
    scaler.step(opt)
    scaler.update()
    np.testing.assert_allclose(w.data, [0.0, 0.0, 0.0])
    assert scaler.get_scale() == 1.0 and scaler.state_dict() == {} and not scaler.is_enabled()


def test_scale_of_lists_and_the_vectorised_unscale():
    scaler = GradScaler(init_scale=4.0)
    a, b = ember.ones(2), ember.ones(3)
    out = scaler.scale([a, (b,)])
    np.testing.assert_allclose(out[0].data, [4.0, 4.0])
    np.testing.assert_allclose(out[1][0].data, [4.0, 4.0, 4.0])
    arrays = [np.full(4, 8.0, np.float32), np.zeros(0, np.float32), np.full(2, 2.0, np.float64)]
    assert not unscale_and_check(arrays, np.float32(0.5))
    np.testing.assert_array_equal(arrays[0], [4.0] * 4)
    assert arrays[0].dtype == np.float32 and arrays[2].dtype == np.float64
    bad = [np.array([1.0, np.nan], np.float32), np.array([2.0], np.float32)]
    assert unscale_and_check(bad, np.float32(0.5))
    assert bad[1][0] == 1.0  # every array is still unscaled, as torch does


def test_gpu_gradients_go_to_the_fused_cuda_kernel(monkeypatch):
    """CuPy gradients are unscaled by ember.cuda.multi_tensor (one launch per dtype); its
    found-inf flag is summed per device. Checked with NumPy stand-ins for the routing."""
    from ember.amp import grad_scaler
    from ember.cuda import multi_tensor

    calls = []

    def fake(arrays, inv_scale):
        calls.append((len(arrays), float(inv_scale)))
        return np.asarray(1.0, np.float32)

    monkeypatch.setattr(multi_tensor, "unscale_and_check_", fake)
    arrays = [np.ones(3, np.float32), np.ones(2, np.float32)]
    assert float(grad_scaler._unscale_device("cuda", arrays, np.float32(0.25))) == 1.0
    assert calls == [(2, 0.25)]
    # float64 (no kernel) and the CPU take the vectorised xp path
    assert grad_scaler._unscale_device("cuda", [np.ones(2)], np.float32(0.5)) == 0.0
    assert grad_scaler._unscale_device("cpu", arrays, np.float32(0.5)) == 0.0
    assert calls == [(2, 0.25)] and arrays[0][0] == 0.5
