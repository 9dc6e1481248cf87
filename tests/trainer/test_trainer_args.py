"""Every Trainer argument has a test that proves its effect."""

from __future__ import annotations

import datetime
import time

import numpy as np
import pytest

import ember
import ember.nn.functional as F
from ember.callbacks import Callback
from ember.data import DataLoader, TensorDataset
from ember.distributed import SingleDeviceStrategy
from ember.optim import SGD
from ember.trainer import Trainer
from tests.trainer.helpers import QUIET, RecordingLogger, ToyModel, loader, toy_data, weights


class Counter(Callback):
    """Counts batches per stage, and the sanity-check validation batches separately."""

    def __init__(self):
        self.train = self.val = self.sanity = self.test = self.predict = 0
        self.val_runs = 0
        self.train_batch_ids: list[int] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.train += 1
        self.train_batch_ids.append(batch_idx)

    def on_validation_batch_end(self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0):
        if trainer.sanity_checking:
            self.sanity += 1
        else:
            self.val += 1

    def on_validation_end(self, trainer, module):
        if not trainer.sanity_checking:
            self.val_runs += 1

    def on_test_batch_end(self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0):
        self.test += 1

    def on_predict_batch_end(self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0):
        self.predict += 1


def fit(model=None, train=None, val=None, **kwargs):
    counter = Counter()
    trainer = Trainer(callbacks=[counter], **{**QUIET, **kwargs})
    model = model or ToyModel()
    trainer.fit(
        model,
        train if train is not None else loader(32, 4),
        val if val is not None else loader(16, 4),
    )
    return trainer, counter, model


# ------------------------------------------------------------------------ limits
def test_limit_train_batches_int_and_fraction():
    trainer, c, _ = fit(max_epochs=2, limit_train_batches=3, num_sanity_val_steps=0)
    assert c.train == 6 and trainer.num_training_batches == 3
    trainer, c, _ = fit(max_epochs=1, limit_train_batches=0.25, num_sanity_val_steps=0)
    assert c.train == 2 and trainer.num_training_batches == 2  # 8 batches * 0.25


def test_limit_train_batches_zero_skips_training():
    trainer, c, _ = fit(max_epochs=3, limit_train_batches=0)
    assert c.train == 0 and trainer.global_step == 0


def test_limit_val_batches():
    trainer, c, _ = fit(max_epochs=2, limit_val_batches=2, num_sanity_val_steps=0)
    assert c.val == 4 and trainer.num_val_batches == [2]
    trainer, c, _ = fit(max_epochs=1, limit_val_batches=0.5, num_sanity_val_steps=0)
    assert c.val == 2
    trainer, c, _ = fit(max_epochs=1, limit_val_batches=0)
    assert c.val == 0 and c.sanity == 0


def test_limit_test_and_predict_batches():
    c = Counter()
    trainer = Trainer(callbacks=[c], limit_test_batches=2, limit_predict_batches=0.5, **QUIET)
    model = ToyModel()
    trainer.test(model, loader(16, 4), verbose=False)
    preds = trainer.predict(model, [x for x, _ in loader(16, 4)])
    assert c.test == 2 and c.predict == 2 and len(preds) == 2


# -------------------------------------------------------------------- validation
def test_val_check_interval_fraction_and_int():
    _, c, _ = fit(max_epochs=1, val_check_interval=0.25, num_sanity_val_steps=0)
    assert c.val_runs == 4  # every 2 of the 8 batches
    _, c, _ = fit(max_epochs=2, val_check_interval=3, num_sanity_val_steps=0)
    assert c.val_runs == 4  # after batches 3 and 6 of each 8-batch epoch


def test_val_check_interval_across_epochs_without_epoch_check():
    _, c, _ = fit(
        max_epochs=3, val_check_interval=5, check_val_every_n_epoch=None, num_sanity_val_steps=0
    )
    assert c.val_runs == 4  # after 5, 10, 15, 20 of the 24 batches


def test_check_val_every_n_epoch():
    _, c, _ = fit(
        max_epochs=6, check_val_every_n_epoch=3, num_sanity_val_steps=0, limit_train_batches=1
    )
    assert c.val_runs == 2


