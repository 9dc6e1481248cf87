"""ModelCheckpoint through the real Trainer: the fake-Trainer scenarios of
test_model_checkpoint.py again (saves recorded as markers), then real checkpoint files, resume
and early stopping, and two MPI ranks taking rank zero's decisions."""

from __future__ import annotations

import json
import os

import pytest

from ember.callbacks.model_checkpoint import ModelCheckpoint
from tests.callbacks.fakes import VALUES, files, marker, top2_with_last
from tests.trainer.helpers import QUIET, ToyModel, loader


# ------------------------------------------------------------- with the real Trainer
class Scripted(ToyModel):
    """Logs ``values[current_epoch]`` as ``key`` at each validation epoch end."""

    values: list = []
    key = "val_loss"

    def validation_step(self, batch, batch_idx):
        pass

    def on_validation_epoch_end(self):
        self.log(self.key, float(self.values[self.current_epoch]))


def scripted(values, key="val_loss", cls=Scripted):
    model = cls()
    model.values, model.key = list(values), key
    return model


@pytest.fixture
def marker_saves(monkeypatch):
    """Trainer.save_checkpoint replaced by the JSON marker writer (when and what name; the
    file format has its own tests)."""
    from ember.trainer import Trainer

    def save_checkpoint(self, filepath, weights_only=False, storage_options=None):
        filepath = os.fspath(filepath)
        self._marker_saves = getattr(self, "_marker_saves", []) + [os.path.basename(filepath)]
        os.makedirs(os.path.dirname(filepath), exist_ok=True)
        with open(filepath, "w") as f:
            json.dump(
                {
                    "epoch": self.current_epoch,
                    "step": self.global_step,
                    "weights_only": weights_only,
                },
                f,
            )

    monkeypatch.setattr(Trainer, "save_checkpoint", save_checkpoint)


def real_trainer(tmp_path, callbacks, **kw):
    from ember.trainer import Trainer

    args = {
        **QUIET,
        "max_epochs": 5,
        "num_sanity_val_steps": 0,
        "limit_train_batches": 3,
        "limit_val_batches": 1,
        "default_root_dir": str(tmp_path),
        "callbacks": callbacks,
    }
    args.update(kw)
    return Trainer(**args)


def test_trainer_top_k_scenario(tmp_path, marker_saves):
    d = tmp_path / "ck"
    cb = top2_with_last(d)
    trainer = real_trainer(tmp_path, [cb], num_sanity_val_steps=2)
    trainer.fit(scripted(VALUES), loader(n=12), loader(n=4))
    assert files(d) == {
        "epoch=3-step=12-val_loss=1.000.ckpt",
        "epoch=4-step=15-val_loss=2.000.ckpt",
        "last.ckpt",
    }
    assert trainer.checkpoint_callback is cb and trainer.callbacks[-1] is cb
    assert cb.best_model_path == os.path.join(str(d), "epoch=3-step=12-val_loss=1.000.ckpt")
    assert cb.best_model_score == 1.0 and marker(d / "last.ckpt")["step"] == 15
    assert trainer._marker_saves[:2] == ["epoch=0-step=3-val_loss=5.000.ckpt", "last.ckpt"]
    assert len(trainer._marker_saves) == 10


def test_trainer_monitor_logged_in_on_train_epoch_end_without_validation(tmp_path, marker_saves):
    class EpochEndLogger(ToyModel):
        values = [3.0, 1.0, 2.0]

        def validation_step(self, batch, batch_idx):
            pass

        def on_train_epoch_end(self):
            self.log("epoch_metric", self.values[self.current_epoch])

    d = tmp_path / "ck"
    cb = ModelCheckpoint(dirpath=d, monitor="epoch_metric", filename="{epoch}-{epoch_metric}")
    trainer = real_trainer(tmp_path, [cb], max_epochs=3)
    trainer.fit(EpochEndLogger(), loader(n=12))
    assert files(d) == {"epoch=1-epoch_metric=1.0.ckpt"}


def test_trainer_val_check_interval_saves_after_each_validation(tmp_path, marker_saves):
    class TwicePerEpoch(Scripted):
        def on_validation_epoch_end(self):
            self.log("val_loss", float(self.values.pop(0)))

    d = tmp_path / "ck"
    cb = ModelCheckpoint(
        dirpath=d, monitor="val_loss", save_top_k=-1, filename="{epoch}-{step}-{val_loss:.0f}"
    )
    trainer = real_trainer(
        tmp_path, [cb], max_epochs=2, limit_train_batches=4, val_check_interval=0.5
    )
    trainer.fit(scripted([4, 3, 2, 1], cls=TwicePerEpoch), loader(n=16), loader(n=4))
    assert trainer._marker_saves == [
        "epoch=0-step=2-val_loss=4.ckpt",
        "epoch=0-step=4-val_loss=3.ckpt",
        "epoch=1-step=6-val_loss=2.ckpt",
        "epoch=1-step=8-val_loss=1.ckpt",
    ]


