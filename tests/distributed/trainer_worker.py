"""Trainer scenarios under ``mpiexec -n N python tests/distributed/trainer_worker.py SCENARIO
OUT_PREFIX WORKDIR`` (or a plain ``python`` for one process).

Every rank writes ``OUT_PREFIX.rank<r>.json``; the pytest side (``test_trainer_ddp.py``)
compares them with each other and with single-process references that rank 0 computes.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys

import numpy as np

import ember
import ember.nn as nn
import ember.nn.functional as F
from ember.callbacks import Callback
from ember.data import DataLoader, TensorDataset
from ember.optim import SGD
from ember.trainer import Trainer, TrainingModule

QUIET = {
    "logger": False,
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "enable_checkpointing": False,
    "accelerator": "cpu",
    "num_sanity_val_steps": 0,
}
B = 2  # per-rank batch


def dataset(n: int, seed: int = 0, index_feature: bool = False):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    if index_feature:
        x[:, 0] = np.arange(n)  # the sample's index travels in the batch
    y = (x[:, 1:2] - 0.5 * x[:, 2:3] + 0.1).astype(np.float32)
    return TensorDataset(ember.tensor(x), ember.tensor(y))


class Regressor(TrainingModule):
    """A small MLP (optionally with BatchNorm) that logs three synced metrics per step."""

    def __init__(self, batchnorm: bool = False, fail_rank: int | None = None):
        super().__init__()
        layers = (
            [nn.Linear(4, 8)]
            + ([nn.BatchNorm1d(8)] if batchnorm else [])
            + [nn.Tanh(), nn.Linear(8, 1)]
        )
        self.net = nn.Sequential(*layers)
        self.fail_rank = fail_rank
        self.bn_seen: list = []
        self.seen: list = []  # (epoch, [sample index]) per training batch

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.fail_rank == self.global_rank and batch_idx == 2:
            raise RuntimeError("deliberate failure in training_step")
        self.seen.append((self.current_epoch, x.detach().numpy()[:, 0].tolist()))
        loss = F.mse_loss(self(x), y)
        self.log("loss", loss, sync_dist=True, on_step=True, on_epoch=True, prog_bar=True)
        self.log("rank", float(self.global_rank), sync_dist=True, on_step=True, on_epoch=True)
        self.log("rank_max", float(self.global_rank), sync_dist=True, reduce_fx="max")
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        if batch_idx == 0:
            self.bn_seen.append(
                np.concatenate(
                    [b.detach().numpy().ravel() for b in self.buffers()] or [np.zeros(1)]
                ).tolist()
            )
        self.log("val_loss", F.mse_loss(self(x), y), sync_dist=True)

    def configure_optimizers(self):
        return SGD(self.parameters(), lr=0.1)


def weights(model) -> list:
    return np.concatenate([p.detach().numpy().ravel() for p in model.parameters()]).tolist()


class CountReduce:
    """Count the strategy's reduce calls (the collectives of the metric logging)."""

    def __init__(self, strategy):
        self.calls = 0
        inner = strategy.reduce

        def counted(*args, **kwargs):
            self.calls += 1
            return inner(*args, **kwargs)

        strategy.reduce = counted


class CountNoSync(Callback):
    def __init__(self):
        self.blocked = 0

    def setup(self, trainer, module, stage):
        inner = trainer.strategy.block_backward_sync

        @contextlib.contextmanager
        def counted():
            self.blocked += 1
            with inner():
                yield

        trainer.strategy.block_backward_sync = counted


