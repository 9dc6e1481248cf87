"""Mixed precision end to end: "16-mixed" and "bf16-mixed" train an MLP on the real MNIST test
set (8k train / 2k validation) to within a small margin of the float32 result, and a
"16-mixed" run resumed from a checkpoint (scaler state included) ends bit-identical to an
uninterrupted one."""

from __future__ import annotations

import math

import numpy as np
import pytest

import ember
import ember.nn as nn
import ember.nn.functional as F
from ember.data import DataLoader, random_split
from ember.optim import SGD, Adam
from ember.optim.lr_scheduler import StepLR
from ember.trainer import Trainer, TrainingModule
from tests.conftest import DATA_ROOT
from tests.trainer.helpers import QUIET, loader


class MLP(TrainingModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))

    def forward(self, x):
        return self.net((x - 0.1307) / 0.3081)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return Adam(self.parameters(), lr=2e-3)


def _train(data_dir, precision):
    from ember.data.datasets import MNIST

    ember.manual_seed(0)
    dataset = MNIST(data_dir, train=False)
    train, val = random_split(dataset, [8000, 2000], generator=ember.Generator().manual_seed(0))
    trainer = Trainer(precision=precision, max_epochs=2, num_sanity_val_steps=0, **QUIET)
    model = MLP()
    trainer.fit(
        model, DataLoader(train, batch_size=64, shuffle=True), DataLoader(val, batch_size=500)
    )
    return trainer, model


@pytest.fixture(scope="module")
def mnist_dir():
    """tests/conftest.py's data root, module-scoped so the float32 run happens once."""
    if DATA_ROOT is None:
        pytest.skip("EMBER_DATA_DIR is not set and ../shared/data does not exist")
    return DATA_ROOT


@pytest.fixture(scope="module")
def fp32_result(mnist_dir):
    trainer, _ = _train(mnist_dir, "32-true")
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
def test_mixed_precision_mnist_is_within_a_small_margin_of_float32(
    mnist_dir, fp32_result, precision
):
    trainer, model = _train(mnist_dir, precision)
    acc, loss = (float(trainer.callback_metrics[k]) for k in ("val_acc", "val_loss"))
    print(f"{precision}: val_acc {acc:.4f} val_loss {loss:.4f}; float32 {fp32_result}")
    assert fp32_result["val_acc"] > 0.92
    assert abs(acc - fp32_result["val_acc"]) <= 0.01
    assert abs(loss - fp32_result["val_loss"]) <= 0.03
    assert all(p.dtype == ember.float32 for p in model.parameters())


class Bumpy(TrainingModule):
    """A small classifier whose gradients overflow on two chosen batches."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(4, 2)
        self.where = None

    def on_train_batch_start(self, batch, batch_idx):
        self.where = (self.current_epoch, batch_idx)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.layer(x), y)

    def on_after_backward(self):
        if self.where in ((0, 1), (1, 2)):
            self.layer.weight.grad.data[1, 1] = math.inf

    def configure_optimizers(self):
        opt = SGD(self.parameters(), lr=0.2, momentum=0.9)
        sched = StepLR(opt, step_size=2, gamma=0.7)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _bumpy_trainer(epochs):
    return Trainer(precision="16-mixed", max_epochs=epochs, **QUIET)


def test_resume_with_scaler_state_is_exact(tmp_path):
    ember.manual_seed(0)
    straight, model_a = _bumpy_trainer(2), Bumpy()
    straight.precision_plugin.scaler.set_growth_interval(3)
    straight.fit(model_a, loader(16, 4, shuffle=True))

    ember.manual_seed(0)
    first, model_b = _bumpy_trainer(1), Bumpy()
    first.precision_plugin.scaler.set_growth_interval(3)
    first.fit(model_b, loader(16, 4, shuffle=True))
    path = tmp_path / "half.ckpt"
    first.save_checkpoint(path)
    saved = first.precision_plugin.scaler.state_dict()
    assert (saved["growth_interval"], saved["scale"], saved["_growth_tracker"]) == (3, 2.0**15, 2)

    ember.manual_seed(123)  # the checkpoint restores every RNG
    resumed, model_c = _bumpy_trainer(2), Bumpy()  # a default scaler: the checkpoint sets it
    resumed.fit(model_c, loader(16, 4, shuffle=True), ckpt_path=path)

    assert resumed.global_step == straight.global_step == 8 - 2
    assert (
        resumed.precision_plugin.scaler.state_dict()
        == straight.precision_plugin.scaler.state_dict()
    )
    for p, q in zip(model_c.parameters(), model_a.parameters()):
        np.testing.assert_array_equal(p.data, q.data)
    assert (
        resumed.lr_scheduler_configs[0].scheduler.last_epoch
        == straight.lr_scheduler_configs[0].scheduler.last_epoch
        == 6
    )