def test_trainer_missing_monitor_error(tmp_path, marker_saves):
    cb = ModelCheckpoint(dirpath=tmp_path / "ck", monitor="val_los")
    trainer = real_trainer(tmp_path, [cb])
    with pytest.raises(ValueError, match=r"metrics: \['train_loss', 'val_loss'\]"):
        trainer.fit(scripted(VALUES), loader(n=12), loader(n=4))
    assert not (tmp_path / "ck").exists()


def test_trainer_every_n_train_steps_and_logger_dir(tmp_path, marker_saves):
    from ember.loggers.csv_logs import CSVLogger

    logger = CSVLogger(save_dir=str(tmp_path), name="run", version=7)
    cb = ModelCheckpoint(every_n_train_steps=4, save_top_k=-1)
    trainer = real_trainer(tmp_path, [cb], logger=logger, max_epochs=2)
    trainer.fit(scripted(VALUES), loader(n=12), loader(n=4))
    d = tmp_path / "run" / "version_7" / "checkpoints"
    assert cb.dirpath == str(d)
    assert files(d) == {"epoch=1-step=4.ckpt"}  # monitor=None, top_k -1: steps 4 only
    assert trainer._marker_saves == ["epoch=1-step=4.ckpt"]


def test_trainer_with_early_stopping(tmp_path, marker_saves):
    from ember.callbacks.early_stopping import EarlyStopping

    d = tmp_path / "ck"
    es = EarlyStopping("val_loss", patience=2)
    cb = ModelCheckpoint(dirpath=d, monitor="val_loss", save_last=True)
    trainer = real_trainer(tmp_path, [cb, es], max_epochs=10)
    trainer.fit(scripted([5, 3, 4, 3.5, 1, 1, 1, 1, 1, 1]), loader(n=12), loader(n=4))
    assert trainer.callbacks[-2:] == [es, cb]  # checkpoints last
    assert es.stopped_epoch == 3 and trainer.current_epoch == 4
    assert files(d) == {"epoch=1-step=6.ckpt", "last.ckpt"}
    assert marker(d / "last.ckpt")["step"] == 12


# ------------------------------------------------- real checkpoints through the real Trainer
def read(path):
    from ember.trainer.checkpoint_io import read_checkpoint

    return read_checkpoint(path)


def test_real_checkpoints_top_k_and_their_state(tmp_path):
    d = tmp_path / "ck"
    cb = top2_with_last(d)
    trainer = real_trainer(tmp_path, [cb])
    trainer.fit(scripted(VALUES), loader(n=12), loader(n=4))
    best = os.path.join(str(d), "epoch=3-step=12-val_loss=1.000.ckpt")
    assert files(d) == {
        "epoch=3-step=12-val_loss=1.000.ckpt",
        "epoch=4-step=15-val_loss=2.000.ckpt",
        "last.ckpt",
    }
    ckpt = read(best)
    assert (ckpt["epoch"], ckpt["global_step"]) == (3, 12)
    state = ckpt["callbacks"][cb.state_key]
    assert state["best_model_path"] == best and state["best_model_score"] == 1.0
    assert state["last_global_step_saved"] == 12
    assert read(d / "last.ckpt")["global_step"] == 15
    # save_weights_only: the model and hyperparameters, no training state
    cb = ModelCheckpoint(dirpath=tmp_path / "w", save_weights_only=True)
    real_trainer(tmp_path, [cb], max_epochs=1).fit(scripted(VALUES), loader(n=12), loader(n=4))
    ckpt = read(cb.best_model_path)
    assert "optimizer_states" not in ckpt and "callbacks" not in ckpt
    assert set(ckpt["state_dict"]) == {"layer.weight", "layer.bias"}


