"""ThroughputMonitor: rates from controlled timings (time.perf_counter is faked)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import ember
from ember.callbacks import ThroughputMonitor
from ember.callbacks import throughput as tp_mod
from tests.callbacks.fakes import RecordingLogger, fake_trainer, run_fit


class Clock:
    def __init__(self):
        self.t = 50.0

    def __call__(self):
        return self.t


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(tp_mod, "time", SimpleNamespace(perf_counter=c))
    return c


def tick(clock, dt):
    def step(trainer):
        clock.t += dt

    return step


def test_samples_per_sec_from_controlled_timings(clock):
    logger = RecordingLogger()
    tr = fake_trainer(loggers=[logger], num_training_batches=10, max_epochs=1)
    mon = ThroughputMonitor(batch_size_fn=lambda b: b[0].shape[0], window_size=4)
    run_fit(tr, mon, val=False, step_fn=tick(clock, 0.5))  # 0.5 s per batch of 8
    assert mon.metrics == pytest.approx(
        {"train/batches_per_sec": 2.0, "train/samples_per_sec": 16.0}
    )
    steps = [s for s, _ in logger.values("train/samples_per_sec")]
    # nothing until the window is full; logged at the trainer's step (global_step - 1)
    assert steps == [3, 4, 5, 6, 7, 8, 9]
    assert tr.progress_bar_metrics == pytest.approx({"train/samples_per_sec": 16.0})
    assert "train/tokens_per_sec" not in mon.metrics  # float x: no token ids


def test_window_follows_a_speed_change(clock):
    tr = fake_trainer(num_training_batches=8, max_epochs=1)
    mon = ThroughputMonitor(window_size=3)
    times = iter([1.0] * 4 + [0.25] * 4)
    run_fit(tr, mon, val=False, step_fn=lambda t: setattr(clock, "t", clock.t + next(times)))
    # the last 3 batches took 0.25 s each: 2 intervals in 0.5 s -> 4 batches/s, 32 samples/s
    assert mon.metrics["train/batches_per_sec"] == pytest.approx(4.0)
    assert mon.metrics["train/samples_per_sec"] == pytest.approx(32.0)


def test_tokens_from_length_fn_and_from_token_id_batches(clock):
    mon = ThroughputMonitor(batch_size_fn=len, length_fn=lambda b: 100, window_size=2)
    run_fit(
        fake_trainer(num_training_batches=3, max_epochs=1),
        mon,
        val=False,
        step_fn=tick(clock, 0.1),
        batch_fn=lambda i: [0] * 4,
    )
    assert mon.metrics["train/tokens_per_sec"] == pytest.approx(1000.0)
    assert mon.metrics["train/samples_per_sec"] == pytest.approx(40.0)

    ids = ember.tensor(np.zeros((4, 16), dtype=np.int64))
    mon = ThroughputMonitor(window_size=2)  # default batch size: leading dim of x
    run_fit(
        fake_trainer(num_training_batches=3, max_epochs=1),
        mon,
        val=False,
        step_fn=tick(clock, 0.1),
        batch_fn=lambda i: (ids, ids),
    )
    assert mon.metrics["train/samples_per_sec"] == pytest.approx(40.0)
    assert mon.metrics["train/tokens_per_sec"] == pytest.approx(640.0)


def test_validation_time_is_paused_out(clock):
    mon = ThroughputMonitor(window_size=2)
    tr = fake_trainer(num_training_batches=2, max_epochs=2, num_val_batches=[5])

    class SlowVal:
        def __getattr__(self, name):
            if name == "on_validation_batch_end":
                return lambda *a: setattr(clock, "t", clock.t + 100.0)
            return lambda *a: None

    run_fit(tr, [SlowVal(), mon], step_fn=tick(clock, 1.0))
    # the last window spans the end-of-epoch-0 validation (500 s) but only 1 s of training
    assert mon.metrics["train/batches_per_sec"] == pytest.approx(1.0)


def test_accumulation_logs_whole_steps_and_world_size(clock):
    logger = RecordingLogger()
    tr = fake_trainer(
        loggers=[logger],
        num_training_batches=8,
        max_epochs=1,
        accumulate_grad_batches=2,
        world_size=4,
    )
    mon = ThroughputMonitor(window_size=2)
    run_fit(tr, mon, val=False, step_fn=tick(clock, 1.0))
    assert [s for s, _ in logger.values("train/samples_per_sec")] == [0, 1, 2, 3]
    m = mon.metrics
    # one optimizer step per second covers 2 batches of 8, timed from step to step
    assert m["train/device/samples_per_sec"] == pytest.approx(8.0)
    assert m["train/samples_per_sec"] == pytest.approx(32.0)


def test_log_every_n_steps_and_rank(clock):
    logger = RecordingLogger()
    tr = fake_trainer(loggers=[logger], num_training_batches=10, max_epochs=1, log_every_n_steps=5)
    run_fit(tr, ThroughputMonitor(window_size=2), val=False, step_fn=tick(clock, 1.0))
    assert [s for s, _ in logger.values("train/samples_per_sec")] == [4, 9]
    logger2 = RecordingLogger()
    tr2 = fake_trainer(
        loggers=[logger2], num_training_batches=4, max_epochs=1, is_global_zero=False
    )
    run_fit(tr2, ThroughputMonitor(window_size=2), val=False, step_fn=tick(clock, 1.0))
    assert logger2.calls == []


def test_bad_arguments_and_unknown_batches():
    with pytest.raises(ValueError, match="window_size"):
        ThroughputMonitor(window_size=1)
    with pytest.raises(ValueError, match="batch_size_fn"):
        tp_mod._default_batch_size(object())
