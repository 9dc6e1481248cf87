"""ModelCheckpoint on the fake Trainer (see test_model_checkpoint.py): a missing monitor,
loggers and options, argument errors, behaviour on other ranks, and its state: strict JSON,
round trips and resume."""

from __future__ import annotations

import json
import os
from datetime import timedelta

import pytest

from ember.callbacks.model_checkpoint import ModelCheckpoint
from ember.distributed.strategy import SingleDeviceStrategy
from tests.callbacks.fakes import (
    VALUES,
    RecordingLogger,
    Script,
    ckpt_trainer,
    files,
    fit,
    marker,
    run_fit,
)


# --------------------------------------------------------------- missing monitor
def test_missing_monitor_is_an_error_listing_the_logged_keys(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path / "ck", monitor="val_los")
    trainer = ckpt_trainer(tmp_path)
    with pytest.raises(ValueError) as info:
        run_fit(trainer, [Script("val_loss", [1, 2]), cb], epochs=2)
    assert str(info.value) == (
        "`ModelCheckpoint(monitor='val_los')` could not find the monitored key in the returned "
        "metrics: ['val_loss']. HINT: Did you call `log('val_los', value)` in the "
        "`TrainingModule`?"
    )
    assert trainer.saved == [] and not (tmp_path / "ck").exists()


def test_missing_monitor_before_validation_warns_then_raises(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path / "ck", monitor="val_loss", every_n_train_steps=2)
    trainer = ckpt_trainer(tmp_path, callback_metrics={"train_loss": 1.0}, global_step=2)
    with pytest.warns(UserWarning, match=r"metrics: \['train_loss'\]"):
        cb.on_train_batch_end(trainer, None, None, None, 1)
    assert trainer.saved == []
    trainer.global_step = 4
    cb.on_train_batch_end(trainer, None, None, None, 3)  # warned once only
    cb.on_validation_end(trainer, None)  # validation ran without logging val_loss
    trainer.global_step = 6
    with pytest.raises(ValueError, match="could not find the monitored key"):
        cb.on_train_batch_end(trainer, None, None, None, 5)


# ------------------------------------------------------------ loggers, options
def test_loggers_are_notified_and_weights_only_passed(tmp_path):
    class Notified(RecordingLogger):
        def __init__(self):
            super().__init__()
            self.seen = []

        def after_save_checkpoint(self, checkpoint_callback):
            self.seen.append(os.path.basename(checkpoint_callback.best_model_path))

    logger = Notified()
    cb = ModelCheckpoint(dirpath=tmp_path / "ck", save_weights_only=True)
    trainer = fit(tmp_path, cb, epochs=2, loggers=[logger], logger=logger)
    assert logger.seen == ["epoch=0-step=10.ckpt", "epoch=1-step=20.ckpt"]
    assert marker(cb.best_model_path)["weights_only"] is True
    assert trainer.saved == ["epoch=0-step=10.ckpt", "epoch=1-step=20.ckpt"]


def test_default_dirpath(tmp_path):
    cb = ModelCheckpoint()
    cb.setup(ckpt_trainer(tmp_path), None, "fit")
    assert cb.dirpath == os.path.join(str(tmp_path), "checkpoints")
    cb = ModelCheckpoint()
    logger = RecordingLogger()
    trainer = ckpt_trainer(tmp_path, loggers=[logger], log_dir=str(tmp_path / "logs" / "v_3"))
    cb.setup(trainer, None, "fit")
    assert cb.dirpath == os.path.join(str(tmp_path), "logs", "v_3", "checkpoints")
    # a logger without a directory: the root directory
    cb = ModelCheckpoint()
    cb.setup(ckpt_trainer(tmp_path, loggers=[logger], log_dir=None), None, "fit")
    assert cb.dirpath == os.path.join(str(tmp_path), "checkpoints")
    # a given dirpath is made absolute and kept
    cb = ModelCheckpoint(dirpath="~/x/../y")
    assert cb.dirpath == os.path.realpath(os.path.expanduser("~/y"))


