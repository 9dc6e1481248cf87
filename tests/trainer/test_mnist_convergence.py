"""Real convergence through the whole stack: a small CNN trained by the Trainer on the real
MNIST test set (8k train / 2k val split) reaches >= 97% validation accuracy."""

from __future__ import annotations

import time

import ember
import ember.nn as nn
import ember.nn.functional as F
from ember.data import DataLoader, random_split
from ember.data.datasets import MNIST
from ember.optim import Adam
from ember.optim.lr_scheduler import OneCycleLR
from ember.trainer import Trainer, TrainingModule


class SmallCNN(TrainingModule):
    def __init__(self, lr: float = 4e-3):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * 7 * 7, 64),
            nn.ReLU(),
            nn.Linear(64, 10),
        )

    def forward(self, x):
        return self.net((x - 0.1307) / 0.3081)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self):
        opt = Adam(self.parameters(), lr=self.hparams.lr)
        steps = self.trainer.estimated_stepping_batches
        sched = OneCycleLR(opt, max_lr=self.hparams.lr, total_steps=steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def test_small_cnn_reaches_97_percent_on_mnist(data_dir):
    ember.manual_seed(0)
    dataset = MNIST(data_dir, train=False)
    train, val = random_split(dataset, [8000, 2000], generator=ember.Generator().manual_seed(0))
    trainer = Trainer(
        max_epochs=4,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    start = time.monotonic()
    trainer.fit(
        SmallCNN(), DataLoader(train, batch_size=64, shuffle=True), DataLoader(val, batch_size=500)
    )
    elapsed = time.monotonic() - start
    acc = trainer.callback_metrics["val_acc"]
    print(f"MNIST: val_acc {acc:.4f} after {trainer.global_step} steps in {elapsed:.1f} s")
    assert trainer.global_step == 4 * 125
    assert acc >= 0.97, trainer.callback_metrics
    # the schedule went down to ~0 and the loss went with it
    assert trainer.optimizers[0].param_groups[0]["lr"] < 1e-4
    assert trainer.callback_metrics["val_loss"] < 0.1
