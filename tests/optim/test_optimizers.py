"""Optimizers against torch.optim: 50 steps of a small two-layer model, every option, the
per-parameter and the flat (foreach) path, state-dict round trips through ember.save."""

from __future__ import annotations

import numpy as np
import pytest

import ember
from ember import nn, optim

torch = pytest.importorskip("torch")

SHAPES = [(6, 4), (6,), (3, 6), (3,)]  # two Linear-like layers: weight, bias, weight, bias
STEPS = 50

CONFIGS = [
    ("SGD", {"lr": 0.05}),
    ("SGD", {"lr": 0.05, "momentum": 0.9}),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "dampening": 0.3}),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    ("SGD", {"lr": 0.05, "weight_decay": 0.1}),
    ("SGD", {"lr": 0.05, "momentum": 0.8, "weight_decay": 0.1, "nesterov": True}),
    ("SGD", {"lr": 0.01, "momentum": 0.9, "maximize": True}),
    ("SGD", {"lr": 0.01, "weight_decay": 0.1, "maximize": True}),
    ("Adam", {"lr": 0.01}),
    ("Adam", {"lr": 0.01, "betas": (0.8, 0.95), "eps": 1e-6}),
    ("Adam", {"lr": 0.01, "weight_decay": 0.1}),
    ("Adam", {"lr": 0.01, "amsgrad": True}),
    ("Adam", {"lr": 0.01, "amsgrad": True, "weight_decay": 0.05, "maximize": True}),
    ("Adam", {"lr": 0.01, "maximize": True}),
    ("Adam", {"lr": 0.01, "betas": (0.6, 0.9)}),  # 1 - beta1 > 0.5: the other lerp formula
    ("Adam", {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    ("AdamW", {"lr": 0.01}),
    ("AdamW", {"lr": 0.01, "weight_decay": 0.2}),
    ("AdamW", {"lr": 0.01, "amsgrad": True, "weight_decay": 0.1}),
    ("AdamW", {"lr": 0.01, "maximize": True, "betas": (0.85, 0.99)}),
    ("RMSprop", {"lr": 0.01}),
    ("RMSprop", {"lr": 0.01, "alpha": 0.9, "eps": 1e-6}),
    ("RMSprop", {"lr": 0.01, "centered": True}),
    ("RMSprop", {"lr": 0.01, "momentum": 0.9}),
    ("RMSprop", {"lr": 0.01, "momentum": 0.5, "centered": True, "weight_decay": 0.1}),
    ("RMSprop", {"lr": 0.01, "weight_decay": 0.1}),
    ("RMSprop", {"lr": 0.005, "maximize": True, "centered": True}),
    ("Adagrad", {"lr": 0.05}),
    ("Adagrad", {"lr": 0.05, "lr_decay": 0.01}),
    ("Adagrad", {"lr": 0.05, "weight_decay": 0.1}),
    ("Adagrad", {"lr": 0.05, "initial_accumulator_value": 0.5, "eps": 1e-6}),
    ("Adagrad", {"lr": 0.05, "maximize": True, "lr_decay": 0.05}),
]
IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for name, kw in CONFIGS]


def init_arrays(dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.uniform(-0.5, 0.5, s).astype(dtype) for s in SHAPES]


def data(dtype=np.float32):
    rng = np.random.default_rng(1)
    return rng.normal(size=(8, 4)).astype(dtype), rng.normal(size=(8, 3)).astype(dtype)


def loss_fn(lib, params, x, y):
    w1, b1, w2, b2 = params
    h = lib.tanh(x @ w1.T + b1)
    return ((h @ w2.T + b2 - y) ** 2).mean()


def torch_run(name, kw, dtype=np.float32, steps=STEPS, groups=None, drop=None):
    """torch's trajectory; also returns the gradients it saw at every step, so the ember
    side can be fed the very same ones (float32 gradients of two frameworks differ in the
    last bits, and adaptive optimizers amplify that on near-zero gradients)."""
    params = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in init_arrays(dtype)]
    x, y = (torch.from_numpy(a) for a in data(dtype))
    opt = getattr(torch.optim, name)(groups(params) if groups else params, **kw)
    seen = []
    for i in range(steps):
        opt.zero_grad()
        loss_fn(torch, params, x, y).backward()
        if drop is not None and drop(i):
            params[1].grad = None
        seen.append([None if p.grad is None else p.grad.numpy().copy() for p in params])
        opt.step()
    return [p.detach().numpy() for p in params], seen


