"""TQDMProgressBar: plain lines off a terminal (pytest, CI, pipes), tqdm bars on one."""

from __future__ import annotations

import io
import re
import sys

import pytest

import ember
from ember.callbacks import TQDMProgressBar
from ember.callbacks.progress import format_time, format_value
from tests.callbacks.fakes import fake_trainer, run_fit


class TTY(io.StringIO):
    def isatty(self):
        return True


def lines(out: str) -> list[str]:
    return [ln for ln in out.splitlines() if ln.strip()]


def test_plain_lines_are_few_and_informative(capsys):
    tr = fake_trainer(num_training_batches=100, max_epochs=2, num_val_batches=[7])
    run_fit(tr, TQDMProgressBar(), sanity=True)
    out = capsys.readouterr().out
    assert "\r" not in out
    got = lines(out)
    train = [ln for ln in got if ln.startswith("Epoch")]
    val = [ln for ln in got if ln.startswith("Validation")]
    assert len(train) == 20  # every 10% of each epoch, the last one at 100/100
    assert len(val) == 2  # one per validation run; the sanity check prints nothing
    assert len(got) == 22
    assert train[0].startswith("Epoch 1/2  step 10/100  loss ")
    assert train[9].startswith("Epoch 1/2  step 100/100  loss ")
    assert train[10].startswith("Epoch 2/2  step 10/100  ")
    assert re.search(r" [\d.]+ it/s  eta \d+:\d\d$", train[0])
    assert "eta" not in train[9]
    assert val[0].startswith("Validation  epoch 1/2  7 batches  (")
    # the order: epoch 1's lines, its validation, then epoch 2
    assert got.index(val[0]) == 10


def test_running_loss_is_a_mean_of_recent_losses(capsys):
    tr = fake_trainer(num_training_batches=4, max_epochs=1)
    values = [4.0, 2.0, 6.0, 8.0]
    run_fit(tr, TQDMProgressBar(), val=False, loss_fn=lambda e, i: ember.tensor(values[i]))
    got = lines(capsys.readouterr().out)
    assert [re.search(r"loss (\S+)", ln).group(1) for ln in got] == ["4", "3", "4", "5"]


def test_outputs_without_a_scalar_loss_are_ignored(capsys):
    tr = fake_trainer(num_training_batches=3, max_epochs=1)
    outs = iter([None, {"logits": 1}, ember.zeros(2, 2)])
    run_fit(tr, TQDMProgressBar(), val=False, loss_fn=lambda e, i: next(outs))
    got = lines(capsys.readouterr().out)
    assert len(got) == 3 and not any(" loss " in ln for ln in got)


def test_prog_bar_metrics_and_logged_loss(capsys):
    tr = fake_trainer(num_training_batches=2, max_epochs=1, num_val_batches=[3])
    tr.progress_bar_metrics.update(
        {"train_loss": ember.tensor(0.25), "val_acc": 0.95, "val_loss": 0.3125}
    )
    run_fit(tr, TQDMProgressBar())
    got = lines(capsys.readouterr().out)
    # the logged train_loss replaces the running loss; no duplicate 'loss'
    assert got[0].startswith("Epoch 1/1  step 1/2  train_loss 0.25  val_acc 0.95  val_loss 0.3125")
    assert " loss " not in got[0]
    # the validation line shows the val metrics only
    assert got[2].startswith("Validation  epoch 1/1  3 batches  val_acc 0.95  val_loss 0.3125  (")


def test_standalone_eval_runs_get_one_line(capsys):
    tr = fake_trainer(num_val_batches=[3, 2], num_test_batches=[4], num_predict_batches=[5])
    tr.progress_bar_metrics.update({"test_acc": 0.5})
    bar = TQDMProgressBar()
    bar.on_validation_start(tr, None)
    for dl, n in enumerate((3, 2)):
        for i in range(n):
            bar.on_validation_batch_end(tr, None, None, None, i, dl)
    bar.on_validation_end(tr, None)
    bar.on_test_start(tr, None)
    for i in range(4):
        bar.on_test_batch_end(tr, None, None, None, i)
    bar.on_test_end(tr, None)
    bar.on_predict_start(tr, None)
    for i in range(5):
        bar.on_predict_batch_end(tr, None, None, None, i)
    bar.on_predict_end(tr, None)
    got = lines(capsys.readouterr().out)
    assert len(got) == 3
    assert got[0].startswith("Validation  5 batches  test_acc 0.5  (")  # no val_*: shows all
    assert got[1].startswith("Test  4 batches  test_acc 0.5  (")
    assert got[2].startswith("Predicting  5 batches  (")