@pytest.mark.parametrize("steps, expected", [(0, 0), (1, 1), (2, 2), (-1, 4)])
def test_num_sanity_val_steps(steps, expected):
    _, c, _ = fit(max_epochs=1, num_sanity_val_steps=steps, limit_train_batches=1)
    assert c.sanity == expected


def test_num_sanity_val_steps_default_is_two_and_metrics_are_discarded():
    logger = RecordingLogger()
    trainer, c, _ = fit(max_epochs=1, limit_train_batches=0, logger=logger)
    assert trainer.num_sanity_val_steps == 2 and c.sanity == 2
    assert trainer.callback_metrics == {}  # no training: only the sanity check ran
    assert logger.calls == []


# ----------------------------------------------------------------- gradients
def test_accumulate_grad_batches_equals_one_large_batch():
    """4 batches of 4 accumulated in pairs give the same weights as 2 batches of 8 (the
    loss is divided by accumulate_grad_batches)."""
    x, y = toy_data(16)
    ember.manual_seed(1)
    a = ToyModel(lr=0.5)
    b = ToyModel(lr=0.5)
    b.load_state_dict(a.state_dict())
    small = DataLoader(TensorDataset(x, y), batch_size=4)
    large = DataLoader(TensorDataset(x, y), batch_size=8)
    ta = Trainer(max_epochs=3, accumulate_grad_batches=2, **QUIET)
    ta.fit(a, small)
    tb = Trainer(max_epochs=3, **QUIET)
    tb.fit(b, large)
    assert ta.global_step == tb.global_step == 6
    assert ta.batches_seen == 12 and tb.batches_seen == 6
    for wa, wb in zip(weights(a), weights(b)):
        np.testing.assert_allclose(wa, wb, rtol=1e-5, atol=1e-6)
    assert not np.allclose(weights(a)[0], ToyModel().layer.weight.detach().numpy())


def test_accumulation_steps_on_the_last_batch_of_an_uneven_epoch():
    trainer, c, _ = fit(max_epochs=2, accumulate_grad_batches=3, num_sanity_val_steps=0)
    assert trainer.global_step == 6  # 8 batches: steps after 3, 6 and 8; twice
    assert trainer.batches_seen == 16 and trainer.estimated_stepping_batches == 6


def _one_step(**kwargs):
    ember.manual_seed(0)
    model = ToyModel(lr=1.0)
    w0 = model.layer.weight.detach().numpy().copy()
    x, y = toy_data(8)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    grad = model.layer.weight.grad.numpy().copy()
    total = np.sqrt(sum(float((p.grad.numpy() ** 2).sum()) for p in model.parameters()))
    model.zero_grad()
    Trainer(max_steps=1, **QUIET, **kwargs).fit(
        model, DataLoader(TensorDataset(x, y), batch_size=8)
    )
    return w0, grad, total, model.layer.weight.detach().numpy()


def test_gradient_clip_by_norm_changes_the_step():
    w0, grad, total, w = _one_step()
    np.testing.assert_allclose(w, w0 - grad, rtol=1e-5, atol=1e-6)  # no clipping
    clip = total / 4
    w0, grad, total, w = _one_step(gradient_clip_val=clip)
    np.testing.assert_allclose(w, w0 - grad * clip / (total + 1e-6), rtol=1e-4, atol=1e-6)


def test_gradient_clip_by_value_changes_the_step():
    w0, grad, _, _ = _one_step()
    v = float(np.abs(grad).max()) / 3
    w0, grad, _, w = _one_step(gradient_clip_val=v, gradient_clip_algorithm="value")
    np.testing.assert_allclose(w, w0 - np.clip(grad, -v, v), rtol=1e-5, atol=1e-6)
    assert not np.allclose(w, w0 - grad)


# ----------------------------------------------------------- length of training
def test_max_epochs_default_rule():
    assert Trainer(**QUIET).max_epochs == 1000
    assert Trainer(max_steps=10, **QUIET).max_epochs == -1
    assert Trainer(max_time="00:00:01:00", **QUIET).max_epochs == -1


def test_max_steps_stops_mid_epoch():
    trainer, c, _ = fit(max_steps=5, num_sanity_val_steps=0, limit_val_batches=0)
    assert trainer.global_step == 5 and trainer.batches_seen == 5
    assert trainer.current_epoch == 1  # the interrupted epoch counts as finished