def fit(workdir: str, rank: int, size: int) -> dict:
    """MLP equivalence, synced logging, exact validation metrics, rank-0-only writing."""
    ember.manual_seed(0)
    model = Regressor()
    train = DataLoader(dataset(40), batch_size=B)
    val = DataLoader(dataset(11, seed=1), batch_size=3)
    root = os.path.join(workdir, f"root{rank}")
    trainer = Trainer(
        max_epochs=2,
        accelerator="cpu",
        default_root_dir=root,
        log_every_n_steps=1,
        num_sanity_val_steps=0,
    )
    counter = CountReduce(trainer.strategy)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        trainer.fit(model, train, val)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    result = {
        "strategy": type(trainer.strategy).__name__,
        "size": trainer.world_size,
        "weights": weights(model),
        "metrics": metrics,
        "reduce_calls": counter.calls,
        "steps": trainer.global_step,
        "printed": len(out.getvalue() + err.getvalue()),
        "files": sorted(
            os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs
        )
        if os.path.isdir(root)
        else None,
        "validate": trainer.validate(model, val, verbose=False)[0],
    }
    if rank == 0:  # the single-process references: the same global batches
        ember.manual_seed(0)
        ref = Regressor()
        single = Trainer(
            max_epochs=2,
            strategy="single_device",
            **{k: v for k, v in QUIET.items() if k != "accelerator"},
        )
        single.fit(ref, DataLoader(dataset(40), batch_size=B * size), val)
        result["single_weights"] = weights(ref)
        result["single_metrics"] = {k: float(v) for k, v in single.callback_metrics.items()}
        # the DDP-trained weights, validated in one process: the same dataset mean
        result["single_validate"] = single.validate(model, val, verbose=False)[0]
    return result


def accumulate(workdir: str, rank: int, size: int) -> dict:
    """Gradient accumulation (no_sync micro-batches) and BatchNorm buffers at validation."""
    ember.manual_seed(0)
    model = Regressor()
    nosync = CountNoSync()
    trainer = Trainer(max_epochs=1, accumulate_grad_batches=2, callbacks=[nosync], **QUIET)
    trainer.fit(model, DataLoader(dataset(40), batch_size=B))
    result = {"weights": weights(model), "blocked": nosync.blocked, "steps": trainer.global_step}
    ember.manual_seed(0)
    bn = Regressor(batchnorm=True)
    Trainer(max_epochs=1, **QUIET).fit(
        bn, DataLoader(dataset(40), batch_size=B), DataLoader(dataset(11, seed=1), batch_size=3)
    )
    result["bn_buffers"] = bn.bn_seen[-1]
    result["bn_params"] = weights(bn)
    if rank == 0:
        ember.manual_seed(0)
        ref = Regressor()
        Trainer(
            max_epochs=1,
            accumulate_grad_batches=2,
            strategy="single_device",
            **{k: v for k, v in QUIET.items() if k != "accelerator"},
        ).fit(ref, DataLoader(dataset(40), batch_size=B * size))
        result["single_weights"] = weights(ref)
    return result


class SaveAt(Callback):
    def __init__(self, path: str, batch_idx: int):
        self.path, self.batch_idx = path, batch_idx

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if batch_idx == self.batch_idx:
            trainer.save_checkpoint(self.path)


def save(workdir: str, rank: int, size: int) -> dict:
    """Train 3 steps of an epoch and checkpoint there (all ranks call save_checkpoint)."""
    ember.manual_seed(0)
    model = Regressor()
    path = os.path.join(workdir, "mid.ckpt")
    trainer = Trainer(max_steps=3, callbacks=[SaveAt(path, 2)], **QUIET)
    trainer.fit(model, DataLoader(dataset(48, index_feature=True), batch_size=B))
    return {"seen": model.seen, "steps": trainer.global_step}


def resume(workdir: str, rank: int, size: int) -> dict:
    """Continue the checkpoint of ``save`` to the end of epoch 1."""
    ember.manual_seed(0)
    model = Regressor()
    trainer = Trainer(max_epochs=2, **QUIET)
    trainer.fit(
        model,
        DataLoader(dataset(48, index_feature=True), batch_size=B),
        ckpt_path=os.path.join(workdir, "mid.ckpt"),
    )
    return {"seen": model.seen, "steps": trainer.global_step}


def fail(workdir: str, rank: int, size: int) -> dict:
    ember.manual_seed(0)
    Trainer(max_epochs=1, **QUIET).fit(
        Regressor(fail_rank=size - 1), DataLoader(dataset(40), batch_size=B)
    )
    return {}


SCENARIOS = {"fit": fit, "accumulate": accumulate, "save": save, "resume": resume, "fail": fail}


def main() -> None:
    scenario, prefix, workdir = sys.argv[1:4]
    from ember.distributed.comm import world

    comm = world()
    result = SCENARIOS[scenario](workdir, comm.rank, comm.size)
    with open(f"{prefix}.rank{comm.rank}.json", "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
