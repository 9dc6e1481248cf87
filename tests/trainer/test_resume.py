"""Exact resume on the CPU: a run interrupted anywhere and resumed in a new Trainer with a new
model (after the global RNGs were disturbed) ends with bit-identical weights and the same
logged metrics, each point once. The run: Linear + Dropout, shuffled data, SGD with momentum
and a StepLR, validation every epoch, 3 epochs of 10 steps."""

from __future__ import annotations

import os

import numpy as np
import pytest

from ember.callbacks import Callback
from ember.trainer import Trainer
from tests.trainer.resume_helpers import (
    QUIET,
    DropoutNet,
    csv_rows,
    data,
    disturb_rngs,
    fit,
    weights,
)


class Interrupt(Callback):
    """Saves a checkpoint at a chosen point, then stops the run: KeyboardInterrupt, or
    ``should_stop`` ("stop"), or carries on and crashes at a later step ("crash@N")."""

    def __init__(self, path: str, hook: str, at: int, how: str = "raise"):
        self.path, self.hook, self.at, self.how = path, hook, at, how

    def _here(self, trainer, hook: str, key: int) -> None:
        if hook == self.hook and key == self.at:
            trainer.save_checkpoint(self.path)
            if self.how == "raise":
                raise KeyboardInterrupt
            if self.how == "stop":
                trainer.should_stop = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._here(trainer, "batch_end", trainer.global_step)
        if self.how.startswith("crash@") and trainer.global_step == int(self.how[6:]):
            raise RuntimeError("simulated crash")

    def on_train_epoch_start(self, trainer, pl_module):
        self._here(trainer, "epoch_start", trainer.current_epoch)

    def on_train_epoch_end(self, trainer, pl_module):
        self._here(trainer, "epoch_end", trainer.current_epoch)

    def on_validation_end(self, trainer, pl_module):
        self._here(trainer, "val_end", trainer.current_epoch)