def test_real_resume_from_last_continues_top_k_like_one_run(tmp_path):
    make = top2_with_last

    whole = make(tmp_path / "whole")
    real_trainer(tmp_path, [whole]).fit(scripted(VALUES), loader(n=12), loader(n=4))

    d = tmp_path / "ck"
    first = make(d)
    real_trainer(tmp_path, [first], max_epochs=3).fit(scripted(VALUES), loader(n=12), loader(n=4))
    assert files(d) == {
        "epoch=1-step=6-val_loss=3.000.ckpt",
        "epoch=2-step=9-val_loss=4.000.ckpt",
        "last.ckpt",
    }
    resumed = make(d)
    trainer = real_trainer(tmp_path, [resumed])
    with pytest.warns(UserWarning, match="exists and is not empty"):
        trainer.fit(scripted(VALUES), loader(n=12), loader(n=4), ckpt_path="last")
    assert trainer.ckpt_path == os.path.join(str(d), "last.ckpt")
    assert files(d) == files(tmp_path / "whole")
    for a, b in ((resumed, whole),):
        assert {os.path.basename(p): v for p, v in a.best_k_models.items()} == {
            os.path.basename(p): v for p, v in b.best_k_models.items()
        }
        assert os.path.basename(a.best_model_path) == os.path.basename(b.best_model_path)
        assert a.best_model_score == b.best_model_score == 1.0
    assert read(d / "last.ckpt")["global_step"] == 15


def test_real_fit_ckpt_path_best(tmp_path):
    d = tmp_path / "ck"
    cb = top2_with_last(d)
    trainer = real_trainer(tmp_path, [cb])
    trainer.fit(scripted(VALUES), loader(n=12), loader(n=4))
    best = cb.best_model_path
    trainer.max_epochs = 7
    with pytest.warns(UserWarning, match="exists and is not empty"):
        trainer.fit(scripted(VALUES + [0.5, 0.7]), loader(n=12), loader(n=4), ckpt_path="best")
    assert trainer.ckpt_path == best and trainer.global_step == 21
    # resumed after epoch 3 (step 12) with the state saved then: epoch 4 re-ran (its old file
    # of the first run stays, the rerun got "-v1" and later dropped out), epochs 5 and 6 are
    # the new top 2; the file the run resumed from is never removed
    assert files(d) == {
        "epoch=3-step=12-val_loss=1.000.ckpt",
        "epoch=4-step=15-val_loss=2.000.ckpt",
        "epoch=5-step=18-val_loss=0.500.ckpt",
        "epoch=6-step=21-val_loss=0.700.ckpt",
        "last.ckpt",
    }
    assert {os.path.basename(p) for p in cb.best_k_models} == {
        "epoch=5-step=18-val_loss=0.500.ckpt",
        "epoch=6-step=21-val_loss=0.700.ckpt",
    }
    assert os.path.basename(cb.best_model_path) == "epoch=5-step=18-val_loss=0.500.ckpt"


def test_real_early_stopping_state_survives_resume(tmp_path):
    from ember.callbacks.early_stopping import EarlyStopping

    values = [6, 5, 6, 5.5, 5.2, 5.1, 1, 1, 1, 1]
    whole = EarlyStopping("val_loss", patience=3)
    t = real_trainer(tmp_path, [whole, ModelCheckpoint(dirpath=tmp_path / "w")], max_epochs=10)
    t.fit(scripted(values), loader(n=12), loader(n=4))
    assert whole.stopped_epoch == 4 and t.current_epoch == 5

    d = tmp_path / "ck"
    first = EarlyStopping("val_loss", patience=3)
    real_trainer(tmp_path, [first, ModelCheckpoint(dirpath=d, save_last=True)], max_epochs=3).fit(
        scripted(values), loader(n=12), loader(n=4)
    )
    assert first.wait_count == 1 and not first.stopped_epoch
    resumed = EarlyStopping("val_loss", patience=3)
    trainer = real_trainer(
        tmp_path, [resumed, ModelCheckpoint(dirpath=d, save_last=True)], max_epochs=10
    )
    with pytest.warns(UserWarning, match="not empty"):
        trainer.fit(scripted(values), loader(n=12), loader(n=4), ckpt_path="last")
    assert trainer.current_epoch == 5 and resumed.stopped_epoch == 4
    assert resumed.state_dict() == whole.state_dict()
    assert resumed.stopping_reason == "patience_exhausted"