def test_max_steps_counts_optimizer_steps_not_batches():
    trainer, c, _ = fit(max_steps=3, accumulate_grad_batches=2, limit_val_batches=0)
    assert trainer.global_step == 3 and trainer.batches_seen == 6


class StopAt(Callback):
    def __init__(self, where: str):
        self.where = where

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if self.where == "batch":
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer, module):
        if self.where == "epoch":
            trainer.should_stop = True


def test_should_stop_and_min_epochs():
    trainer = Trainer(callbacks=[StopAt("epoch")], max_epochs=10, **QUIET)
    trainer.fit(ToyModel(), loader(8, 4))
    assert trainer.current_epoch == 1
    trainer = Trainer(callbacks=[StopAt("epoch")], max_epochs=10, min_epochs=3, **QUIET)
    trainer.fit(ToyModel(), loader(8, 4))
    assert trainer.current_epoch == 3


def test_min_steps():
    trainer = Trainer(callbacks=[StopAt("batch")], max_epochs=10, min_steps=5, **QUIET)
    trainer.fit(ToyModel(), loader(8, 4))  # 2 batches an epoch
    assert trainer.global_step == 5 and trainer.current_epoch == 3


class Slow(ToyModel):
    def training_step(self, batch, batch_idx):
        time.sleep(0.02)
        return super().training_step(batch, batch_idx)


def test_max_time_stops_training():
    trainer = Trainer(max_time={"seconds": 0.2}, **QUIET)
    start = time.monotonic()
    trainer.fit(Slow(), loader(4000, 4))  # 1000 batches: 20 s without the limit
    assert time.monotonic() - start < 5
    assert 5 <= trainer.batches_seen < 100 and trainer.should_stop
    assert trainer.max_time == datetime.timedelta(seconds=0.2)


@pytest.mark.parametrize(
    "value, expected",
    [
        ("00:00:01:30", datetime.timedelta(minutes=1, seconds=30)),
        ("01:02:00:00", datetime.timedelta(days=1, hours=2)),
        ({"hours": 2}, datetime.timedelta(hours=2)),
        (datetime.timedelta(seconds=5), datetime.timedelta(seconds=5)),
    ],
)
def test_max_time_formats(value, expected):
    assert Trainer(max_time=value, **QUIET).max_time == expected


# -------------------------------------------------------------------- debugging
class Everything(ToyModel):
    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        return self(batch[0])


@pytest.mark.parametrize("n", [True, 3])
def test_fast_dev_run_runs_n_batches_of_each_kind_and_writes_nothing(tmp_path, monkeypatch, n):
    monkeypatch.chdir(tmp_path)
    c = Counter()
    trainer = Trainer(
        fast_dev_run=n, default_root_dir=tmp_path, callbacks=[c], enable_progress_bar=False
    )  # logger and checkpointing left at defaults
    model = Everything()
    trainer.fit(model, loader(64, 4), loader(64, 4))
    trainer.validate(model, loader(64, 4), verbose=False)
    trainer.test(model, loader(64, 4), verbose=False)
    preds = trainer.predict(model, loader(64, 4))
    k = int(n)
    assert (c.train, c.val, c.test, c.predict, c.sanity) == (k, 2 * k, k, k, 0)
    assert trainer.global_step == k and trainer.current_epoch == 1 and len(preds) == k
    assert trainer.loggers == []
    assert list(tmp_path.iterdir()) == []


class BatchRecorder(ToyModel):
    def __init__(self):
        super().__init__()
        self.seen = {"train": [], "val": []}

    def training_step(self, batch, batch_idx):
        self.seen["train"].append(batch[0].numpy().copy())
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch, batch_idx):
        self.seen["val"].append(batch[0].numpy().copy())
        return super().validation_step(batch, batch_idx)


def test_overfit_batches_uses_the_same_batches_for_train_and_val():
    model = BatchRecorder()
    trainer = Trainer(overfit_batches=2, max_epochs=3, num_sanity_val_steps=0, **QUIET)
    with pytest.warns(UserWarning, match="without shuffling"):
        trainer.fit(model, loader(32, 4, shuffle=True), loader(16, 4, seed=7))
    train, val = model.seen["train"], model.seen["val"]
    assert len(train) == 6 and len(val) == 6
    for epoch in range(3):
        for i in range(2):
            np.testing.assert_array_equal(train[2 * epoch + i], train[i])
            np.testing.assert_array_equal(val[2 * epoch + i], train[i])
    x, _ = toy_data(32)
    np.testing.assert_array_equal(train[0], x.numpy()[:4])  # first batches, in order