def _reference(root, **kwargs):
    _, model = fit(os.path.join(root, "reference"), **kwargs)
    return weights(model), csv_rows(os.path.join(root, "reference"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return _reference(str(tmp_path_factory.mktemp("ref")))


def _interrupt_and_resume(root, hook, at, how="raise", **kwargs):
    run_dir = os.path.join(root, "run")
    path = os.path.join(run_dir, "interrupt.ckpt")
    if how.startswith("crash@"):
        with pytest.raises(RuntimeError, match="simulated crash"):
            fit(run_dir, [Interrupt(path, hook, at, how)], **kwargs)
    else:
        trainer, _ = fit(run_dir, [Interrupt(path, hook, at, how)], **kwargs)
        assert trainer.interrupted == (how == "raise")
    assert os.path.isfile(path)
    trainer, model = fit(run_dir, ckpt_path=path, **kwargs)
    assert trainer.ckpt_path == path and not trainer.interrupted
    return weights(model), csv_rows(run_dir)


def _assert_same(got, expected):
    for a, b in zip(got[0], expected[0]):
        assert np.array_equal(a, b)
    assert got[1] == expected[1]
    steps = [(r["step"], tuple(sorted(r))) for r in got[1]]
    assert len(steps) == len(set(steps))  # no point twice


@pytest.mark.parametrize(
    "hook, at, how",
    [
        ("batch_end", 13, "raise"),  # mid-epoch
        ("batch_end", 10, "raise"),  # after the last batch of an epoch, before its validation
        ("val_end", 1, "raise"),  # inside the validation at an epoch's end
        ("epoch_end", 0, "raise"),  # between epochs, in the epoch-end hooks
        ("epoch_start", 1, "raise"),  # between epochs, before the next epoch's first batch
        ("batch_end", 17, "stop"),  # should_stop: the old run validates and ends its epoch
        ("batch_end", 13, "crash@24"),  # the old run went on past the checkpoint, then died
        ("epoch_end", 0, "crash@15"),
    ],
)
def test_interrupted_run_resumes_bit_identically(tmp_path, reference, hook, at, how):
    _assert_same(_interrupt_and_resume(str(tmp_path), hook, at, how), reference)


@pytest.mark.parametrize("hook, at", [("batch_end", 7), ("batch_end", 10), ("epoch_end", 0)])
def test_resume_with_limit_train_batches(tmp_path, hook, at):
    """An epoch cut short by limit_train_batches: the resumed run still starts a new
    epoch (a new shuffle) where the uninterrupted one did."""
    expected = _reference(str(tmp_path), limit_train_batches=7)
    got = _interrupt_and_resume(str(tmp_path), hook, at, limit_train_batches=7)
    _assert_same(got, expected)


def test_tensorboard_logs_have_no_duplicates(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ember.loggers import TensorBoardLogger

    def run(root, callbacks=(), ckpt_path=None):  # resume_helpers.fit with TensorBoard
        import random

        import ember
        from tests.trainer import resume_helpers as h

        ember.manual_seed(0)
        np.random.seed(0)
        random.seed(0)
        model = DropoutNet()
        train, val = h.loaders()
        if ckpt_path is not None:
            disturb_rngs()
        trainer = Trainer(
            max_epochs=3,
            logger=TensorBoardLogger(root, version=0),
            callbacks=list(callbacks),
            log_every_n_steps=1,
            **QUIET,
        )
        trainer.fit(model, train, val, ckpt_path=ckpt_path)
        acc = EventAccumulator(os.path.join(root, "lightning_logs", "version_0"))
        acc.Reload()
        return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}

    expected = run(str(tmp_path / "ref"))
    path = str(tmp_path / "run" / "x.ckpt")
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(str(tmp_path / "run"), [Interrupt(path, "batch_end", 13, "crash@24")])
    got = run(str(tmp_path / "run"), ckpt_path=path)
    assert set(got) == set(expected) and "train_loss_step" in got
    for tag in expected:
        assert got[tag] == expected[tag], tag
    assert [s for s, _ in got["train_loss_step"]] == list(range(30))


def test_loader_without_state_dict_resumes_mid_epoch(tmp_path):
    """A plain list of batches has no position to restore: its first batches are read
    again and dropped (with a warning); with a fixed order the result is still exact."""
    import ember

    x, y = data(40, 0).tensors
    batches = [
        (ember.tensor(x.numpy()[i : i + 4]), ember.tensor(y.numpy()[i : i + 4]))
        for i in range(0, 40, 4)
    ]

    def run(callbacks=(), ckpt_path=None):
        ember.manual_seed(0)
        model = DropoutNet()
        if ckpt_path:
            disturb_rngs()
        trainer = Trainer(max_epochs=2, logger=False, callbacks=list(callbacks), **QUIET)
        trainer.fit(model, batches, ckpt_path=ckpt_path)
        return weights(model)

    expected = run()
    path = str(tmp_path / "x.ckpt")
    run([Interrupt(path, "batch_end", 13)])
    with pytest.warns(UserWarning, match="no state_dict.*first 3 batches"):
        got = run(ckpt_path=path)
    for a, b in zip(got, expected):
        assert np.array_equal(a, b)


class Keeper(Callback):
    """A checkpoint callback as the Trainer sees one: dirpath, best and last paths."""

    def __init__(self, dirpath, best=""):
        self.dirpath, self.best_model_path, self.last_model_path = str(dirpath), best, ""


def test_ckpt_path_last_and_best(tmp_path):
    trainer, _ = fit(str(tmp_path / "a"), max_epochs=1, logger=False)
    ckpts = tmp_path / "ckpts"
    trainer.save_checkpoint(ckpts / "epoch=0.ckpt")
    trainer.save_checkpoint(ckpts / "last.ckpt")
    os.utime(ckpts / "last.ckpt", (1, 1))
    trainer.save_checkpoint(ckpts / "last-v1.ckpt")  # the newest last*.ckpt wins
    (ckpts / ".last-v2.ckpt.0123456789ab.tmp").write_bytes(b"half a file")  # never a candidate

    t = Trainer(
        **QUIET,
        logger=False,
        max_epochs=2,
        callbacks=[Keeper(ckpts, best=str(ckpts / "epoch=0.ckpt"))],
    )
    t.fit(DropoutNet(), data_loader(), ckpt_path="last")
    assert t.ckpt_path == str(ckpts / "last-v1.ckpt") and t.global_step == 20
    t = Trainer(
        **QUIET,
        logger=False,
        max_epochs=2,
        callbacks=[Keeper(ckpts, best=str(ckpts / "epoch=0.ckpt"))],
    )
    t.fit(DropoutNet(), data_loader(), ckpt_path="best")
    assert t.ckpt_path == str(ckpts / "epoch=0.ckpt")

    with pytest.raises(ValueError, match='ckpt_path="best"\\) needs a ModelCheckpoint'):
        Trainer(**QUIET, logger=False).fit(DropoutNet(), data_loader(), ckpt_path="best")
    with pytest.raises(ValueError, match="has not saved a best checkpoint"):
        Trainer(**QUIET, logger=False, callbacks=[Keeper(ckpts)]).fit(
            DropoutNet(), data_loader(), ckpt_path="best"
        )
    empty = tmp_path / "empty"
    with pytest.raises(ValueError, match="no ModelCheckpoint callback and no last.ckpt"):
        Trainer(**QUIET, logger=False, default_root_dir=empty).fit(
            DropoutNet(), data_loader(), ckpt_path="last"
        )
    t = Trainer(
        **QUIET, logger=False, max_steps=2, callbacks=[Keeper(empty)], default_root_dir=empty
    )
    with pytest.warns(UserWarning, match="no last checkpoint available"):
        t.fit(DropoutNet(), data_loader(), ckpt_path="last")
    assert t.ckpt_path is None and t.global_step == 2


def test_validate_and_test_load_the_weights(tmp_path):
    trainer, model = fit(str(tmp_path), max_epochs=1, logger=False)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    fresh = DropoutNet()
    val = data_loader(shuffle=False)
    out = Trainer(**QUIET, logger=False).validate(fresh, val, ckpt_path=path, verbose=False)
    expected = Trainer(**QUIET, logger=False).validate(model, val, verbose=False)
    assert out == expected
    for a, b in zip(weights(fresh), weights(model)):
        assert np.array_equal(a, b)


def data_loader(shuffle: bool = True):
    from ember.data import DataLoader

    return DataLoader(data(40, 0), batch_size=4, shuffle=shuffle)


@pytest.mark.filterwarnings("ignore:.*(could not find the monitored key|is not empty)")
def test_resume_from_model_checkpoint_files(tmp_path):
    """With the real ModelCheckpoint (top-k on val_loss, last.ckpt, every 7 steps): a run
    that crashes resumes from "last" to the uninterrupted run's weights and logs, and the
    callback's bookkeeping comes back."""
    from ember.callbacks import ModelCheckpoint

    def callback(root):
        return ModelCheckpoint(
            dirpath=os.path.join(root, "ckpts"),
            monitor="val_loss",
            save_top_k=2,
            save_last=True,
            every_n_train_steps=7,
        )

    class Crash(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 25:
                raise RuntimeError("simulated crash")

    ref_root, run_root = str(tmp_path / "ref"), str(tmp_path / "run")
    _, ref_model = fit(ref_root, [callback(ref_root)])
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(run_root, [callback(run_root), Crash()])
    cb = callback(run_root)
    trainer, model = fit(run_root, [cb], ckpt_path="last")
    assert trainer.ckpt_path == os.path.join(run_root, "ckpts", "last.ckpt")
    _assert_same((weights(model), csv_rows(run_root)), (weights(ref_model), csv_rows(ref_root)))
    assert len(cb.best_k_models) == 2 and os.path.isfile(cb.best_model_path)
