"""LR schedulers against torch.optim.lr_scheduler: the whole 100-step learning-rate (and
momentum) sequence, also across a state-dict round trip through ember.save / ember.load."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import ember
from ember import nn, optim
from ember.optim import lr_scheduler as L

torch = pytest.importorskip("torch")
TL = torch.optim.lr_scheduler
STEPS = 100


class Decay:
    """A callable object: its __dict__ travels in LambdaLR's state dict."""

    def __init__(self, rate):
        self.rate = rate

    def __call__(self, epoch):
        return self.rate**epoch


SCHEDULERS = {
    "LambdaLR": lambda s, o: s.LambdaLR(o, lambda e: 0.95**e),
    "LambdaLR-per-group": lambda s, o: s.LambdaLR(o, [lambda e: 1 / (1 + e), Decay(0.9)]),
    "MultiplicativeLR": lambda s, o: s.MultiplicativeLR(o, lambda e: 0.97),
    "StepLR": lambda s, o: s.StepLR(o, step_size=7, gamma=0.5),
    "MultiStepLR": lambda s, o: s.MultiStepLR(o, milestones=[10, 30, 30, 60], gamma=0.3),
    "ExponentialLR": lambda s, o: s.ExponentialLR(o, gamma=0.97),
    "CosineAnnealingLR": lambda s, o: s.CosineAnnealingLR(o, T_max=30, eta_min=0.001),
    "CosineAnnealingLR-zero-min": lambda s, o: s.CosineAnnealingLR(o, T_max=45),
    "CosineAnnealingWarmRestarts": lambda s, o: s.CosineAnnealingWarmRestarts(
        o, T_0=10, T_mult=2, eta_min=1e-4
    ),
    "CosineAnnealingWarmRestarts-T_mult1": lambda s, o: s.CosineAnnealingWarmRestarts(o, T_0=7),
    "LinearLR": lambda s, o: s.LinearLR(o, start_factor=0.25, end_factor=0.9, total_iters=40),
    "LinearLR-decay": lambda s, o: s.LinearLR(o, start_factor=1.0, end_factor=0.1, total_iters=70),
    "ConstantLR": lambda s, o: s.ConstantLR(o, factor=0.5, total_iters=20),
    "PolynomialLR": lambda s, o: s.PolynomialLR(o, total_iters=60, power=2.0),
    "OneCycleLR-cos": lambda s, o: s.OneCycleLR(o, max_lr=[1.0, 0.5], total_steps=STEPS),
    "OneCycleLR-linear": lambda s, o: s.OneCycleLR(
        o, max_lr=0.8, total_steps=STEPS + 20, anneal_strategy="linear", pct_start=0.25
    ),
    "OneCycleLR-three-phase": lambda s, o: s.OneCycleLR(
        o, max_lr=1.0, epochs=10, steps_per_epoch=10, three_phase=True, div_factor=10.0
    ),
    "OneCycleLR-no-momentum": lambda s, o: s.OneCycleLR(
        o, max_lr=1.0, total_steps=STEPS, cycle_momentum=False
    ),
    "CyclicLR-triangular2": lambda s, o: s.CyclicLR(
        o, base_lr=0.01, max_lr=0.1, step_size_up=15, mode="triangular2"
    ),
    "CyclicLR-exp_range": lambda s, o: s.CyclicLR(
        o,
        base_lr=[0.01, 0.02],
        max_lr=0.1,
        step_size_up=10,
        step_size_down=5,
        mode="exp_range",
        gamma=0.99,
    ),
    "SequentialLR": lambda s, o: s.SequentialLR(
        o,
        [s.LinearLR(o, start_factor=0.1, total_iters=10), s.CosineAnnealingLR(o, T_max=90)],
        milestones=[10],
    ),
    "SequentialLR-three": lambda s, o: s.SequentialLR(
        o,
        [
            s.ConstantLR(o, factor=0.2, total_iters=5),
            s.ExponentialLR(o, gamma=0.9),
            s.StepLR(o, step_size=10, gamma=0.5),
        ],
        milestones=[20, 50],
    ),
    "ChainedScheduler": lambda s, o: s.ChainedScheduler(
        [s.ConstantLR(o, factor=0.5, total_iters=10), s.ExponentialLR(o, gamma=0.98)]
    ),
}
ADAM_ONLY = {"OneCycleLR-three-phase"}  # cycles Adam's beta1 instead of SGD's momentum


