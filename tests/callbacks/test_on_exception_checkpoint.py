"""OnExceptionCheckpoint: a checkpoint when fit dies with an exception or Ctrl-C, none on
success, and a stale one removed by the next successful fit."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from ember.callbacks.model_checkpoint import Checkpoint
from ember.callbacks.on_exception_checkpoint import OnExceptionCheckpoint
from ember.distributed.strategy import SingleDeviceStrategy
from tests.callbacks.fakes import fake_trainer
from tests.trainer.helpers import QUIET, ToyModel, loader


def writer_trainer(**kw):
    t = fake_trainer(**kw)
    t.saved = []

    def save_checkpoint(filepath, weights_only=False):
        t.saved.append((filepath, weights_only))
        os.makedirs(os.path.dirname(filepath), exist_ok=True)
        with open(filepath, "w") as f:
            f.write(f"step={t.global_step}")

    t.save_checkpoint = save_checkpoint
    return t


def test_saves_on_exception_and_keeps_the_file(tmp_path):
    cb = OnExceptionCheckpoint(tmp_path / "crash")
    assert isinstance(cb, Checkpoint)
    assert cb.ckpt_path == os.path.join(str(tmp_path / "crash"), "on_exception.ckpt")
    trainer = writer_trainer(global_step=7)
    cb.setup(trainer, None, "fit")
    cb.on_exception(trainer, None, RuntimeError("boom"))
    assert trainer.saved == [(cb.ckpt_path, False)]
    cb.teardown(trainer, None, "fit")  # Ember's Trainer tears down after on_exception
    with open(cb.ckpt_path) as f:
        assert f.read() == "step=7"


def test_custom_filename_overwrites_and_empty_name_is_refused(tmp_path):
    cb = OnExceptionCheckpoint(str(tmp_path), filename="crash-{x}")
    trainer = writer_trainer(global_step=1)
    cb.on_exception(trainer, None, KeyboardInterrupt())
    trainer.global_step = 2
    cb.on_exception(trainer, None, KeyboardInterrupt())
    assert os.listdir(tmp_path) == ["crash-{x}.ckpt"]  # the name is not a template
    with open(tmp_path / "crash-{x}.ckpt") as f:
        assert f.read() == "step=2"
    with pytest.raises(ValueError, match="filename cannot be empty"):
        OnExceptionCheckpoint(tmp_path, filename="")


def test_a_successful_fit_removes_a_stale_file_other_stages_do_not(tmp_path):
    stale = tmp_path / "on_exception.ckpt"
    stale.write_text("old crash")
    cb = OnExceptionCheckpoint(tmp_path)
    trainer = writer_trainer()
    for stage in ("validate", "test", "predict"):
        cb.setup(trainer, None, stage)
        cb.teardown(trainer, None, stage)
        assert stale.exists()

    class Rank1(SingleDeviceStrategy):
        global_rank = 1

    cb.setup(trainer, None, "fit")
    cb.teardown(writer_trainer(strategy=Rank1()), None, "fit")
    assert stale.exists()  # only rank 0 removes
    cb.teardown(trainer, None, "fit")
    assert not stale.exists()
    cb.teardown(trainer, None, "fit")  # nothing to remove: no error


def test_uses_the_strategy_remove_checkpoint_when_there_is_one(tmp_path):
    removed = []
    strategy = SimpleNamespace(remove_checkpoint=removed.append, is_global_zero=True)
    cb = OnExceptionCheckpoint(tmp_path)
    cb.teardown(SimpleNamespace(strategy=strategy), None, "fit")
    assert removed == [cb.ckpt_path]


# ------------------------------------------------------------- with the real Trainer
class Crashing(ToyModel):
    """Raises ``exc`` in the training step at optimizer step ``at_step``."""

    exc: BaseException = RuntimeError("unset")
    at_step = -1

    def training_step(self, batch, batch_idx):
        if self.global_step == self.at_step:
            raise self.exc
        return super().training_step(batch, batch_idx)


def crashing(exc, at_step):
    model = Crashing()
    model.exc, model.at_step = exc, at_step
    return model


@pytest.fixture
def recorded_saves(monkeypatch):
    """Trainer.save_checkpoint replaced by a marker writer: these tests check when the
    callback saves; the checkpoint format has its own tests."""
    from ember.trainer import Trainer

    saves = []

    def save_checkpoint(self, filepath, weights_only=False, storage_options=None):
        saves.append((os.fspath(filepath), self.global_step, self.current_epoch))
        os.makedirs(os.path.dirname(os.fspath(filepath)), exist_ok=True)
        with open(filepath, "w") as f:
            f.write(f"step={self.global_step}")

    monkeypatch.setattr(Trainer, "save_checkpoint", save_checkpoint)
    return saves


def trainer_with(cb, tmp_path, **kw):
    from ember.trainer import Trainer

    args = {
        **QUIET,
        "max_epochs": 3,
        "num_sanity_val_steps": 0,
        "limit_train_batches": 4,
        "default_root_dir": str(tmp_path),
        "callbacks": [cb],
    }
    args.update(kw)
    return Trainer(**args)


def test_trainer_exception_saves_then_reraises(tmp_path, recorded_saves):
    cb = OnExceptionCheckpoint(tmp_path / "crash")
    trainer = trainer_with(cb, tmp_path)
    with pytest.raises(ValueError, match="bad batch"):
        trainer.fit(crashing(ValueError("bad batch"), at_step=6), loader(n=16))
    assert recorded_saves == [(cb.ckpt_path, 6, 1)]
    assert os.path.exists(cb.ckpt_path)  # teardown after the failure kept it
    assert trainer.state.status == "interrupted"


def test_trainer_keyboard_interrupt_saves(tmp_path, recorded_saves, capsys):
    cb = OnExceptionCheckpoint(tmp_path)
    trainer = trainer_with(cb, tmp_path)
    trainer.fit(crashing(KeyboardInterrupt(), at_step=2), loader(n=16))
    assert recorded_saves == [(cb.ckpt_path, 2, 0)] and trainer.interrupted
    assert "KeyboardInterrupt" in capsys.readouterr().err


def test_trainer_success_saves_nothing_and_clears_a_stale_file(tmp_path, recorded_saves):
    stale = tmp_path / "on_exception.ckpt"
    stale.write_text("old crash")
    trainer = trainer_with(OnExceptionCheckpoint(tmp_path), tmp_path)
    trainer.fit(ToyModel(), loader(n=16))
    assert recorded_saves == [] and not stale.exists()


def test_trainer_real_checkpoint_on_exception_and_resume(tmp_path):
    """The file is a real checkpoint of the step where training died, and fit resumes
    from it."""
    from ember.trainer.checkpoint_io import read_checkpoint

    cb = OnExceptionCheckpoint(tmp_path / "crash")
    trainer = trainer_with(cb, tmp_path)
    # saved inside the failing batch: the Trainer says the resume skips that batch
    with (
        pytest.warns(RuntimeWarning, match="inside training batch 2"),
        pytest.raises(ValueError, match="bad batch"),
    ):
        trainer.fit(crashing(ValueError("bad batch"), at_step=6), loader(n=16))
    ckpt = read_checkpoint(cb.ckpt_path)
    assert (ckpt["epoch"], ckpt["global_step"]) == (1, 6)
    resumed = trainer_with(OnExceptionCheckpoint(tmp_path / "crash"), tmp_path)
    resumed.fit(ToyModel(), loader(n=16), ckpt_path=cb.ckpt_path)
    # the failed batch counts as consumed without its optimizer step: 6 + 1 + 4 steps
    assert resumed.ckpt_path == cb.ckpt_path and resumed.global_step == 11
    assert resumed.batches_seen == 12
    assert not os.path.exists(cb.ckpt_path)  # the successful fit cleared it
