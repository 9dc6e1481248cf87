"""Each built-in callback through a real ``Trainer(...).fit`` on a tiny model."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import ember
import ember.nn.functional as F
from ember import nn
from ember.callbacks import (
    GradientAccumulationScheduler,
    LambdaCallback,
    LearningRateMonitor,
    ModelSummary,
    ThroughputMonitor,
    Timer,
    TQDMProgressBar,
)
from ember.callbacks import timer as timer_mod
from ember.data import DataLoader, TensorDataset
from ember.optim import SGD
from ember.optim.lr_scheduler import StepLR
from ember.trainer import Trainer, TrainingModule
from tests.callbacks.fakes import RecordingLogger


class Tiny(TrainingModule):
    def __init__(self, scheduler: bool = False):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2))
        self.scheduler = scheduler

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        self.log("val_loss", F.cross_entropy(logits, y), prog_bar=True)
        self.log("val_acc", (logits.argmax(1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self):
        opt = SGD(self.parameters(), lr=0.1)
        if not self.scheduler:
            return opt
        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": StepLR(opt, step_size=1, gamma=0.5), "interval": "step"},
        }


def loader(n=80, batch_size=4):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    return DataLoader(TensorDataset(ember.tensor(x), ember.tensor(y)), batch_size=batch_size)


def trainer(tmp_path, **kw):
    args = {
        "max_epochs": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_model_summary": False,
        "default_root_dir": str(tmp_path),
    }
    args.update(kw)
    return Trainer(**args)


def test_default_progress_bar_prints_a_few_plain_lines(tmp_path, capsys):
    tr = trainer(tmp_path, max_epochs=2, num_sanity_val_steps=2)
    assert any(isinstance(cb, TQDMProgressBar) for cb in tr.callbacks)
    tr.fit(Tiny(), loader(), loader(n=16))
    out = capsys.readouterr().out
    assert "\r" not in out
    got = [ln for ln in out.splitlines() if ln.strip()]
    epochs = [ln for ln in got if ln.startswith("Epoch ")]
    vals = [ln for ln in got if ln.startswith("Validation")]
    assert len(epochs) == 20  # 20 batches per epoch: a line every 2 batches
    assert len(vals) == 2  # one per validation run, none for the sanity check
    assert len(got) == 22
    assert epochs[0].startswith("Epoch 1/2  step 2/20  loss ")
    assert epochs[-1].startswith("Epoch 2/2  step 20/20  loss ")
    assert "val_acc" in epochs[-1]  # the previous validation's prog_bar metrics
    assert vals[0].startswith("Validation  epoch 1/2  4 batches  val_loss ")
    assert "val_acc" in vals[0]


def test_standalone_validate_prints_one_line(tmp_path, capsys):
    tr = trainer(tmp_path)
    tr.validate(Tiny(), loader(n=16))
    got = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("Validation")]
    assert len(got) == 1 and got[0].startswith("Validation  4 batches  val_loss ")


def test_progress_bar_disabled(tmp_path, capsys):
    tr = trainer(tmp_path, enable_progress_bar=False)
    assert not any(isinstance(cb, TQDMProgressBar) for cb in tr.callbacks)
    tr.fit(Tiny(), loader(n=16))
    assert "Epoch" not in capsys.readouterr().out


def test_model_summary(tmp_path, capsys):
    trainer(tmp_path, enable_model_summary=True, enable_progress_bar=False).fit(Tiny(), loader(n=8))
    out = capsys.readouterr().out
    assert "0 | net  | Sequential | 37     | train" in out
    assert "37        Total params" in out
    trainer(tmp_path, enable_progress_bar=False, callbacks=[ModelSummary(max_depth=-1)]).fit(
        Tiny(), loader(n=8)
    )
    out = capsys.readouterr().out
    assert "net.2" in out and "| 12 " in out


def test_timer_stops_the_run(tmp_path, monkeypatch):
    clock = SimpleNamespace(t=0.0)
    monkeypatch.setattr(timer_mod, "time", SimpleNamespace(monotonic=lambda: clock.t))
    tick = LambdaCallback(on_train_batch_end=lambda *a: setattr(clock, "t", clock.t + 1.0))
    timer = Timer({"seconds": 3}, verbose=False)
    tr = trainer(tmp_path, max_epochs=5, enable_progress_bar=False, callbacks=[tick, timer])
    tr.fit(Tiny(), loader())
    assert tr.global_step == 3
    assert tr.batches_seen == 3  # stopped inside the first epoch (20 batches)
    assert timer.time_elapsed() == pytest.approx(3.0)


def test_gradient_accumulation_scheduler(tmp_path):
    seen = []
    record = LambdaCallback(
        on_train_epoch_end=lambda t, m: seen.append((t.accumulate_grad_batches, t.global_step))
    )
    tr = trainer(
        tmp_path,
        max_epochs=3,
        enable_progress_bar=False,
        callbacks=[GradientAccumulationScheduler({1: 2, 2: 4}), record],
    )
    tr.fit(Tiny(), loader(n=32))  # 8 batches per epoch
    assert seen == [(1, 8), (2, 12), (4, 14)]
    assert tr.batches_seen == 24


def test_learning_rate_monitor(tmp_path):
    logger = RecordingLogger()
    mon = LearningRateMonitor()
    tr = trainer(
        tmp_path, logger=logger, log_every_n_steps=1, enable_progress_bar=False, callbacks=[mon]
    )
    tr.fit(Tiny(scheduler=True), loader(n=16))
    got = logger.values("lr-SGD")
    assert [s for s, _ in got] == [0, 1, 2, 3]
    assert [v for _, v in got] == pytest.approx([0.1, 0.05, 0.025, 0.0125])
    assert mon.lrs["lr-SGD"] == pytest.approx([0.1, 0.05, 0.025, 0.0125])
    with pytest.raises(RuntimeError, match="no logger"):
        trainer(tmp_path, enable_progress_bar=False, callbacks=[LearningRateMonitor()]).fit(
            Tiny(), loader(n=16)
        )


def test_throughput_monitor(tmp_path, capsys):
    logger = RecordingLogger()
    mon = ThroughputMonitor(batch_size_fn=lambda b: b[0].shape[0], window_size=3)
    tr = trainer(tmp_path, logger=logger, log_every_n_steps=1, callbacks=[mon])
    tr.fit(Tiny(), loader(n=40))
    got = logger.values("train/samples_per_sec")
    assert [s for s, _ in got] == list(range(2, 10))
    assert all(v > 0 for _, v in got)
    assert mon.metrics["train/samples_per_sec"] == pytest.approx(
        4 * mon.metrics["train/batches_per_sec"]
    )
    assert "train/samples_per_sec" in tr.progress_bar_metrics
    assert "train/samples_per_sec" in capsys.readouterr().out.splitlines()[-1]


def test_lambda_callback_in_fit(tmp_path):
    calls = []
    cb = LambdaCallback(
        on_fit_start=lambda t, m: calls.append("fit_start"),
        on_train_epoch_start=lambda t, m: calls.append(t.current_epoch),
        on_validation_end=lambda t, m: calls.append("val"),
    )
    trainer(
        tmp_path, max_epochs=2, enable_progress_bar=False, callbacks=[cb], num_sanity_val_steps=0
    ).fit(Tiny(), loader(n=8), loader(n=8))
    assert calls == ["fit_start", 0, "val", 1, "val"]