def make_optimizer(lib, adam: bool):
    if lib is torch:
        p1, p2 = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))
        mod = torch.optim
    else:
        p1, p2 = nn.Parameter(ember.zeros(2)), nn.Parameter(ember.zeros(3))
        mod = optim
    groups = [{"params": [p1]}, {"params": [p2], "lr": 0.05}]
    if adam:
        return mod.Adam(groups, lr=0.1)
    return mod.SGD(groups, lr=0.1, momentum=0.9)


def momentum_of(opt):
    return [g["betas"][0] if "betas" in g else g["momentum"] for g in opt.param_groups]


def run(sched, opt, steps):
    lrs, moms = [], []
    for _ in range(steps):
        opt.step()
        sched.step()
        lrs.append(list(sched.get_last_lr()))
        moms.append(momentum_of(opt))
    return lrs, moms


def torch_sequence(key):
    opt = make_optimizer(torch, key in ADAM_ONLY)
    sched = SCHEDULERS[key](TL, opt)
    first = [list(sched.get_last_lr())]
    lrs, moms = run(sched, opt, STEPS)
    return first + lrs, moms


def assert_sequences_equal(got, expected):
    got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("key", sorted(SCHEDULERS))
def test_sequence_matches_torch(key):
    expected_lrs, expected_moms = torch_sequence(key)
    opt = make_optimizer(ember, key in ADAM_ONLY)
    sched = SCHEDULERS[key](L, opt)
    first = [list(sched.get_last_lr())]
    lrs, moms = run(sched, opt, STEPS)
    assert_sequences_equal(first + lrs, expected_lrs)
    assert_sequences_equal(moms, expected_moms)
    assert [g["lr"] for g in opt.param_groups] == lrs[-1]
    assert all("initial_lr" in g for g in opt.param_groups)


