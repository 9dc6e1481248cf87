"""``self.log``: per-hook defaults, name_step/name_epoch, batch-size-weighted epoch means,
reduce_fx, prog_bar/logger routing, deferred syncing, errors, and what reaches the loggers."""

from __future__ import annotations

import numpy as np
import pytest

import ember
import ember.nn.functional as F
from ember.callbacks import Callback
from ember.data import DataLoader, TensorDataset
from ember.trainer import Trainer
from ember.trainer import logging as trainer_logging
from tests.trainer.helpers import QUIET, RecordingLogger, ToyModel, loader, toy_data


class _Logs(ToyModel):
    """Logs whatever the plans say from training_step / validation_step."""

    train_plan = val_plan = None

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        if self.train_plan:
            self.train_plan(self, batch, batch_idx, loss)
        return loss

    def validation_step(self, batch, batch_idx):
        if self.val_plan:
            self.val_plan(self, batch, batch_idx)


def Logs(train_plan=None, val_plan=None) -> _Logs:
    model = _Logs()
    model.train_plan, model.val_plan = train_plan, val_plan
    return model


def run(model, logger=None, train=None, val=None, **kwargs):
    settings = {**QUIET, "max_epochs": 1, "num_sanity_val_steps": 0, **kwargs}
    if logger is not None:
        settings["logger"] = logger
    trainer = Trainer(**settings)
    trainer.fit(
        model,
        train if train is not None else loader(16, 4),
        val if val is not None else loader(10, 4),
    )
    return trainer


def test_defaults_step_in_training_epoch_in_validation():
    logger = RecordingLogger()
    model = Logs(lambda m, b, i, loss: m.log("a", float(i)), lambda m, b, i: m.log("v", float(i)))
    trainer = run(model, logger, log_every_n_steps=1)
    assert logger.values("a") == [(0, 0.0), (1, 1.0), (2, 2.0), (3, 3.0)]  # on_step only
    assert logger.values("v") == [(3, pytest.approx((0 * 4 + 1 * 4 + 2 * 2) / 10))]
    assert trainer.callback_metrics == {"a": 3.0, "v": pytest.approx(0.8)}


def test_on_step_and_on_epoch_fork_the_names():
    logger = RecordingLogger()
    model = Logs(lambda m, b, i, loss: m.log("a", float(i), on_epoch=True, prog_bar=True))
    trainer = run(model, logger, log_every_n_steps=2)
    assert logger.values("a_step") == [(1, 1.0), (3, 3.0)]
    assert logger.values("a_epoch") == [(3, 1.5)]
    assert "a" not in trainer.logged_metrics
    assert trainer.callback_metrics == {"a": 1.5, "a_step": 3.0, "a_epoch": 1.5}
    assert trainer.progress_bar_metrics == {"a_step": 3.0, "a_epoch": 1.5}
    assert trainer.logged_metrics == {"a_step": 3.0, "a_epoch": 1.5}


def test_epoch_mean_is_weighted_by_batch_size():
    x, y = toy_data(10)
    val = DataLoader(TensorDataset(x, y), batch_size=4)  # 4, 4, 2

    def plan(m, batch, i):
        m.log("mean_x", batch[0][:, 0].mean())  # batch size inferred
        m.log("explicit", float(i), batch_size=[1, 1, 8][i])

    trainer = run(Logs(val_plan=plan), val=val)
    assert trainer.callback_metrics["mean_x"] == pytest.approx(
        float(x[:, 0].mean().item()), rel=1e-5
    )
    assert trainer.callback_metrics["explicit"] == pytest.approx((0 + 1 + 2 * 8) / 10)


def test_batch_size_is_found_in_nested_batches():
    assert trainer_logging.extract_batch_size({"img": ember.zeros(5, 3), "y": [1, 2]}) == 5
    assert trainer_logging.extract_batch_size(([ember.zeros(7)], "text")) == 7
    assert trainer_logging.extract_batch_size(ember.tensor(3.0)) == 1
    assert trainer_logging.extract_batch_size("text") is None


@pytest.mark.parametrize(
    "fx, expected", [("sum", 0 + 1 + 2), ("max", 2.0), ("min", 0.0), ("mean", 0.8), (np.max, 2.0)]
)
def test_reduce_fx(fx, expected):
    trainer = run(Logs(val_plan=lambda m, b, i: m.log("v", float(i), reduce_fx=fx)))
    assert trainer.callback_metrics["v"] == pytest.approx(expected)