def ember_params(dtype=np.float32):
    return [nn.Parameter(ember.tensor(a.copy())) for a in init_arrays(dtype)]


def ember_steps(opt, params, steps, dtype=np.float32):
    """Steps with ember's own forward and backward."""
    x, y = (ember.tensor(a) for a in data(dtype))
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(ember, params, x, y).backward()
        opt.step()


def fed_steps(opt, params, grads):
    """Steps on the given gradient sequence."""
    for step_grads in grads:
        opt.zero_grad()
        for p, g in zip(params, step_grads):
            p.grad = None if g is None else ember.tensor(g.copy())
        opt.step()


def ember_run(name, kw, foreach, grads=None, dtype=np.float32, groups=None):
    params = ember_params(dtype)
    opt = getattr(optim, name)(groups(params) if groups else params, foreach=foreach, **kw)
    if grads is None:
        ember_steps(opt, params, STEPS, dtype)
    else:
        fed_steps(opt, params, grads)
    return [p.data.copy() for p in params], opt, params


@pytest.mark.parametrize("name,kw", CONFIGS, ids=IDS)
def test_matches_torch_both_paths(name, kw):
    expected, grads = torch_run(name, kw)
    per_param, _, _ = ember_run(name, kw, foreach=False, grads=grads)
    flat, _, flat_params = ember_run(name, kw, foreach=True, grads=grads)
    assert all(p.data.base is flat_params[0].data.base is not None for p in flat_params)
    for e, a, f in zip(expected, per_param, flat):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(f, a)  # the flat path does the same float ops