def test_detect_anomaly_names_the_op_that_produced_nan():
    class NaNGrad(ToyModel):
        def training_step(self, batch, batch_idx):
            nan = ember.full((2, 4), float("nan"))
            return (self.layer.weight * nan).sum()  # the weight's gradient is NaN

    with pytest.raises(RuntimeError, match="(?i)mul"):
        Trainer(max_steps=1, detect_anomaly=True, **QUIET).fit(NaNGrad(), loader(8, 4))
    # without (and with the non-finite loss check off): no error
    Trainer(max_steps=1, on_nonfinite_loss=None, **QUIET).fit(NaNGrad(), loader(8, 4))


def test_same_seed_gives_bit_identical_weights():
    """DESIGN's determinism promise: same seed and config, same bits on the CPU (with
    shuffling, validation and Ember's threaded kernels). ``deterministic=True`` adds nothing
    on the CPU; on CUDA it picks the sorted embedding backward (next test)."""

    def run():
        ember.manual_seed(3)
        model = ToyModel()
        Trainer(max_epochs=2, deterministic=True, **QUIET).fit(
            model, loader(32, 4, shuffle=True), loader(8, 4)
        )
        return weights(model)

    for a, b in zip(run(), run()):
        np.testing.assert_array_equal(a, b)


def test_deterministic_picks_the_sorted_embedding_kernel(monkeypatch):
    from ember.cuda import embedding

    monkeypatch.setattr(embedding, "_deterministic", False)
    Trainer(max_steps=1, **QUIET)
    assert not embedding.deterministic()
    Trainer(max_steps=1, deterministic=True, **QUIET)
    assert embedding.deterministic()


def test_reload_dataloaders_every_n_epochs():
    class Reloading(ToyModel):
        calls = 0

        def train_dataloader(self):
            Reloading.calls += 1
            return loader(8, 4)

    Trainer(max_epochs=4, reload_dataloaders_every_n_epochs=2, **QUIET).fit(Reloading())
    assert Reloading.calls == 2  # epochs 0 and 2


