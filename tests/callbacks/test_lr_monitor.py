"""LearningRateMonitor: names, values and steps sent to a recording logger."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ember import nn, optim
from ember.callbacks import LearningRateMonitor
from tests.callbacks.fakes import RecordingLogger, fake_trainer, run_fit


def sched_config(scheduler, interval="epoch", name=None):
    return SimpleNamespace(
        scheduler=scheduler, interval=interval, frequency=1, name=name, monitor=None
    )


def params(n=2):
    return list(nn.Linear(n, n).parameters())


def test_no_logger_is_a_clear_error():
    with pytest.raises(RuntimeError, match="no logger"):
        LearningRateMonitor().on_train_start(fake_trainer(), None)


def test_bad_interval():
    with pytest.raises(ValueError, match="logging_interval"):
        LearningRateMonitor(logging_interval="batch")


@pytest.mark.parametrize("interval", [None, "step"])
def test_optimizer_without_scheduler_logged_every_step(interval):
    logger = RecordingLogger()
    opt = optim.SGD(params(), lr=0.1)
    tr = fake_trainer(loggers=[logger], optimizers=[opt], num_training_batches=3, max_epochs=2)
    mon = LearningRateMonitor(logging_interval=interval)
    run_fit(tr, mon, val=False)
    assert logger.values("lr-SGD") == [(s, 0.1) for s in range(6)]  # once per step, no dupes
    assert mon.lrs == {"lr-SGD": [0.1] * 6}


def test_epoch_interval_logs_at_epoch_starts():
    logger = RecordingLogger()
    opt = optim.SGD(params(), lr=0.1)
    tr = fake_trainer(loggers=[logger], optimizers=[opt], num_training_batches=3, max_epochs=2)
    run_fit(tr, LearningRateMonitor(logging_interval="epoch"), val=False)
    assert logger.values("lr-SGD") == [(0, 0.1), (3, 0.1)]


def test_step_scheduler_values_follow_the_schedule():
    logger = RecordingLogger()
    opt = optim.SGD(params(), lr=1.0)
    sched = optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    tr = fake_trainer(
        loggers=[logger],
        optimizers=[opt],
        num_training_batches=4,
        max_epochs=1,
        lr_scheduler_configs=[sched_config(sched, "step")],
    )

    def step(trainer):
        opt.step()
        sched.step()

    run_fit(tr, LearningRateMonitor(), val=False, step_fn=step)
    # logged at batch start, before that batch's step: step k has lr 0.5**k
    assert logger.values("lr-SGD") == [(k, 0.5**k) for k in range(4)]


def test_epoch_scheduler_logged_at_epoch_start_only():
    logger = RecordingLogger()
    opt = optim.Adam(params(), lr=0.01)
    sched = optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.1)
    tr = fake_trainer(
        loggers=[logger],
        optimizers=[opt],
        num_training_batches=3,
        max_epochs=3,
        lr_scheduler_configs=[sched_config(sched, "epoch")],
    )
    mon = LearningRateMonitor()

    def epoch_end_step(t, m):
        opt.step()
        sched.step()

    from ember.callbacks import LambdaCallback

    run_fit(tr, [mon, LambdaCallback(on_train_epoch_end=epoch_end_step)], val=False)
    got = logger.values("lr-Adam")
    assert [s for s, _ in got] == [0, 3, 6]
    assert [v for _, v in got] == pytest.approx([0.01, 0.001, 0.0001])
    # logging_interval='step' logs an epoch scheduler every step too
    logger2 = RecordingLogger()
    tr2 = fake_trainer(
        loggers=[logger2],
        optimizers=[opt],
        num_training_batches=3,
        max_epochs=1,
        lr_scheduler_configs=[sched_config(sched, "epoch")],
    )
    run_fit(tr2, LearningRateMonitor(logging_interval="step"), val=False)
    assert [s for s, _ in logger2.values("lr-Adam")] == [0, 1, 2]


def test_names_param_groups_duplicates_and_scheduler_names():
    logger = RecordingLogger()
    a, b = params(), params()
    opt1 = optim.SGD(
        [{"params": a}, {"params": b, "lr": 0.2}], lr=0.1, momentum=0.9, weight_decay=1e-4
    )
    opt2 = optim.SGD(params(), lr=0.3)
    opt3 = optim.Adam([{"params": params(), "name": "head"}], lr=0.4, betas=(0.8, 0.99))
    opt4 = optim.Adam(params(), lr=0.5)
    sched = optim.lr_scheduler.StepLR(opt4, step_size=10)
    tr = fake_trainer(
        loggers=[logger],
        optimizers=[opt1, opt2, opt3, opt4],
        num_training_batches=1,
        max_epochs=1,
        lr_scheduler_configs=[sched_config(sched, "step", name="my-sched")],
    )
    mon = LearningRateMonitor(log_momentum=True, log_weight_decay=True)
    run_fit(tr, mon, val=False)
    step, metrics = logger.calls[0]
    assert step == 0
    assert metrics == pytest.approx(
        {
            "my-sched": 0.5,
            "my-sched-momentum": 0.9,
            "my-sched-weight_decay": 0.0,
            "lr-SGD/pg1": 0.1,
            "lr-SGD/pg1-momentum": 0.9,
            "lr-SGD/pg1-weight_decay": 1e-4,
            "lr-SGD/pg2": 0.2,
            "lr-SGD/pg2-momentum": 0.9,
            "lr-SGD/pg2-weight_decay": 1e-4,
            "lr-SGD-1": 0.3,
            "lr-SGD-1-momentum": 0.0,
            "lr-SGD-1-weight_decay": 0.0,
            "lr-Adam/head": 0.4,
            "lr-Adam/head-momentum": 0.8,
            "lr-Adam/head-weight_decay": 0.0,
        }
    )
    assert set(mon.lrs) == set(metrics)
    assert tr.callback_metrics["lr-SGD-1"] == 0.3


def test_respects_log_every_n_steps_and_accumulation():
    logger = RecordingLogger()
    opt = optim.SGD(params(), lr=0.1)
    tr = fake_trainer(
        loggers=[logger],
        optimizers=[opt],
        num_training_batches=12,
        max_epochs=1,
        log_every_n_steps=2,
        accumulate_grad_batches=2,
    )
    run_fit(tr, LearningRateMonitor(logging_interval="step"), val=False)
    # 6 optimizer steps; log when (step + 1) % 2 == 0, once per step despite 2 batches/step
    assert [s for s, _ in logger.values("lr-SGD")] == [1, 3, 5]


def test_non_zero_rank_does_not_write():
    logger = RecordingLogger()
    tr = fake_trainer(
        loggers=[logger],
        optimizers=[optim.SGD(params(), lr=0.1)],
        num_training_batches=2,
        max_epochs=1,
        is_global_zero=False,
    )
    run_fit(tr, LearningRateMonitor(), val=False)
    assert logger.calls == []