@pytest.mark.parametrize("name,kw", CONFIGS, ids=IDS)
def test_end_to_end_float64_matches_torch(name, kw):
    """Ember's own forward and backward drive the optimizer (float64: the two frameworks'
    gradients agree to ~1e-16, so the trajectories stay within 1e-9)."""
    expected, _ = torch_run(name, kw, np.float64)
    got, opt, _ = ember_run(name, kw, foreach=None, dtype=np.float64)
    for e, a in zip(expected, got):
        assert a.dtype == np.float64
        np.testing.assert_allclose(a, e, rtol=1e-9, atol=1e-9)
    for st in opt.state.values():  # state in the parameter dtype, step a float32 scalar
        assert all(v.dtype is ember.float64 for k, v in st.items() if k != "step")


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("name,kw", [CONFIGS[i] for i in (2, 3, 11, 18, 24, 29, 30)])
def test_state_dict_round_trip_mid_run(name, kw, foreach, tmp_path):
    expected, grads = torch_run(name, kw)
    straight, _, _ = ember_run(name, kw, foreach, grads=grads)
    params = ember_params()
    opt = getattr(optim, name)(params, foreach=foreach, **kw)
    fed_steps(opt, params, grads[: STEPS // 2])
    sd = opt.state_dict()
    assert sorted(sd["state"]) == [0, 1, 2, 3]
    assert sd["param_groups"][0]["params"] == [0, 1, 2, 3]
    ember.save(sd, tmp_path / "opt.safetensors")
    loaded = ember.load(tmp_path / "opt.safetensors")
    # a fresh optimizer on the same parameters continues from the file
    opt2 = getattr(optim, name)(params, foreach=foreach, **kw)
    opt2.load_state_dict(loaded)
    for i, st in opt2.state_dict()["state"].items():
        for key, val in st.items():
            ref = sd["state"][i][key]
            assert isinstance(val, ember.Tensor) and val.dtype is ref.dtype
            np.testing.assert_array_equal(val.numpy(), ref.numpy())
            if key != "step":
                assert val.data is not loaded["state"][i][key].data  # copied, not aliased
    fed_steps(opt2, params, grads[STEPS // 2 :])
    for a, b in zip(straight, params):
        np.testing.assert_array_equal(b.data, a)
    for e, p in zip(expected, params):
        np.testing.assert_allclose(p.data, e, rtol=1e-6, atol=1e-6)


def test_state_dict_layout_matches_torch():
    params = ember_params()
    opt = optim.Adam(params, lr=0.01, amsgrad=True)
    ember_steps(opt, params, 2)
    tp = [torch.nn.Parameter(torch.from_numpy(a)) for a in init_arrays()]
    topt = torch.optim.Adam(tp, lr=0.01, amsgrad=True)
    x, y = (torch.from_numpy(a) for a in data())
    for _ in range(2):
        topt.zero_grad()
        loss_fn(torch, tp, x, y).backward()
        topt.step()
    sd, tsd = opt.state_dict(), topt.state_dict()
    assert list(sd["state"][0]) == list(tsd["state"][0])  # same keys, same order
    assert float(sd["state"][0]["step"]) == float(tsd["state"][0]["step"]) == 2.0
    assert sd["state"][0]["step"].dtype is ember.float32 and sd["state"][0]["step"].ndim == 0
    assert set(sd["param_groups"][0]) <= set(tsd["param_groups"][0])
    for key in ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize", "params"):
        assert sd["param_groups"][0][key] == tsd["param_groups"][0][key]


def test_load_casts_state_to_param_dtype():
    params = ember_params()
    opt = optim.RMSprop(params, lr=0.01, momentum=0.9)
    ember_steps(opt, params, 3)
    p64 = ember_params(np.float64)
    opt64 = optim.RMSprop(p64, lr=0.01, momentum=0.9)
    opt64.load_state_dict(opt.state_dict())
    st = opt64.state[p64[0]]
    assert st["square_avg"].dtype is ember.float64 and st["momentum_buffer"].dtype is ember.float64
    assert st["step"].dtype is ember.float32
    ember_steps(opt64, p64, 2, np.float64)


def test_load_state_dict_validates_groups():
    params = ember_params()
    opt = optim.SGD(params, lr=0.1, momentum=0.9)
    sd = opt.state_dict()
    two = optim.SGD([{"params": params[:2]}, {"params": params[2:]}], lr=0.1)
    with pytest.raises(ValueError, match="different number of parameter groups"):
        two.load_state_dict(sd)
    three = optim.SGD(params[:3], lr=0.1)
    with pytest.raises(ValueError, match="doesn't match the size of optimizer's group"):
        three.load_state_dict(sd)


def test_load_state_dict_restores_hyperparameters():
    params = ember_params()
    opt = optim.Adam(params, lr=0.123, betas=(0.7, 0.8))
    sd = opt.state_dict()
    other = optim.Adam(params, lr=1.0)
    other.load_state_dict(sd)
    assert other.param_groups[0]["lr"] == 0.123
    assert other.param_groups[0]["betas"] == (0.7, 0.8)
    assert other.param_groups[0]["params"] == params


def split_groups(params):
    return [{"params": params[:2]}, {"params": params[2:], "lr": 0.002, "weight_decay": 0.1}]


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(
    "name,kw",
    [
        ("SGD", {"lr": 0.05, "momentum": 0.9}),
        ("Adam", {"lr": 0.01}),
        ("RMSprop", {"lr": 0.01}),
        ("Adagrad", {"lr": 0.05}),
        ("AdamW", {"lr": 0.01}),
    ],
)
def test_two_param_groups_with_different_lr(name, kw, foreach):
    expected, grads = torch_run(name, kw, groups=split_groups)
    got, opt, _ = ember_run(name, kw, foreach, grads=grads, groups=split_groups)
    assert opt.param_groups[0]["lr"] == kw["lr"] and opt.param_groups[1]["lr"] == 0.002
    assert opt.param_groups[1]["weight_decay"] == 0.1
    for e, a in zip(expected, got):
        np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-6)


def test_add_param_group_later():
    params = ember_params()
    opt = optim.Adam(params[:2], lr=0.01)
    opt.add_param_group({"params": params[2:], "lr": 0.002})
    assert opt.param_groups[1]["betas"] == (0.9, 0.999)  # defaults filled in
    ember_steps(opt, params, 3)
    assert len(opt.state) == 4


def test_closure_reevaluates_under_grad_and_returns_loss():
    params = ember_params()
    tparams = [torch.nn.Parameter(torch.from_numpy(a)) for a in init_arrays()]
    opt = optim.SGD(params, lr=0.1, momentum=0.9)
    topt = torch.optim.SGD(tparams, lr=0.1, momentum=0.9)
    x, y = (ember.tensor(a) for a in data())
    tx, ty = (torch.from_numpy(a) for a in data())
    calls = []

    def closure():
        calls.append(ember.is_grad_enabled())
        opt.zero_grad()
        loss = loss_fn(ember, params, x, y)
        loss.backward()
        return loss

    def tclosure():
        topt.zero_grad()
        loss = loss_fn(torch, tparams, tx, ty)
        loss.backward()
        return loss

    for _ in range(5):
        with ember.no_grad():
            loss = opt.step(closure)
        tloss = topt.step(tclosure)
        assert abs(loss.item() - tloss.item()) < 1e-6
    assert calls == [True] * 5
    for p, t in zip(params, tparams):
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-6, atol=1e-6)
    assert opt.step() is None  # no closure: no loss


@pytest.mark.parametrize(
    "name,kw", [("Adam", {"lr": 0.01}), ("SGD", {"lr": 0.05, "momentum": 0.9})]
)
def test_zero_grad_modes(name, kw):
    params = ember_params()
    opt = getattr(optim, name)(params, foreach=True, **kw)
    x, y = (ember.tensor(a) for a in data())
    loss_fn(ember, params, x, y).backward()
    opt.zero_grad()
    assert all(p.grad is None for p in params)
    # set_to_none=False zeroes the same grad tensors in place; the trajectory is unchanged
    for _ in range(10):
        opt.zero_grad(set_to_none=False)
        loss_fn(ember, params, x, y).backward()
        opt.step()
    grads = [(p.grad, p.grad.data) for p in params]
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is g and p.grad.data is a and not a.any() for p, (g, a) in zip(params, grads))
    reference = ember_params()
    ember_steps(getattr(optim, name)(reference, foreach=False, **kw), reference, 10)
    for a, p in zip((r.data for r in reference), params):
        np.testing.assert_array_equal(p.data, a)


@pytest.mark.parametrize("foreach", [False, True])
def test_params_without_grad_are_skipped_like_torch(foreach):
    """Some steps leave one parameter without a gradient: its state does not advance (the
    flat path falls back to per-parameter updates once the step counts differ)."""
    expected, grads = torch_run("Adam", {"lr": 0.01}, drop=lambda i: 5 <= i < 8)
    got, opt, params = ember_run("Adam", {"lr": 0.01}, foreach, grads=grads)
    assert float(opt.state[params[1]]["step"]) == STEPS - 3
    assert float(opt.state[params[0]]["step"]) == STEPS
    for e, a in zip(expected, got):
        np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name,kw", CONFIGS, ids=IDS)
def test_flat_path_over_thread_blocks_equals_per_parameter_and_keeps_grads(name, kw):
    """Parameters large enough for threaded blocks: the flat path reads each block's
    gradient in place (a block inside one parameter) or gathered (a block spanning several);
    the result is bitwise the per-parameter one, and no gradient is written to."""
    from ember.ops.parallel import get_num_threads, set_num_threads

    rng = np.random.default_rng(3)
    sizes = (150_001, 7, 90_000, 0, 5)
    init = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    grads = [[rng.standard_normal(n).astype(np.float32) for n in sizes] for _ in range(3)]
    before = get_num_threads()
    set_num_threads(2)
    try:
        results = []
        for foreach in (False, True):
            params = [nn.Parameter(ember.tensor(a.copy())) for a in init]
            opt = getattr(optim, name)(params, foreach=foreach, **kw)
            fed_steps(opt, params, grads)
            for p, g in zip(params, grads[-1]):
                np.testing.assert_array_equal(p.grad.data, g)  # read, never written
            results.append([p.data.copy() for p in params])
    finally:
        set_num_threads(before)
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_flat_path_survives_swapped_param_data():
    """Replacing p.data (Module.to, vector_to_parameters...) rebuilds the flat layout."""
    expected, grads = torch_run("Adam", {"lr": 0.01})
    params = ember_params()
    opt = optim.Adam(params, lr=0.01, foreach=True)
    fed_steps(opt, params, grads[:3])
    params[2].data = params[2].data.copy()
    fed_steps(opt, params, grads[3:])
    for e, p in zip(expected, params):
        np.testing.assert_allclose(p.data, e, rtol=1e-6, atol=1e-6)


def test_flat_path_bumps_versions_and_keeps_state_views():
    params = ember_params()
    opt = optim.Adam(params, lr=0.01, foreach=True)
    versions = [p._version for p in params]
    ember_steps(opt, params, 2)
    assert all(p._version == v + 2 for p, v in zip(params, versions))
    sd = opt.state_dict()
    exp_avg = sd["state"][0]["exp_avg"].numpy().copy()
    ember_steps(opt, params, 1)
    assert not np.array_equal(sd["state"][0]["exp_avg"].numpy(), exp_avg)  # live, as torch


def test_in_place_update_keeps_tensor_objects():
    params = ember_params()
    opt = optim.SGD(params, lr=0.1, momentum=0.9, foreach=False)
    arrays = [p.data for p in params]
    ember_steps(opt, params, 3)
    assert all(p.data is a for p, a in zip(params, arrays))  # per-param path: no new arrays


def test_default_foreach_choice():
    small = [nn.Parameter(ember.zeros(10)) for _ in range(5)]
    big = [nn.Parameter(ember.zeros(400, 400)) for _ in range(2)]
    assert optim.Adam(small)._want_flat(optim.Adam(small).param_groups[0], small)
    opt = optim.Adam(big)
    assert not opt._want_flat(opt.param_groups[0], big)
    opt = optim.Adam(big, foreach=True)
    assert opt._want_flat(opt.param_groups[0], big)


def test_step_hooks_and_repr():
    params = ember_params()
    opt = optim.SGD(params, lr=0.1)
    seen = []
    h1 = opt.register_step_pre_hook(lambda o, a, k: seen.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: seen.append("post"))
    ember_steps(opt, params, 1)
    h1.remove()
    ember_steps(opt, params, 1)
    assert seen == ["pre", "post", "post"]
    text = repr(opt)
    assert text.startswith("SGD (\nParameter Group 0\n    dampening: 0\n") and "lr: 0.1" in text


def test_custom_subclass_step_gets_hooks():
    class Halve(optim.Optimizer):
        def __init__(self, params):
            super().__init__(params, {"lr": 0.5})

        def step(self, closure=None):
            for g in self.param_groups:
                for p in g["params"]:
                    p.data *= g["lr"]

    p = nn.Parameter(ember.ones(3))
    opt = Halve([p])
    seen = []
    opt.register_step_post_hook(lambda o, a, k: seen.append(1))
    opt.step()
    assert seen == [1] and p.data.tolist() == [0.5] * 3
    with pytest.raises(NotImplementedError):
        optim.Optimizer([p], {}).step()


@pytest.mark.parametrize("cls", ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad"])
def test_invalid_learning_rate(cls):
    with pytest.raises(ValueError, match="Invalid learning rate: -0.1"):
        getattr(optim, cls)(ember_params(), lr=-0.1)


@pytest.mark.parametrize(
    "kw,msg",
    [
        ({"betas": (1.0, 0.999)}, "Invalid beta parameter at index 0: 1.0"),
        ({"betas": (0.9, -0.1)}, "Invalid beta parameter at index 1: -0.1"),
        ({"eps": -1.0}, "Invalid epsilon value: -1.0"),
        ({"weight_decay": -1.0}, "Invalid weight_decay value: -1.0"),
    ],
)
def test_invalid_adam_arguments(kw, msg):
    for cls in (optim.Adam, optim.AdamW):
        with pytest.raises(ValueError, match=msg.replace("(", r"\(")):
            cls(ember_params(), **kw)


def test_invalid_other_arguments():
    with pytest.raises(ValueError, match="Nesterov momentum requires a momentum and zero "):
        optim.SGD(ember_params(), lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="Invalid momentum value: -0.5"):
        optim.SGD(ember_params(), momentum=-0.5)
    with pytest.raises(ValueError, match="Invalid alpha value: -1"):
        optim.RMSprop(ember_params(), alpha=-1)
    with pytest.raises(ValueError, match="Invalid lr_decay value: -1"):
        optim.Adagrad(ember_params(), lr_decay=-1)
    with pytest.raises(ValueError, match="Invalid initial_accumulator_value value: -1"):
        optim.Adagrad(ember_params(), initial_accumulator_value=-1)


def test_invalid_params():
    p = ember_params()
    with pytest.raises(ValueError, match="duplicate parameters"):
        optim.SGD([p[0], p[1], p[0]], lr=0.1)
    opt = optim.SGD(p[:2], lr=0.1)
    with pytest.raises(ValueError, match="some parameters appear in more than one parameter "):
        opt.add_param_group({"params": [p[1], p[2]]})
    with pytest.raises(ValueError, match="optimizer got an empty parameter list"):
        optim.Adam([])
    with pytest.raises(TypeError, match="should be an iterable of Tensors or dicts, but got "):
        optim.Adam(p[0])
    with pytest.raises(TypeError, match="ordered collections"):
        optim.Adam({p[0]})
    with pytest.raises(
        TypeError, match="optimizer can only optimize Tensors, but one of the params is int"
    ):
        optim.Adam([p[0], 3])
    with pytest.raises(ValueError, match="can't optimize a non-leaf Tensor"):
        optim.Adam([p[0] * 2])
    with pytest.raises(TypeError, match="param_group must be a dict"):
        opt.add_param_group([p[3]])
    with pytest.raises(
        ValueError, match="didn't specify a value of required optimization parameter lr"
    ):
        optim.SGD([{"params": [p[3]]}], lr=optim.required)


def test_named_parameters():
    p = ember_params()
    opt = optim.SGD([("w", p[0]), ("b", p[1])], lr=0.1)
    assert opt.param_groups[0]["param_names"] == ["w", "b"]
    assert opt.state_dict()["param_groups"][0]["param_names"] == ["w", "b"]


def test_adagrad_state_exists_from_construction():
    params = ember_params()
    opt = optim.Adagrad(params, initial_accumulator_value=0.25)
    sd = opt.state_dict()
    assert float(sd["state"][0]["step"]) == 0.0
    assert np.all(sd["state"][3]["sum"].numpy() == 0.25)
    tp = [torch.nn.Parameter(torch.from_numpy(a)) for a in init_arrays()]
    assert list(torch.optim.Adagrad(tp).state_dict()["state"][0]) == list(sd["state"][0])


def test_sgd_without_momentum_keeps_no_state():
    params = ember_params()
    opt = optim.SGD(params, lr=0.1)
    ember_steps(opt, params, 2)
    assert opt.state_dict()["state"] == {}


def test_big_parameters_split_across_threads():
    """Above PARALLEL_MIN elements the kernels run in chunks on several threads; the result
    is the same as one call."""
    from ember.optim import foreach

    rng = np.random.default_rng(0)
    arrays = [
        rng.normal(size=(700, 400)).astype(np.float32),
        rng.normal(size=(300,)).astype(np.float32),
    ]
    grads = [rng.normal(size=a.shape).astype(np.float32) for a in arrays]
    results = []
    for threads, chunk in ((1, 1 << 30), (3, 1 << 17)):
        old = foreach.NUM_THREADS, foreach.CHUNK
        foreach.NUM_THREADS, foreach.CHUNK = threads, chunk
        try:
            ps = [nn.Parameter(ember.tensor(a.copy())) for a in arrays]
            opt = optim.Adam(ps, lr=0.01, foreach=False)
            for _ in range(3):
                for p, g in zip(ps, grads):
                    p.grad = ember.tensor(g)
                opt.step()
            results.append([p.data.copy() for p in ps])
        finally:
            foreach.NUM_THREADS, foreach.CHUNK = old
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "name,kw",
    [
        ("Adam", {"lr": 0.01, "amsgrad": True}),
        ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
        ("RMSprop", {"lr": 0.01, "centered": True}),
    ],
)
def test_non_contiguous_parameter(name, kw):
    """A parameter viewing a transposed array is updated in place through its strides."""
    expected, grads = torch_run(name, kw)
    base = init_arrays()[0].T.copy()  # (4, 6): its transpose is the (6, 4) weight
    weight = nn.Parameter(ember.tensor(base).t())
    assert not weight.is_contiguous()
    params = [weight] + ember_params()[1:]
    opt = getattr(optim, name)(params, foreach=False, **kw)
    fed_steps(opt, params, grads)
    assert not weight.is_contiguous()
    for e, p in zip(expected, params):
        np.testing.assert_allclose(p.data, e, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("foreach", [False, True])
def test_nan_propagates_silently_like_torch(foreach):
    """eps=0 on a zero gradient gives 0/0: NaN, without a warning (the pytest config turns
    ember's RuntimeWarnings into errors)."""
    p = nn.Parameter(ember.zeros(3))
    q = nn.Parameter(ember.zeros(2))
    opt = optim.Adam([p, q], lr=0.1, eps=0.0, foreach=foreach)
    p.grad, q.grad = ember.tensor([0.0, 1.0, -1.0]), ember.zeros(2)
    opt.step()
    tp = torch.nn.Parameter(torch.zeros(3))
    topt = torch.optim.Adam([tp], lr=0.1, eps=0.0)
    tp.grad = torch.tensor([0.0, 1.0, -1.0])
    topt.step()
    np.testing.assert_array_equal(p.data, tp.detach().numpy())
    assert np.isnan(p.data[0]) and np.isnan(q.data).all()