def test_epoch_cut_short_prints_a_last_line(capsys):
    tr = fake_trainer(num_training_batches=100, max_epochs=1)

    def stop_at_25(trainer):
        if trainer.global_step == 24:
            trainer.should_stop = True

    run_fit(tr, TQDMProgressBar(), val=False, step_fn=stop_at_25)
    got = lines(capsys.readouterr().out)
    assert [ln.split("  ")[1] for ln in got] == ["step 10/100", "step 20/100", "step 25/100"]


def test_unknown_length_and_max_steps(capsys):
    tr = fake_trainer(num_training_batches=250, max_epochs=-1)
    tr.num_training_batches = float("inf")
    bar = TQDMProgressBar()
    bar.on_train_start(tr, None)
    bar.on_train_epoch_start(tr, None)
    for i in range(250):
        bar.on_train_batch_end(tr, None, ember.tensor(1.0), None, i)
    got = lines(capsys.readouterr().out)
    assert [ln.split("  ")[:2] for ln in got] == [["Epoch 1", "step 100"], ["Epoch 1", "step 200"]]


def test_refresh_rate_zero_disable_and_other_ranks(capsys):
    for bar, tr in [
        (TQDMProgressBar(refresh_rate=0), fake_trainer()),
        (TQDMProgressBar(), fake_trainer(is_global_zero=False)),
    ]:
        run_fit(tr, bar, sanity=True)
        assert bar.is_disabled
    bar = TQDMProgressBar()
    bar.disable()
    run_fit(fake_trainer(), bar)
    assert capsys.readouterr().out == ""
    bar.enable()
    assert bar.is_enabled
    with pytest.raises(ValueError, match="refresh_rate"):
        TQDMProgressBar(refresh_rate=-1)


def test_metrics_read_only_at_refresh_points(capsys):
    """Reading progress_bar_metrics may sync the device: only at the ten refresh points."""
    reads = []

    class CountingTrainer:
        def __init__(self, inner):
            self.__dict__["inner"] = inner

        def __getattr__(self, name):
            if name == "progress_bar_metrics":
                reads.append(self.inner.batches_seen)
            return getattr(self.inner, name)

        def __setattr__(self, name, value):
            setattr(self.inner, name, value)

    run_fit(
        CountingTrainer(fake_trainer(num_training_batches=100, max_epochs=1)),
        TQDMProgressBar(),
        val=False,
    )
    assert reads == list(range(10, 101, 10))


def test_tty_draws_tqdm_bars(monkeypatch):
    tty = TTY()
    monkeypatch.setattr(sys, "stdout", tty)
    tr = fake_trainer(num_training_batches=5, max_epochs=2, num_val_batches=[3])
    tr.progress_bar_metrics["val_acc"] = 0.5
    bar = TQDMProgressBar()
    run_fit(tr, bar, sanity=True)
    out = tty.getvalue()
    assert "\r" in out
    assert "Epoch 1/2" in out and "Epoch 2/2" in out
    assert "5/5" in out and "loss=" in out and "val_acc=0.5" in out
    assert "Validation" in out and "Sanity Checking" in out
    assert "it/s" in out
    assert bar.train_progress_bar is None and bar.val_progress_bar is None  # closed


def test_tty_leave_keeps_one_bar_per_epoch(monkeypatch):
    tty = TTY()
    monkeypatch.setattr(sys, "stdout", tty)
    tr = fake_trainer(num_training_batches=3, max_epochs=3)
    run_fit(tr, TQDMProgressBar(leave=True), val=False)
    kept = [ln for ln in tty.getvalue().split("\n") if "Epoch" in ln]
    assert len(kept) == 3  # each epoch's bar ends with its own newline


def test_format_helpers():
    assert format_value(0.23123) == "0.2312"
    assert format_value(0.95) == "0.95"
    assert format_value(12.345) == "12.35"
    assert format_value(123.456) == "123.5"
    assert format_value(12345.6) == "12346"
    assert format_value(1e-5) == "1e-05"
    assert format_value(7) == "7"
    assert format_value(float("nan")) == "nan"
    assert format_value(ember.tensor(0.5)) == "0.5"
    assert format_value("x") == "x"
    assert format_time(5) == "0:05"
    assert format_time(125) == "2:05"
    assert format_time(3725) == "1:02:05"