def test_trainer_adds_a_default_model_checkpoint(tmp_path):
    from ember.trainer import Trainer

    args = {
        **QUIET,
        "max_epochs": 2,
        "num_sanity_val_steps": 0,
        "limit_train_batches": 3,
        "limit_val_batches": 1,
        "default_root_dir": str(tmp_path),
    }
    args.pop("enable_checkpointing")
    trainer = Trainer(**args)
    cb = trainer.checkpoint_callback
    assert isinstance(cb, ModelCheckpoint) and trainer.callbacks[-1] is cb
    trainer.fit(scripted(VALUES), loader(n=12), loader(n=4))
    assert files(tmp_path) == {os.path.join("checkpoints", "epoch=1-step=6.ckpt")}
    assert cb.best_model_path == str(tmp_path / "checkpoints" / "epoch=1-step=6.ckpt")
    # with a logger: under its version directory (CSVLogger shares TensorBoardLogger's
    # save_dir/name/version_N layout and imports faster)
    from ember.loggers.csv_logs import CSVLogger

    args["logger"] = CSVLogger(save_dir=str(tmp_path), name="lightning_logs")
    trainer = Trainer(**args)
    trainer.fit(scripted(VALUES), loader(n=12), loader(n=4))
    d = tmp_path / "lightning_logs" / "version_0" / "checkpoints"
    assert trainer.checkpoint_callback.dirpath == str(d)
    assert files(d) == {"epoch=1-step=6.ckpt"}
    assert "ModelCheckpoint" not in {
        type(c).__name__ for c in Trainer(**{**args, "enable_checkpointing": False}).callbacks
    }


# ------------------------------------------------------------------ two MPI ranks
_MPI_WORKER = """
import json, os, sys
from ember.callbacks import EarlyStopping, ModelCheckpoint
from ember.distributed.ddp_strategy import DDPStrategy
from ember.trainer import Trainer
from tests.callbacks.test_model_checkpoint_trainer import QUIET, loader, scripted

out, d = sys.argv[1], sys.argv[2]
strategy = DDPStrategy()
rank = strategy.global_rank
# each rank logs its own values: rank 1's would pick other files and stop elsewhere
values = [5, 3, 4, 1, 2, 2.5, 3, 3.5, 4, 4] if rank == 0 else [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]
saves = []
cb = ModelCheckpoint(dirpath=d, filename="{epoch}-{val_loss:.1f}", monitor="val_loss",
                     save_top_k=2, save_last=True)
es = EarlyStopping("val_loss", patience=3)
trainer = Trainer(**{**QUIET, "strategy": strategy, "max_epochs": 10, "limit_val_batches": 1,
                     "num_sanity_val_steps": 0, "limit_train_batches": 2,
                     "default_root_dir": d, "callbacks": [es, cb]})
original = trainer.save_checkpoint
trainer.save_checkpoint = lambda p, weights_only=False: (saves.append(os.path.basename(p)),
                                                          original(p, weights_only))
trainer.fit(scripted(values), loader(n=16), loader(n=8))
res = {"saves": saves, "best": os.path.basename(cb.best_model_path),
       "best_k": sorted(os.path.basename(p) for p in cb.best_k_models),
       "score": cb.best_model_score, "epoch": trainer.current_epoch,
       "stopped": es.stopped_epoch, "files": sorted(os.listdir(d))}
with open(f"{out}.{rank}", "w") as f:
    json.dump(res, f)
"""


@pytest.mark.mpi
def test_two_ranks_take_rank_zeros_decisions(tmp_path):
    import subprocess
    import sys

    from tests.distributed.mpirun import ROOT, child_env, mpiexec, one_mpi_job_at_a_time

    script, out, d = tmp_path / "worker.py", tmp_path / "out", tmp_path / "ck"
    script.write_text(_MPI_WORKER)
    with one_mpi_job_at_a_time():
        proc = subprocess.run(
            [mpiexec(), "-n", "2", sys.executable, str(script), str(out), str(d)],
            env=child_env(),
            cwd=str(ROOT),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r0, r1 = (json.loads((tmp_path / f"out.{r}").read_text()) for r in (0, 1))
    # rank 0's values name and rank the files; early stopping stops both ranks when rank 1
    # runs out of patience (its 1 at epoch 0, then three worse values)
    assert r0 == r1
    assert r0["stopped"] == 3 and r0["epoch"] == 4
    assert r0["best"] == "epoch=3-val_loss=1.0.ckpt" and r0["score"] == 1.0
    assert r0["best_k"] == ["epoch=1-val_loss=3.0.ckpt", "epoch=3-val_loss=1.0.ckpt"]
    assert r0["files"] == ["epoch=1-val_loss=3.0.ckpt", "epoch=3-val_loss=1.0.ckpt", "last.ckpt"]
    assert r0["saves"] == [
        "epoch=0-val_loss=5.0.ckpt",
        "last.ckpt",
        "epoch=1-val_loss=3.0.ckpt",
        "last.ckpt",
        "epoch=2-val_loss=4.0.ckpt",
        "last.ckpt",
        "epoch=3-val_loss=1.0.ckpt",
        "last.ckpt",
    ]