def test_prog_bar_and_logger_flags():
    logger = RecordingLogger()

    def plan(m, b, i, loss):
        m.log("shown", loss, prog_bar=True)
        m.log("hidden", loss, logger=False)

    trainer = run(Logs(plan), logger, log_every_n_steps=1)
    assert set(trainer.progress_bar_metrics) == {"shown"}
    assert set(trainer.callback_metrics) == {"shown", "hidden"}
    assert logger.values("hidden") == [] and len(logger.values("shown")) == 4


def test_log_dict_and_logging_from_a_callback():
    class FromCallback(Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            module.log("from_cb", outputs["loss"] * 0 + 7)

    model = Logs(lambda m, b, i, loss: m.log_dict({"p": 1.0, "q": loss}))
    trainer = Trainer(callbacks=[FromCallback()], max_epochs=1, **QUIET)
    trainer.fit(model, loader(8, 4))
    assert set(trainer.callback_metrics) == {"p", "q", "from_cb"}
    assert trainer.callback_metrics["from_cb"] == 7.0


def test_logging_in_epoch_hooks():
    class EpochHooks(ToyModel):
        def on_train_epoch_end(self):
            self.log("epoch_metric", float(self.current_epoch))

        def on_validation_epoch_end(self):
            self.log("val_epoch_metric", 5.0)

    logger = RecordingLogger()
    run(EpochHooks(), logger, max_epochs=2)
    assert logger.values("epoch_metric") == [(3, 0.0), (7, 1.0)]  # 4 batches an epoch
    assert logger.values("val_epoch_metric") == [(3, 5.0), (7, 5.0)]


def test_validation_logs_with_on_step_go_to_the_loggers():
    logger = RecordingLogger()
    run(Logs(val_plan=lambda m, b, i: m.log("v", float(i), on_step=True)), logger)
    assert logger.values("v_step") == [(0, 0.0), (1, 1.0), (2, 2.0)]
    assert logger.values("v_epoch") == [(3, pytest.approx(0.8))]


def test_several_val_dataloaders_get_suffixed_names_and_results():
    class Multi(ToyModel):
        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            self.log("v", float(dataloader_idx))

        def on_validation_epoch_end(self):
            self.log("shared", 1.0)

    results = Trainer(**QUIET).validate(Multi(), [loader(8, 4), loader(4, 4)], verbose=False)
    assert results == [
        {"v/dataloader_idx_0": 0.0, "shared": 1.0},
        {"v/dataloader_idx_1": 1.0, "shared": 1.0},
    ]


def test_values_stay_arrays_until_read():
    """No float conversion (no device sync) on the way in: the stored values are 0-d arrays
    until a property reads them."""
    model = Logs(lambda m, b, i, loss: m.log("loss", loss, on_epoch=True))
    trainer = run(model, val=[])
    stored = trainer._metrics.callback
    assert all(isinstance(v, np.ndarray) or type(v) is np.float64 for v in stored.values())
    assert all(type(v) is not float for v in stored.values())
    metrics = trainer.callback_metrics
    assert all(type(v) is float for v in metrics.values())


def test_no_conversion_per_step_when_nothing_shows_or_writes(monkeypatch):
    """A logged value is converted to a Python number only when a logger writes it: with
    log_every_n_steps=10 over 20 steps, 2 step conversions + the epoch value."""
    calls = []
    real = trainer_logging.to_float

    def counting(value):
        calls.append(value)
        return real(value)

    monkeypatch.setattr(trainer_logging, "to_float", counting)
    logger = RecordingLogger()
    model = Logs(lambda m, b, i, loss: m.log("loss", loss, on_epoch=True))
    run(model, logger, train=loader(80, 4), val=[], log_every_n_steps=10)
    assert len(calls) == 3
    assert [s for s, _ in logger.values("loss_step")] == [9, 19]


def test_sanity_check_metrics_are_discarded():
    logger = RecordingLogger()
    model = Logs(val_plan=lambda m, b, i: m.log("v", 100.0 if m.trainer.sanity_checking else 1.0))
    trainer = run(model, logger, num_sanity_val_steps=2)
    assert logger.values("v") == [(3, 1.0)]
    assert trainer.callback_metrics["v"] == 1.0


def test_hyperparameters_and_lifecycle_reach_the_loggers():
    logger = RecordingLogger()
    run(ToyModel(lr=0.05), logger, max_epochs=2)
    assert logger.hparams == [{"lr": 0.05}]
    assert logger.status == ["success"]
    assert logger.saves >= 4  # train epoch ends and validation ends


def test_only_rank_zero_writes():
    class RankOne(ember.distributed.SingleDeviceStrategy):
        @property
        def global_rank(self):
            return 1

    logger = RecordingLogger()
    trainer = Trainer(
        strategy=RankOne("cpu"),
        logger=logger,
        max_epochs=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    trainer.fit(ToyModel(), loader(8, 4), loader(8, 4))
    assert not trainer.is_global_zero
    assert logger.calls == [] and logger.hparams == [] and logger.status == []
    assert "val_loss" in trainer.callback_metrics  # metrics still exist on every rank


def test_tensorboard_logger_receives_scalars_by_step(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer = Trainer(
        default_root_dir=tmp_path,
        max_epochs=2,
        log_every_n_steps=2,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(ToyModel(), loader(16, 4), loader(8, 4))
    acc = EventAccumulator(trainer.log_dir)
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train_loss", "val_loss", "val_acc", "epoch"} <= tags
    assert [e.step for e in acc.Scalars("train_loss")] == [1, 3, 5, 7]
    assert [e.step for e in acc.Scalars("val_loss")] == [3, 7]
    assert acc.Scalars("val_loss")[-1].value == pytest.approx(
        trainer.callback_metrics["val_loss"], rel=1e-6
    )


# ---------------------------------------------------------------------- errors
def test_log_errors():
    def non_scalar(m, b, i, loss):
        m.log("x", b[0])

    with pytest.raises(
        ValueError,
        match=r"self.log\('x', ...\): the value must be a scalar.*"
        r"shape \(4, 4\)",
    ):
        run(Logs(non_scalar))
    with pytest.raises(TypeError, match=r"self.log\('x', ...\): expected a number .* got str"):
        run(Logs(lambda m, b, i, loss: m.log("x", "high")))
    with pytest.raises(ValueError, match="on_step=False and on_epoch=False"):
        run(Logs(lambda m, b, i, loss: m.log("x", 1.0, on_step=False, on_epoch=False)))
    with pytest.raises(ValueError, match="reduce_fx must be"):
        run(Logs(lambda m, b, i, loss: m.log("x", 1.0, reduce_fx="median")))

    def twice(m, b, i, loss):
        m.log("x", 1.0)
        m.log("x", 1.0, prog_bar=True)

    with pytest.raises(ValueError, match="called twice in training_step"):
        run(Logs(twice))


def test_log_in_a_hook_that_does_not_allow_it():
    class InConfigure(ToyModel):
        def configure_optimizers(self):
            self.log("x", 1.0)
            return super().configure_optimizers()

    with pytest.raises(RuntimeError, match="you can't log inside `configure_optimizers`"):
        run(InConfigure())

    class StepInEpochEnd(ToyModel):
        def on_train_epoch_end(self):
            self.log("x", 1.0, on_step=True)

    with pytest.raises(RuntimeError, match="on_step=True.*not allowed in on_train_epoch_end"):
        run(StepInEpochEnd())


def test_log_without_a_trainer_warns():
    with pytest.warns(UserWarning, match="not attached to a Trainer"):
        ToyModel().log("x", 1.0)


def test_progress_bar_sees_the_current_batch_even_while_accumulating():
    seen = []

    class Reader(Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            seen.append(trainer.progress_bar_metrics["i"])

    model = Logs(lambda m, b, i, loss: m.log("i", float(i), prog_bar=True))
    logger = RecordingLogger()
    trainer = Trainer(
        callbacks=[Reader()],
        max_epochs=1,
        accumulate_grad_batches=2,
        logger=logger,
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, loader(16, 4))
    assert seen == [0.0, 1.0, 2.0, 3.0]
    assert logger.values("i") == [(0, 1.0), (1, 3.0)]  # loggers: once per optimizer step