def test_verbose(tmp_path, capsys):
    cb = ModelCheckpoint(dirpath=tmp_path / "ck", monitor="val_loss", verbose=True)
    fit(tmp_path, cb, [2, 3])
    out = capsys.readouterr().out.splitlines()
    path = os.path.join(str(tmp_path / "ck"), "epoch=0-step=10.ckpt")
    assert out == [
        f"Epoch 0, global step 10: 'val_loss' reached 2.00000 (best 2.00000), "
        f"saving model to {path!r} as top 1",
        "Epoch 1, global step 20: 'val_loss' was not in top 1",
    ]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mode": "avg"}, "`mode` can be min, max"),
        ({"save_top_k": -2}, "save_top_k=-2"),
        ({"every_n_train_steps": -1}, "every_n_train_steps=-1"),
        ({"every_n_epochs": -1}, "every_n_epochs=-1"),
        ({"every_n_epochs": 1, "every_n_train_steps": 2}, "mutually exclusive"),
        ({"train_time_interval": timedelta(seconds=1), "every_n_epochs": 2}, "mutually exclusive"),
        ({"save_top_k": 3}, "No quantity for top_k to track"),
        ({"save_last": "copy"}, "save_last"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ModelCheckpoint(**kwargs)


def test_trigger_defaults_and_state_key():
    cb = ModelCheckpoint()
    assert (cb._every_n_epochs, cb._every_n_train_steps) == (1, 0)
    cb = ModelCheckpoint(every_n_train_steps=5)
    assert (cb._every_n_epochs, cb._every_n_train_steps) == (0, 5)
    assert ModelCheckpoint(train_time_interval=2)._train_time_interval == timedelta(seconds=2)
    with pytest.raises(TypeError, match="timedelta"):
        ModelCheckpoint(train_time_interval="1h")
    keys = {
        ModelCheckpoint(monitor="a").state_key,
        ModelCheckpoint(monitor="b").state_key,
        ModelCheckpoint(monitor="a", mode="max").state_key,
        ModelCheckpoint(monitor="a", every_n_train_steps=3).state_key,
    }
    assert len(keys) == 4
    assert (
        ModelCheckpoint(monitor="a").state_key
        == ModelCheckpoint(monitor="a", save_top_k=3).state_key
    )


# ------------------------------------------------------------------------ ranks
class OtherRank(SingleDeviceStrategy):
    """Rank 1 of 2: broadcast returns what rank 0 holds (given), decisions are recorded."""

    def __init__(self, rank0_metrics=None):
        super().__init__()
        self.rank0_metrics = rank0_metrics
        self.broadcasts = []

    @property
    def global_rank(self):
        return 1

    @property
    def world_size(self):
        return 2

    def broadcast(self, obj, src=0):
        self.broadcasts.append(obj)
        if isinstance(obj, bool):  # "does the file exist?": rank 0 has not written it yet
            return False
        if isinstance(obj, dict) and self.rank0_metrics is not None:
            return {**obj, **self.rank0_metrics}
        return obj


def test_other_ranks_call_save_but_never_remove(tmp_path):
    d = tmp_path / "ck"
    cb0 = ModelCheckpoint(dirpath=d, monitor="val_loss", save_top_k=2, save_last=True)
    t0 = fit(tmp_path / "r0", cb0, VALUES)
    # rank 1 shares the directory: the files rank 0 wrote stay, whatever rank 1 decides
    d1 = tmp_path / "r1"
    d1.mkdir()
    for name in ("epoch=0-step=10.ckpt", "epoch=1-step=20.ckpt"):
        (d1 / name).write_text("x")
    cb1 = ModelCheckpoint(dirpath=d1, monitor="val_loss", save_top_k=2, save_last=True)
    t1 = fit(tmp_path / "r1x", cb1, VALUES, write=False, strategy=OtherRank())
    assert files(d1) == {"epoch=0-step=10.ckpt", "epoch=1-step=20.ckpt"}
    assert t1.saved != []
    # same decisions: the same sequence of saves and the same bookkeeping (names relative)
    assert [os.path.basename(p) for p in cb1.best_k_models] == [
        os.path.basename(p) for p in cb0.best_k_models
    ]
    assert os.path.basename(cb1.best_model_path) == os.path.basename(cb0.best_model_path)
    assert len(t1.saved) == len(t0.saved)


def test_metrics_that_name_files_come_from_rank_zero(tmp_path):
    """A rank whose local val_loss differs still names and ranks files with rank 0's."""
    cb = ModelCheckpoint(
        dirpath=tmp_path / "ck", monitor="val_loss", filename="{epoch}-{val_loss:.1f}"
    )
    strategy = OtherRank(rank0_metrics={"val_loss": 0.5})
    trainer = ckpt_trainer(
        tmp_path, write=False, strategy=strategy, callback_metrics={"val_loss": 9.0}, global_step=10
    )
    cb.setup(trainer, None, "fit")
    cb.on_train_epoch_end(trainer, None)
    assert trainer.saved == ["epoch=0-val_loss=0.5.ckpt"] and cb.best_model_score == 0.5


# ------------------------------------------------------------------------ state
def test_state_is_strict_json_and_round_trips(tmp_path):
    d = tmp_path / "ck"
    cb = ModelCheckpoint(dirpath=d, monitor="val_loss", save_top_k=2, save_last=True)
    fresh = json.loads(json.dumps(cb.state_dict(), allow_nan=False))
    assert fresh["kth_value"] == "inf" and fresh["best_model_score"] is None
    fit(tmp_path, cb, VALUES)
    state = json.loads(json.dumps(cb.state_dict(), allow_nan=False))
    assert state == {
        "monitor": "val_loss",
        "best_model_score": 1.0,
        "current_score": 2.0,
        "best_model_path": cb.best_model_path,
        "dirpath": str(d),
        "best_k_models": {
            os.path.join(str(d), "epoch=3-step=40.ckpt"): 1.0,
            os.path.join(str(d), "epoch=4-step=50.ckpt"): 2.0,
        },
        "kth_best_model_path": os.path.join(str(d), "epoch=4-step=50.ckpt"),
        "kth_value": 2.0,
        "last_model_path": os.path.join(str(d), "last.ckpt"),
        "last_global_step_saved": 50,
    }
    other = ModelCheckpoint(dirpath=d, monitor="val_loss", save_top_k=2, save_last=True)
    other.load_state_dict(state)
    assert other.state_dict() == cb.state_dict()


def test_resume_continues_top_k_and_removes_old_files(tmp_path):
    """Three epochs, a state round trip into a new callback, two more: the same files and
    state as one uninterrupted run."""
    d_whole, d = tmp_path / "whole", tmp_path / "ck"
    whole = ModelCheckpoint(dirpath=d_whole, monitor="val_loss", save_top_k=2, save_last=True)
    fit(tmp_path, whole, VALUES)

    first = ModelCheckpoint(dirpath=d, monitor="val_loss", save_top_k=2, save_last=True)
    trainer = ckpt_trainer(tmp_path)
    trainer.callbacks = [first]
    run_fit(trainer, [Script("val_loss", VALUES), first], epochs=3)
    assert files(d) == {"epoch=1-step=20.ckpt", "epoch=2-step=30.ckpt", "last.ckpt"}
    state = json.loads(json.dumps(first.state_dict()))

    resumed = ModelCheckpoint(dirpath=d, monitor="val_loss", save_top_k=2, save_last=True)
    resumed.load_state_dict(state)
    trainer.callbacks = [resumed]
    with pytest.warns(UserWarning, match="exists and is not empty"):
        resumed.setup(trainer, None, "fit")
    script = Script("val_loss", VALUES)
    for epoch in (3, 4):
        trainer.current_epoch, trainer.global_step = epoch, 10 * (epoch + 1)
        script.on_validation_epoch_end(trainer, None)
        resumed.on_train_epoch_end(trainer, None)
    assert (
        files(d) == files(d_whole) == {"epoch=3-step=40.ckpt", "epoch=4-step=50.ckpt", "last.ckpt"}
    )
    norm = {str(d_whole): "D", str(d): "D"}

    def rel(state):
        text = json.dumps(state)
        for k, v in norm.items():
            text = text.replace(k, v)
        return json.loads(text)

    assert rel(resumed.state_dict()) == rel(whole.state_dict())


def test_resume_does_not_save_again_at_the_restored_step(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True)
    cb.load_state_dict({"dirpath": cb.dirpath, "best_model_path": "", "last_global_step_saved": 30})
    trainer = ckpt_trainer(tmp_path, global_step=30)
    cb.on_train_epoch_end(trainer, None)
    assert trainer.saved == []


def test_resume_with_a_changed_dirpath_keeps_only_best_model_path(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path / "a", monitor="val_loss")
    fit(tmp_path, cb, [2, 1])
    moved = ModelCheckpoint(dirpath=tmp_path / "b", monitor="val_loss")
    with pytest.warns(UserWarning, match="The dirpath has changed from"):
        moved.load_state_dict(cb.state_dict())
    assert moved.best_model_path == cb.best_model_path
    assert moved.best_model_score is None and moved.best_k_models == {}


def test_state_loaded_before_setup_waits_for_the_directory(tmp_path):
    first = ModelCheckpoint(monitor="val_loss")
    fit(tmp_path, first, [2, 1])
    assert first.dirpath == os.path.join(str(tmp_path), "checkpoints")
    later = ModelCheckpoint(monitor="val_loss")
    later.load_state_dict(first.state_dict())
    assert later.best_model_path == ""  # not applied before the directory is known
    with pytest.warns(UserWarning, match="exists and is not empty"):
        later.setup(ckpt_trainer(tmp_path), None, "fit")
    assert later.state_dict() == first.state_dict()


def test_the_resumed_from_file_is_never_removed(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path / "ck", monitor="val_loss")
    trainer = fit(tmp_path, cb, [2])
    resume_from = cb.best_model_path
    trainer.ckpt_path = resume_from
    trainer.current_epoch, trainer.global_step = 1, 20
    trainer.callback_metrics["val_loss"] = 1.0
    cb.on_train_epoch_end(trainer, None)
    assert os.path.exists(resume_from) and cb.best_model_path != resume_from
    # a file outside dirpath is never removed either
    outside = tmp_path / "elsewhere.ckpt"
    assert not cb._should_remove_checkpoint(trainer, str(outside), cb.best_model_path)
    assert not cb._should_remove_checkpoint(trainer, cb.best_model_path, cb.best_model_path)


def test_to_yaml(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path / "ck", monitor="val_loss", save_top_k=2)
    fit(tmp_path, cb, [3, 2, 1])
    cb.to_yaml()
    import yaml

    with open(tmp_path / "ck" / "best_k_models.yaml") as f:
        assert yaml.safe_load(f) == {
            os.path.join(str(tmp_path / "ck"), "epoch=1-step=20.ckpt"): 2.0,
            os.path.join(str(tmp_path / "ck"), "epoch=2-step=30.ckpt"): 1.0,
        }
