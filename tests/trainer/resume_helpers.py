"""A small training setup for the checkpoint tests (Linear + Dropout, shuffled data, SGD with
momentum and a StepLR), shared by the in-process tests and the subprocesses of the SIGTERM and
kill -9 tests (run this file as a script: ``python resume_helpers.py MODE DIR``)."""

from __future__ import annotations

import csv
import os
import random
import sys

import numpy as np

if __name__ == "__main__":  # run as a script by the subprocess tests
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import ember  # noqa: E402
import ember.nn as nn  # noqa: E402
import ember.nn.functional as F  # noqa: E402
from ember.callbacks import Callback  # noqa: E402
from ember.data import DataLoader, TensorDataset  # noqa: E402
from ember.loggers import CSVLogger  # noqa: E402
from ember.optim import SGD  # noqa: E402
from ember.optim.lr_scheduler import StepLR  # noqa: E402
from ember.trainer import Trainer, TrainingModule  # noqa: E402

N_TRAIN, BATCH = 40, 4  # 10 batches (= optimizer steps) per epoch
EPOCHS = 3
QUIET = {
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "enable_checkpointing": False,
    "accelerator": "cpu",
    "num_sanity_val_steps": 0,
}


class DropoutNet(TrainingModule):
    def __init__(self, hidden: int = 16, lr: float = 0.1, p: float = 0.3):
        super().__init__()
        self.save_hyperparameters()
        self.fc1 = nn.Linear(4, hidden)
        self.drop = nn.Dropout(p)
        self.fc2 = nn.Linear(hidden, 2)

    def forward(self, x):
        return self.fc2(self.drop(F.relu(self.fc1(x))))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self(x), y))

    def configure_optimizers(self):
        opt = SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)
        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": StepLR(opt, step_size=4, gamma=0.5), "interval": "step"},
        }


def data(n: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = (x[:, 0] - x[:, 2] > 0).astype(np.int64)
    return TensorDataset(ember.tensor(x), ember.tensor(y))


def loaders():
    return (
        DataLoader(data(N_TRAIN, 0), batch_size=BATCH, shuffle=True),
        DataLoader(data(8, 1), batch_size=4),
    )


def disturb_rngs() -> None:
    """What a new process would look like: every global generator somewhere else."""
    ember.manual_seed(12345)
    np.random.seed(999)
    random.seed(777)
    ember.rand(7)


def weights(model) -> list[np.ndarray]:
    return [v.detach().numpy().copy() for v in model.state_dict().values()]


def csv_rows(save_dir) -> list[dict]:
    """metrics.csv as rows without their empty cells (columns may differ in order)."""
    path = os.path.join(save_dir, "lightning_logs", "version_0", "metrics.csv")
    with open(path, newline="") as fh:
        return [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(fh)]


def fit(save_dir, callbacks=(), ckpt_path=None, max_epochs: int = EPOCHS, logger=True, **kwargs):
    """One fit from seed 0 (model and data built here); returns (trainer, model)."""
    ember.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    model = DropoutNet()
    train, val = loaders()
    if ckpt_path is not None:
        disturb_rngs()  # a resumed run must not depend on the state it starts in
    lg = CSVLogger(save_dir, version=0, flush_logs_every_n_steps=1) if logger else False
    trainer = Trainer(
        max_epochs=max_epochs,
        logger=lg,
        callbacks=list(callbacks),
        log_every_n_steps=1,
        default_root_dir=save_dir,
        **{**QUIET, **kwargs},
    )
    trainer.fit(model, train, val, ckpt_path=ckpt_path)
    return trainer, model


class SaveEveryStep(Callback):
    """Checkpoints at every optimizer step (the kill -9 test's child)."""

    def __init__(self, dirpath: str, sleep: float = 0.0):
        self.dirpath, self.sleep = dirpath, sleep

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        import time

        step = trainer.global_step
        trainer.save_checkpoint(os.path.join(self.dirpath, f"step-{step:03d}.ckpt"))
        trainer.save_checkpoint(os.path.join(self.dirpath, "last.ckpt"))
        if self.sleep:
            time.sleep(self.sleep)


class SlowSteps(Callback):
    """Marks the first steps in a file (so a parent knows training runs) and slows steps."""

    def __init__(self, marker: str, sleep: float):
        self.marker, self.sleep = marker, sleep

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        import time

        if trainer.global_step == 3:
            with open(self.marker, "w") as fh:
                fh.write("running")
        time.sleep(self.sleep)


def main(mode: str, root: str) -> None:
    import signal

    if mode == "sigterm":
        trainer, model = fit(root, [SlowSteps(os.path.join(root, "running"), 0.05)])
        handler_back = signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
        print(
            f"DONE interrupted={trainer.interrupted} sigterm={trainer.received_sigterm} "
            f"step={trainer.global_step} handler_restored={handler_back}",
            flush=True,
        )
    elif mode == "kill9":
        ckpts = os.path.join(root, "ckpts")
        fit(root, [SaveEveryStep(ckpts, 0.02)], logger=False, max_epochs=EPOCHS)
        print("DONE", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