# ------------------------------------------------------------------------ output
def test_log_every_n_steps():
    logger = RecordingLogger()
    trainer = Trainer(
        max_epochs=1,
        log_every_n_steps=3,
        logger=logger,
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(ToyModel(), loader(40, 4))
    assert [s for s, _ in logger.values("train_loss")] == [2, 5, 8]
    assert all(m["epoch"] == 0 for _, m in logger.calls)


def test_log_every_n_steps_counts_optimizer_steps_under_accumulation():
    logger = RecordingLogger()
    trainer = Trainer(
        max_epochs=1,
        log_every_n_steps=2,
        logger=logger,
        limit_val_batches=0,
        accumulate_grad_batches=2,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(ToyModel(), loader(40, 4))  # 10 batches, 5 optimizer steps
    assert [s for s, _ in logger.values("train_loss")] == [1, 3]


def test_default_callbacks_follow_the_enable_flags():
    from ember.callbacks import ModelCheckpoint, ModelSummary, TQDMProgressBar

    names = {type(c).__name__ for c in Trainer(logger=False).callbacks}
    assert {"TQDMProgressBar", "ModelSummary", "ModelCheckpoint"} <= names
    off = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False}
    t = Trainer(**off, enable_checkpointing=False)
    assert t.callbacks == [] and t.progress_bar_callback is None
    t = Trainer(**off)
    assert [type(c) for c in t.callbacks] == [ModelCheckpoint]
    bar = TQDMProgressBar()
    t = Trainer(logger=False, callbacks=bar, enable_model_summary=False, enable_checkpointing=False)
    assert t.callbacks == [bar] and t.progress_bar_callback is bar
    summary = ModelSummary(max_depth=2)
    t = Trainer(
        logger=False, callbacks=[summary], enable_progress_bar=False, enable_checkpointing=False
    )
    assert t.callbacks == [summary]


def test_default_logger_and_log_dir(tmp_path):
    from ember.loggers import TensorBoardLogger

    t = Trainer(default_root_dir=tmp_path, enable_progress_bar=False)
    assert isinstance(t.logger, TensorBoardLogger) and len(t.loggers) == 1
    assert t.default_root_dir == str(tmp_path)
    assert t.log_dir == str(tmp_path / "lightning_logs" / "version_0")
    assert Trainer(logger=False, default_root_dir=tmp_path).log_dir == str(tmp_path)
    a, b = RecordingLogger(), RecordingLogger()
    assert Trainer(logger=[a, b]).loggers == [a, b]
    t = Trainer(logger=a)
    assert t.logger is a and t.loggers == [a]


def test_enable_checkpointing_is_stored():
    assert Trainer(**{**QUIET, "enable_checkpointing": True}).enable_checkpointing is True
    assert Trainer(**QUIET).enable_checkpointing is False


# ---------------------------------------------------------------------- hardware
def test_cpu_accelerator_one_device_and_32_bit_precision_are_accepted():
    for kwargs in (
        {"accelerator": "cpu", "devices": 1},
        {"accelerator": "auto"},
        {"precision": "32"},
        {"precision": "32-true"},
        {"precision": 32},
        {"strategy": "single_device", "accelerator": "cpu"},
    ):
        t = Trainer(**{**QUIET, **kwargs})
        assert t.precision == "32-true"
    t = Trainer(devices=1, max_epochs=1, **QUIET)
    t.fit(ToyModel(), loader(8, 4))
    assert t.global_step == 2 and t.root_device == ember.device("cpu")


def test_strategy_instance_is_used():
    calls = []

    class Spy(SingleDeviceStrategy):
        def process_dataloader(self, dataloader, stage):
            calls.append(stage)
            return dataloader

        def setup_module(self, module):
            calls.append("setup_module")
            return module

    strategy = Spy("cpu")
    t = Trainer(strategy=strategy, max_epochs=1, **QUIET)
    t.fit(ToyModel(), loader(8, 4), loader(8, 4))
    assert t.strategy is strategy and t.is_global_zero and t.world_size == 1
    assert calls == ["setup_module", "validate", "fit"]


def test_callbacks_argument_and_configure_callbacks_replacement():
    class Marker(Callback):
        def __init__(self, tag):
            self.tag = tag

    class WithCallbacks(ToyModel):
        def configure_callbacks(self):
            return [Marker("model")]

    t = Trainer(callbacks=[Marker("trainer"), Counter()], max_epochs=1, **QUIET)
    t.fit(WithCallbacks(), loader(8, 4))
    assert [type(c).__name__ for c in t.callbacks] == ["Counter", "Marker"]
    assert t.callbacks[1].tag == "model"


def test_manual_optimization_with_two_optimizers():
    class TwoOpts(ToyModel):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False
            self.head = ember.nn.Linear(2, 2)

        def forward(self, x):
            return self.head(self.layer(x))

        def training_step(self, batch, batch_idx):
            opt_a, opt_b = self.optimizers()
            x, y = batch
            for opt in (opt_a, opt_b):
                self.toggle_optimizer(opt)
                loss = F.cross_entropy(self(x), y)
                opt.zero_grad()
                self.manual_backward(loss)
                opt.step()
                self.untoggle_optimizer(opt)
            self.log("loss", loss)
            return loss

        def configure_optimizers(self):
            return [SGD(self.layer.parameters(), lr=0.1), SGD(self.head.parameters(), lr=0.1)]

    model = TwoOpts()
    w_layer, w_head = weights(model.layer), weights(model.head)
    t = Trainer(max_epochs=1, **QUIET)
    t.fit(model, loader(16, 4))
    assert t.global_step == 8 and t.batches_seen == 4  # each optimizer step counts
    assert not np.allclose(weights(model.layer)[0], w_layer[0])
    assert not np.allclose(weights(model.head)[0], w_head[0])
    assert all(p.requires_grad for p in model.parameters())  # untoggled


# -------------------------------------------------------------- entry points
def test_predict_returns_the_predictions():
    model = ToyModel()
    batches = [x for x, _ in loader(10, 4)]
    preds = Trainer(**QUIET).predict(model, batches)
    assert [tuple(p.shape) for p in preds] == [(4, 2), (4, 2), (2, 2)]
    with ember.no_grad():
        np.testing.assert_allclose(preds[1].numpy(), model(batches[1]).numpy())
    assert not preds[0].requires_grad
    multi = Trainer(**QUIET).predict(Everything(), [loader(10, 4), loader(4, 4)])
    assert [len(p) for p in multi] == [3, 1]  # a list per dataloader
    assert Trainer(**QUIET).predict(model, batches, return_predictions=False) is None


def test_validate_and_test_return_batch_size_weighted_metrics():
    model = ToyModel()
    x, y = toy_data(10)
    val = DataLoader(TensorDataset(x, y), batch_size=4)  # batches of 4, 4, 2
    trainer = Trainer(**QUIET)
    (metrics,) = trainer.validate(model, val, verbose=False)
    with ember.no_grad():
        logits = model(x)
        full = float(F.cross_entropy(logits, y).item())
        acc = float((logits.argmax(1) == y).float().mean().item())
    assert set(metrics) == {"val_loss", "val_acc"}
    assert metrics["val_loss"] == pytest.approx(full, rel=1e-5)
    assert metrics["val_acc"] == pytest.approx(acc)
    assert trainer.callback_metrics["val_loss"] == pytest.approx(full, rel=1e-5)
    (metrics,) = trainer.test(model, val, verbose=False)
    assert metrics == {"test_loss": pytest.approx(full, rel=1e-5)}
    assert model.training  # train mode restored


def test_validate_prints_a_table(capsys):
    Trainer(**QUIET).validate(ToyModel(), loader(8, 4))
    out = capsys.readouterr().out
    assert "Validate metric" in out and "val_loss" in out


def test_a_real_fit_with_the_built_in_callbacks(tmp_path, capsys):
    """The defaults (TQDMProgressBar, ModelSummary, TensorBoardLogger) and the other built-in
    callbacks run against the real Trainer."""
    from ember.callbacks import (
        GradientAccumulationScheduler,
        LambdaCallback,
        LearningRateMonitor,
        ThroughputMonitor,
        Timer,
    )

    events = []
    trainer = Trainer(
        default_root_dir=tmp_path,
        max_epochs=3,
        log_every_n_steps=1,
        callbacks=[
            LearningRateMonitor(),
            GradientAccumulationScheduler({1: 2}),
            Timer(duration="00:01:00:00"),
            ThroughputMonitor(window_size=2),
            LambdaCallback(on_train_epoch_end=lambda t, m: events.append(t.global_step)),
        ],
    )
    trainer.fit(ToyModel(), loader(32, 4), loader(8, 4))
    assert events == [8, 12, 16]  # 8 steps, then 4 per epoch with accumulation 2
    assert trainer.accumulate_grad_batches == 2
    out = capsys.readouterr().out
    assert "Epoch 3/3" in out and "Total params" in out
    assert (tmp_path / "lightning_logs" / "version_0" / "hparams.yaml").exists()


def test_sanity_check_does_not_change_the_training_randomness():
    """The sanity check's dataloader draws from the RNG; its state is restored after, so the
    run with a sanity check trains exactly like the run without one."""

    def run(sanity):
        ember.manual_seed(5)
        model = ToyModel()
        Trainer(max_epochs=2, num_sanity_val_steps=sanity, **QUIET).fit(
            model, loader(32, 4, shuffle=True), loader(8, 4)
        )
        return weights(model)

    for a, b in zip(run(0), run(2)):
        np.testing.assert_array_equal(a, b)


def test_loop_state_seams_for_checkpoints():
    """Issue 6 restores the counters from Progress.state_dict() and resumes mid-epoch by
    setting resume_batch_idx (the restored dataloader yields the remaining batches)."""
    c = Counter()
    trainer = Trainer(callbacks=[c], max_epochs=2, limit_val_batches=0, **QUIET)
    trainer._fit_loop.resume_batch_idx = 2
    trainer.fit(ToyModel(), loader(16, 4))
    assert c.train_batch_ids == [2, 3, 0, 1, 2, 3]
    state = trainer._progress.state_dict()
    # batch_idx counts the batches of the epoch in progress: 0 once an epoch has ended
    assert state == {
        "current_epoch": 2,
        "global_step": 6,
        "batches_seen": 6,
        "batches_that_stepped": 6,
        "batch_idx": 0,
    }
    other = Trainer(**QUIET)
    other._progress.load_state_dict(state)
    assert (other.current_epoch, other.global_step, other.batches_seen) == (2, 6, 6)
