"""GradientAccumulationScheduler: validation of the schedule and the factor per epoch."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ember.callbacks import GradientAccumulationScheduler, LambdaCallback
from tests.callbacks.fakes import fake_trainer, run_fit


def test_factor_per_epoch():
    sched = GradientAccumulationScheduler({2: 2, 4: 3})
    assert sched.scheduling == {0: 1, 2: 2, 4: 3}
    assert [sched.get_accumulate_grad_batches(e) for e in range(6)] == [1, 1, 2, 2, 3, 3]
    assert sched.going_to_accumulate_grad_batches()
    assert not GradientAccumulationScheduler({0: 1}).going_to_accumulate_grad_batches()


def test_user_dict_is_not_mutated():
    d = {3: 2}
    GradientAccumulationScheduler(d)
    assert d == {3: 2}


@pytest.mark.parametrize(
    "bad, err, match",
    [
        ({}, TypeError, "non-empty"),
        ([(0, 1)], TypeError, "non-empty dict"),
        ({-1: 2}, ValueError, "epochs must be ints >= 0"),
        ({1.0: 2}, ValueError, "epochs must be ints >= 0"),
        ({0: 0}, ValueError, "factors must be ints >= 1"),
        ({0: 2.5}, ValueError, "factors must be ints >= 1"),
        ({0: True}, ValueError, "factors must be ints >= 1"),
    ],
)
def test_bad_schedules(bad, err, match):
    with pytest.raises(err, match=match):
        GradientAccumulationScheduler(bad)


def test_sets_trainer_factor_at_epoch_start_and_steps_follow():
    seen = []
    record = LambdaCallback(
        on_train_epoch_start=lambda t, m: seen.append(
            (t.current_epoch, t.accumulate_grad_batches, t.global_step)
        )
    )
    tr = fake_trainer(max_epochs=4, num_training_batches=8)
    run_fit(tr, [GradientAccumulationScheduler({1: 2, 3: 4}), record], val=False)
    # the scheduler runs first, so the recorder sees the new factor at each epoch start
    assert [(e, a) for e, a, _ in seen] == [(0, 1), (1, 2), (2, 2), (3, 4)]
    # 8 steps, then 4, 4, 2 optimizer steps
    assert [s for _, _, s in seen] == [0, 8, 12, 16]
    assert tr.global_step == 18


def test_conflicts_with_trainer_setting_and_manual_optimization():
    sched = GradientAccumulationScheduler({0: 2})
    with pytest.raises(ValueError, match="accumulate_grad_batches=4"):
        sched.on_train_start(fake_trainer(accumulate_grad_batches=4), SimpleNamespace())
    with pytest.raises(RuntimeError, match="manual optimization"):
        sched.on_train_start(fake_trainer(), SimpleNamespace(automatic_optimization=False))
    # a second fit on the same trainer keeps the value the scheduler itself set
    tr = fake_trainer()
    sched.on_train_epoch_start(tr, None)
    assert tr.accumulate_grad_batches == 2
    sched.on_train_start(tr, SimpleNamespace())
