"""A tiny fit with the loggers attached: the event files and metrics.csv hold the train loss
by global step and the hyperparameters from ``save_hyperparameters()``."""

from __future__ import annotations

import csv
import os

import pytest

import ember
import ember.nn as nn
import ember.nn.functional as F
from ember.data import DataLoader, TensorDataset
from ember.loggers import CSVLogger, TensorBoardLogger
from ember.loggers._hparams import load_hparams_yaml
from ember.optim import SGD
from ember.trainer import Trainer, TrainingModule
from tests.loggers._events import hparams_plugin, load, scalars

QUIET = {"enable_progress_bar": False, "enable_model_summary": False, "enable_checkpointing": False}


class Regressor(TrainingModule):
    def __init__(self, lr: float = 0.05, hidden: int = 3, tag: str = "tiny"):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Linear(3, 1)
        self.seen: list[tuple[int, float]] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.mse_loss(self.net(x), y)
        self.seen.append((self.global_step, loss.item()))
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return SGD(self.parameters(), lr=self.hparams.lr)


def _loader():
    x = ember.randn(24, 3)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4)


def test_fit_writes_train_loss_by_global_step_and_hparams(tmp_path):
    tb = TensorBoardLogger(tmp_path)
    csv_logger = CSVLogger(tmp_path, name="csv")
    model = Regressor(lr=0.05, hidden=3)
    trainer = Trainer(max_epochs=2, logger=[tb, csv_logger], log_every_n_steps=1, **QUIET)
    trainer.fit(model, _loader())
    assert trainer.global_step == 12 and trainer.log_dir == tb.log_dir

    ea = load(tb.log_dir)
    logged = scalars(ea, "train_loss")
    assert [step for step, _ in logged] == list(range(12))
    assert [step for step, _ in model.seen] == list(range(12))
    assert [v for _, v in logged] == pytest.approx([v for _, v in model.seen], rel=1e-6)
    assert scalars(ea, "hp_metric") == [(0, -1.0)]

    start, experiment = hparams_plugin(ea)
    assert start.hparams["lr"].number_value == pytest.approx(0.05)
    assert start.hparams["hidden"].number_value == 3
    assert start.hparams["tag"].string_value == "tiny"
    assert [m.name.tag for m in experiment.metric_infos] == ["hp_metric"]
    expected = {"lr": 0.05, "hidden": 3, "tag": "tiny"}
    assert load_hparams_yaml(os.path.join(tb.log_dir, "hparams.yaml")) == expected
    assert load_hparams_yaml(os.path.join(csv_logger.log_dir, "hparams.yaml")) == expected

    with open(os.path.join(csv_logger.log_dir, "metrics.csv"), newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("train_loss")]
    assert [int(r["step"]) for r in rows] == list(range(12))
    assert [float(r["train_loss"]) for r in rows] == pytest.approx(
        [v for _, v in model.seen], rel=1e-6
    )


def test_default_logger_is_tensorboard_in_default_root_dir(tmp_path):
    trainer = Trainer(max_epochs=1, default_root_dir=str(tmp_path), log_every_n_steps=1, **QUIET)
    trainer.fit(Regressor(), _loader())
    assert isinstance(trainer.logger, TensorBoardLogger)
    log_dir = os.path.join(tmp_path, "lightning_logs", "version_0")
    assert trainer.log_dir == log_dir
    assert [s for s, _ in scalars(load(log_dir), "train_loss")] == list(range(6))


def test_fit_logs_weight_and_gradient_histograms_every_n_steps(tmp_path):
    logger = TensorBoardLogger(tmp_path, histogram_every_n_steps=4)
    trainer = Trainer(max_epochs=1, logger=logger, **QUIET)
    trainer.fit(Regressor(), _loader())
    ea = load(logger.log_dir)
    tags = set(ea.Tags()["histograms"])
    assert {"weights/net.weight", "gradients/net.weight", "weights/net.bias"} <= tags
    steps = [e.step for e in ea.Histograms("gradients/net.weight")]
    assert steps and all(s % 4 == 0 for s in steps)