@pytest.mark.parametrize("key", sorted(SCHEDULERS))
def test_state_dict_round_trip_mid_run(key, tmp_path):
    expected_lrs, expected_moms = torch_sequence(key)
    adam = key in ADAM_ONLY
    opt = make_optimizer(ember, adam)
    sched = SCHEDULERS[key](L, opt)
    first = [list(sched.get_last_lr())]
    lrs1, moms1 = run(sched, opt, STEPS // 2)
    sd = sched.state_dict()
    assert "optimizer" not in sd
    ember.save({"optimizer": opt.state_dict(), "scheduler": sd}, tmp_path / "ckpt.safetensors")
    ckpt = ember.load(tmp_path / "ckpt.safetensors")
    # a new run: fresh optimizer and scheduler (which changes the lr), then both restored
    opt2 = make_optimizer(ember, adam)
    sched2 = SCHEDULERS[key](L, opt2)
    opt2.load_state_dict(ckpt["optimizer"])
    sched2.load_state_dict(ckpt["scheduler"])
    assert sched2.get_last_lr() == lrs1[-1]
    lrs2, moms2 = run(sched2, opt2, STEPS - STEPS // 2)
    assert_sequences_equal(first + lrs1 + lrs2, expected_lrs)
    assert_sequences_equal(moms1 + moms2, expected_moms)


def test_lambda_state_dict_keeps_callable_objects_state():
    opt = make_optimizer(ember, False)
    decay = Decay(0.9)
    sched = L.LambdaLR(opt, [lambda e: 1.0, decay])
    sd = sched.state_dict()
    assert sd["lr_lambdas"] == [None, {"rate": 0.9}]
    assert "optimizer" not in sd
    decay.rate = 0.5
    sched.load_state_dict(sd)
    assert decay.rate == 0.9 and "lr_lambdas" in sd  # the caller's dict is left intact
    tsched = TL.LambdaLR(make_optimizer(torch, False), [lambda e: 1.0, Decay(0.9)])
    assert set(tsched.state_dict()) == set(sd)


@pytest.mark.parametrize(
    "key",
    [
        "StepLR",
        "MultiStepLR",
        "ExponentialLR",
        "CosineAnnealingLR",
        "LinearLR",
        "ConstantLR",
        "PolynomialLR",
        "CosineAnnealingWarmRestarts",
    ],
)
def test_step_with_epoch_uses_closed_form_like_torch(key):
    epochs = [3, 4, 10, 0, 25, 31, 60, 7, 70, 45]
    out = []
    for lib, S in ((torch, TL), (ember, L)):
        opt = make_optimizer(lib, False)
        sched = SCHEDULERS[key](S, opt)
        seq = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for e in epochs:
                opt.step()
                sched.step(e)
                seq.append(list(sched.get_last_lr()))
        out.append(seq)
    assert_sequences_equal(out[1], out[0])


PLATEAU = [
    ({}, None),
    ({"mode": "max", "factor": 0.5, "patience": 2}, None),
    ({"threshold_mode": "abs", "threshold": 0.05, "patience": 1, "cooldown": 3}, None),
    (
        {
            "mode": "max",
            "threshold_mode": "abs",
            "threshold": 0.01,
            "patience": 0,
            "factor": 0.7,
            "min_lr": [0.01, 0.02],
        },
        None,
    ),
    ({"patience": 3, "cooldown": 2, "min_lr": 0.004, "factor": 0.3}, None),
    ({"factor": 0.5, "patience": 0, "eps": 0.02}, None),
]


def metrics():
    """Improves, plateaus, gets worse, improves a little: every branch of the rule."""
    rng = np.random.default_rng(0)
    seq = np.concatenate(
        [
            np.linspace(5, 2, 20),
            np.full(15, 2.0),
            np.linspace(2, 3, 15),
            np.linspace(3, 1.9, 20),
            1.9 + 0.02 * rng.standard_normal(30),
        ]
    )
    return [float(v) for v in seq]


@pytest.mark.parametrize("kw", [k for k, _ in PLATEAU])
def test_reduce_lr_on_plateau_matches_torch(kw, tmp_path):
    out = []
    for lib, S in ((torch, TL), (ember, L)):
        opt = make_optimizer(lib, False)
        sched = S.ReduceLROnPlateau(opt, **kw)
        seq = []
        for i, m in enumerate(metrics()):
            if lib is ember and i == 50:  # round trip through a file in the middle
                ember.save({"o": opt.state_dict(), "s": sched.state_dict()}, tmp_path / "r")
                ck = ember.load(tmp_path / "r")
                opt = make_optimizer(ember, False)
                sched = L.ReduceLROnPlateau(opt, **kw)
                opt.load_state_dict(ck["o"])
                sched.load_state_dict(ck["s"])
            opt.step()
            sched.step(ember.tensor(np.array(m)) if lib is ember else m)
            seq.append(
                list(sched.get_last_lr())
                + [sched.num_bad_epochs, sched.cooldown_counter, sched.best]
            )
        out.append(seq)
    assert_sequences_equal(out[1], out[0])
    assert len({tuple(r[:2]) for r in out[0]}) > 1 or kw.get("eps") == 0.02


def test_reduce_lr_on_plateau_state_dict_contents():
    opt = make_optimizer(ember, False)
    sched = L.ReduceLROnPlateau(opt, mode="max", patience=2)
    for m in (1.0, 0.5, 0.5):
        sched.step(m)
    sd = sched.state_dict()
    tsched = TL.ReduceLROnPlateau(make_optimizer(torch, False), mode="max", patience=2)
    assert set(sd) <= set(tsched.state_dict()) | {"_last_lr"}
    assert sd["best"] == 1.0 and sd["num_bad_epochs"] == 2 and sd["mode_worse"] == -math.inf


def test_scheduler_errors():
    opt = make_optimizer(ember, False)
    with pytest.raises(TypeError, match="list is not an Optimizer"):
        L.StepLR([], step_size=1)
    with pytest.raises(
        ValueError, match="Starting multiplicative factor expected to be greater than 0"
    ):
        L.LinearLR(opt, start_factor=0)
    with pytest.raises(ValueError, match="Constant multiplicative factor expected to be between"):
        L.ConstantLR(opt, factor=2.0)
    with pytest.raises(ValueError, match="You must define either total_steps OR"):
        L.OneCycleLR(opt, max_lr=1.0)
    with pytest.raises(ValueError, match="Expected 2 lr_lambdas, but got 3"):
        L.LambdaLR(opt, [lambda e: 1] * 3)
    with pytest.raises(ValueError, match="Expected positive integer T_0, but got 0"):
        L.CosineAnnealingWarmRestarts(opt, T_0=0)
    with pytest.raises(ValueError, match="Factor should be < 1.0."):
        L.ReduceLROnPlateau(opt, factor=1.0)
    with pytest.raises(ValueError, match="mode top is unknown!"):
        L.ReduceLROnPlateau(opt, mode="top")
    with pytest.raises(KeyError, match="param 'initial_lr' is not specified in param_groups"):
        L.StepLR(make_optimizer(ember, False), step_size=3, last_epoch=5)
    sched = L.OneCycleLR(opt, max_lr=1.0, total_steps=2)
    opt.step()
    sched.step()
    sched.step()
    with pytest.raises(
        ValueError, match="Tried to step 3 times. The specified number of total steps is 2"
    ):
        sched.step()
    with pytest.raises(ValueError, match="does not support `ReduceLROnPlateau`"):
        L.ChainedScheduler([L.ReduceLROnPlateau(opt)])
    other = make_optimizer(ember, False)
    with pytest.raises(ValueError, match="expects all schedulers to belong to the same optimizer"):
        L.SequentialLR(opt, [L.StepLR(opt, 2), L.StepLR(other, 2)], milestones=[3])
    with pytest.raises(ValueError, match="optimizer must support momentum or beta1"):
        L.OneCycleLR(optim.Adagrad([nn.Parameter(ember.zeros(1))]), max_lr=1.0, total_steps=5)


def test_warns_when_scheduler_steps_before_optimizer():
    opt = make_optimizer(ember, False)
    sched = L.StepLR(opt, step_size=2)
    with pytest.warns(UserWarning, match="before `optimizer.step\\(\\)`"):
        sched.step()
    opt = make_optimizer(ember, False)
    sched = L.StepLR(opt, step_size=2)
    opt.step()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sched.step()


def test_resume_with_last_epoch():
    """last_epoch >= 0 continues a schedule whose groups carry initial_lr (torch's rule)."""
    seqs = []
    for lib, S in ((torch, TL), (ember, L)):
        opt = make_optimizer(lib, False)
        for g in opt.param_groups:
            g["initial_lr"] = g["lr"]
        sched = S.CosineAnnealingLR(opt, T_max=20, last_epoch=7)
        seqs.append([list(sched.get_last_lr())] + run(sched, opt, 10)[0])
    assert_sequences_equal(seqs[1], seqs[0])


@pytest.mark.parametrize("key", sorted(SCHEDULERS))
def test_state_dict_keys_match_torch(key):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = SCHEDULERS[key](TL, make_optimizer(torch, key in ADAM_ONLY)).state_dict()
    ours = SCHEDULERS[key](L, make_optimizer(ember, key in ADAM_ONLY)).state_dict()
    assert set(ours) == set(theirs)
    assert ours["_last_lr"] == theirs["_last_lr"] if "_last_lr" in theirs else True
