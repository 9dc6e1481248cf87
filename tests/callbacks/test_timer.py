"""Timer: duration parsing, stopping, per-stage times and resume through state_dict."""

from __future__ import annotations

import json
from datetime import timedelta
from types import SimpleNamespace

import pytest

from ember.callbacks import Timer
from ember.callbacks import timer as timer_mod
from tests.callbacks.fakes import fake_trainer, run_fit


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(timer_mod, "time", SimpleNamespace(monotonic=c))
    return c


@pytest.mark.parametrize(
    "duration, seconds",
    [
        ("00:00:01:30", 90.0),
        ("1:02:00:00", 93600.0),
        (timedelta(minutes=2), 120.0),
        ({"hours": 1, "seconds": 5}, 3605.0),
        (None, None),
    ],
)
def test_duration_forms(duration, seconds):
    assert Timer(duration)._duration == seconds


def test_bad_arguments():
    with pytest.raises(ValueError, match="DD:HH:MM:SS"):
        Timer("1:30")
    with pytest.raises(ValueError, match="interval"):
        Timer("00:00:00:01", interval="batch")
    with pytest.raises(TypeError, match="duration"):
        Timer(5)
    with pytest.raises(ValueError, match="stage"):
        Timer().time_elapsed("bogus")


def test_stops_after_duration_step_interval(clock, capsys):
    timer = Timer({"seconds": 5}, interval="step")

    def step(trainer):
        clock.t += 1.0  # one second per optimizer step

    tr = run_fit(fake_trainer(max_epochs=3), timer, step_fn=step, val=False)
    assert tr.should_stop
    assert tr.global_step == 5  # stopped mid-epoch 0 after 5 s
    assert tr.current_epoch == 0
    assert timer.time_elapsed() == pytest.approx(5.0)
    assert timer.time_remaining() == pytest.approx(0.0)
    assert "Time limit reached. Elapsed time is 0:00:05" in capsys.readouterr().out


def test_epoch_interval_checks_at_epoch_end(clock):
    timer = Timer({"seconds": 5}, interval="epoch", verbose=False)
    tr = run_fit(
        fake_trainer(max_epochs=3),
        timer,
        step_fn=lambda t: setattr(clock, "t", clock.t + 1.0),
        val=False,
    )
    assert tr.should_stop
    assert tr.global_step == 10  # the whole first epoch ran
    assert tr.current_epoch == 0


def test_stage_times(clock):
    timer = Timer()
    tr = fake_trainer()
    assert timer.start_time() is None and timer.time_elapsed() == 0.0
    timer.on_train_start(tr, None)
    clock.t += 3
    timer.on_validation_start(tr, None)
    clock.t += 2
    timer.on_validation_end(tr, None)
    assert timer.time_elapsed("validate") == pytest.approx(2.0)
    assert timer.time_elapsed("train") == pytest.approx(5.0)  # still running
    clock.t += 1
    timer.on_train_end(tr, None)
    clock.t += 100
    assert timer.time_elapsed() == pytest.approx(6.0)
    assert timer.end_time("train") == pytest.approx(1006.0)
    assert timer.start_time("training") == pytest.approx(1000.0)
    assert timer.time_remaining() is None


def test_state_dict_survives_resume(clock):
    timer = Timer({"seconds": 10}, verbose=False)
    tr = fake_trainer()
    timer.on_train_start(tr, None)
    clock.t += 7
    state = json.loads(json.dumps(timer.state_dict()))  # JSON-safe, no pickle
    assert state["time_elapsed"]["train"] == pytest.approx(7.0)

    resumed = Timer({"seconds": 10}, verbose=False)
    resumed.load_state_dict(state)
    assert resumed.time_elapsed() == pytest.approx(7.0)
    tr2 = fake_trainer()
    resumed.on_fit_start(tr2, None)
    assert not tr2.should_stop
    resumed.on_train_start(tr2, None)
    clock.t += 2
    resumed.on_train_batch_end(tr2, None, None, None, 0)
    assert not tr2.should_stop
    clock.t += 1
    resumed.on_train_batch_end(tr2, None, None, None, 1)
    assert tr2.should_stop  # 7 + 3 >= 10


def test_depleted_budget_stops_at_fit_start(clock):
    timer = Timer({"seconds": 10}, verbose=False)
    timer.load_state_dict({"time_elapsed": {"train": 12.0}})
    tr = fake_trainer()
    timer.on_fit_start(tr, None)
    assert tr.should_stop
