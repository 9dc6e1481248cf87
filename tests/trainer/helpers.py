"""Small models, data and trainer settings shared by the trainer tests (tiny, so that the
whole directory runs in seconds)."""

from __future__ import annotations

import numpy as np

import ember
import ember.nn as nn
import ember.nn.functional as F
from ember.data import DataLoader, TensorDataset
from ember.loggers import Logger
from ember.optim import SGD
from ember.trainer import TrainingModule

QUIET = {
    "logger": False,
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "enable_checkpointing": False,
    "accelerator": "cpu",
}


def toy_data(n: int = 32, seed: int = 0):
    """A linearly separable 2-class problem in 4 dimensions."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    return ember.tensor(x), ember.tensor(y)


def loader(n: int = 32, batch_size: int = 4, shuffle: bool = False, seed: int = 0):
    x, y = toy_data(n, seed)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle)


class ToyModel(TrainingModule):
    """A linear classifier that logs its losses and an accuracy."""

    def __init__(self, lr: float = 0.1):
        super().__init__()
        self.save_hyperparameters()
        self.layer = nn.Linear(4, 2)

    def forward(self, x):
        return self.layer(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_loss", F.cross_entropy(self(x), y))

    def configure_optimizers(self):
        return SGD(self.parameters(), lr=self.hparams.lr)


class RecordingLogger(Logger):
    """Remembers every call: (step, metrics) per log_metrics, hparams, saves, finalize."""

    def __init__(self):
        self.calls: list[tuple[int | None, dict]] = []
        self.hparams: list[dict] = []
        self.saves = 0
        self.status: list[str] = []

    def log_metrics(self, metrics, step=None):
        self.calls.append((step, dict(metrics)))

    def log_hyperparams(self, params, metrics=None):
        self.hparams.append(dict(params))

    def save(self):
        self.saves += 1

    def finalize(self, status):
        self.status.append(status)

    def values(self, name):
        return [(step, m[name]) for step, m in self.calls if name in m]


def weights(model) -> list[np.ndarray]:
    return [p.detach().numpy().copy() for p in model.parameters()]
