"""Failures must not cost a run: SIGTERM saves and stops cleanly, kill -9 at any moment
leaves a loadable newest checkpoint, disk errors leave the old checkpoint untouched, a
non-finite loss is reported with its step, and load_from_checkpoint rebuilds the module."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

import ember
from ember.callbacks import Callback
from ember.distributed.strategy import SingleDeviceStrategy
from ember.trainer import Trainer
from ember.trainer.checkpoint_io import CheckpointError, read_checkpoint
from tests.trainer.resume_helpers import (
    EPOCHS,
    N_TRAIN,
    QUIET,
    DropoutNet,
    csv_rows,
    fit,
    loaders,
    weights,
)

HELPERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "resume_helpers.py")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("ref"))
    _, model = fit(root)
    return weights(model), csv_rows(root)


def _same_weights(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b))


# -------------------------------------------------------------------------------- SIGTERM
def test_sigterm_in_a_subprocess_saves_stops_and_resumes_exactly(tmp_path, reference):
    root = str(tmp_path)
    child = subprocess.Popen(
        [sys.executable, HELPERS, "sigterm", root],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    marker = os.path.join(root, "running")
    deadline = time.monotonic() + 30
    while not os.path.exists(marker) and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert "DONE interrupted=True sigterm=True" in out and "handler_restored=True" in out
    assert "Received SIGTERM: saved a checkpoint to" in err
    step = int(out.split("step=")[1].split()[0])
    assert 3 <= step < N_TRAIN // 4 * EPOCHS
    last = os.path.join(root, "lightning_logs", "version_0", "checkpoints", "last.ckpt")
    assert read_checkpoint(last)["global_step"] == step

    trainer, model = fit(root, ckpt_path="last")
    assert trainer.ckpt_path == last
    assert _same_weights(weights(model), reference[0])
    assert csv_rows(root) == reference[1]


class SendSigterm(Callback):
    def __init__(self, at_batch: int):
        self.at_batch = at_batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.batches_seen == self.at_batch:
            os.kill(os.getpid(), signal.SIGTERM)


class Keeper(Callback):
    def __init__(self, dirpath):
        self.dirpath, self.best_model_path, self.last_model_path = str(dirpath), "", ""


def test_sigterm_finishes_the_step_then_saves_where_last_looks(tmp_path, reference):
    before = signal.getsignal(signal.SIGTERM)
    trainer, _ = fit(str(tmp_path), [SendSigterm(7)], logger=False)
    assert trainer.interrupted and trainer.received_sigterm and trainer.global_step == 7
    assert signal.getsignal(signal.SIGTERM) is before
    path = tmp_path / "checkpoints" / "last.ckpt"  # <default_root_dir>/checkpoints
    assert read_checkpoint(path)["loops"]["fit_loop"]["progress"]["batch_idx"] == 7
    trainer, model = fit(str(tmp_path), ckpt_path="last", logger=False)
    assert _same_weights(weights(model), reference[0])

    # a checkpoint callback's directory wins; accumulation windows are not cut
    keeper = tmp_path / "keeper"
    trainer, _ = fit(
        str(tmp_path / "acc"),
        [SendSigterm(4), Keeper(keeper)],
        logger=False,
        accumulate_grad_batches=3,
    )
    progress = read_checkpoint(keeper / "last.ckpt")["loops"]["fit_loop"]["progress"]
    assert (progress["batch_idx"], progress["global_step"]) == (6, 2)


# --------------------------------------------------------------------------------- kill -9
def test_kill_9_at_random_moments_leaves_a_loadable_newest_checkpoint(tmp_path, reference):
    """The child saves step-NNN.ckpt and last.ckpt at every step (each write fsyncs, so a
    kill often lands inside one; the 30 steps take at least 0.6 s after the first save, more
    than the longest wait). Every visible .ckpt must load, and last.ckpt must resume to the
    uninterrupted run's weights; leftover temp files are ignored, then cleaned up."""
    rng = np.random.default_rng(6)
    for i in range(4):
        root = tmp_path / f"run{i}"
        ckpts = root / "ckpts"
        root.mkdir()
        child = subprocess.Popen(
            [sys.executable, HELPERS, "kill9", str(root)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        deadline = time.monotonic() + 30
        while not (ckpts / "last.ckpt").exists() and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(float(rng.uniform(0.0, 0.4)))
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate(timeout=30)
        assert child.returncode == -signal.SIGKILL and "DONE" not in out
        names = os.listdir(ckpts)
        visible = [n for n in names if n.endswith(".ckpt") and not n.startswith(".")]
        steps = [read_checkpoint(ckpts / n)["global_step"] for n in visible]  # all complete
        newest = read_checkpoint(ckpts / "last.ckpt")["global_step"]
        assert newest >= max(steps) - 1  # last.ckpt is written right after step-NNN.ckpt

        trainer, model = fit(str(root), [Keeper(ckpts)], ckpt_path="last", logger=False)
        assert trainer.ckpt_path == str(ckpts / "last.ckpt")
        assert _same_weights(weights(model), reference[0])
        trainer.save_checkpoint(ckpts / "last.ckpt")
        assert not [n for n in os.listdir(ckpts) if n.startswith(".last.ckpt.")]


# ------------------------------------------------------------------------------ disk errors
@pytest.fixture
def trained(tmp_path):
    trainer, model = fit(str(tmp_path / "run"), max_epochs=1, logger=False)
    path = tmp_path / "ckpts" / "last.ckpt"
    trainer.save_checkpoint(path)
    return trainer, path, path.read_bytes()


def _intact(path, old: bytes) -> None:
    assert path.read_bytes() == old
    read_checkpoint(path)
    assert [n for n in os.listdir(path.parent) if n.endswith(".tmp")] == []


def test_no_space_left_keeps_the_old_checkpoint(trained, monkeypatch):
    trainer, path, old = trained
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match=f"cannot write '{path}': No space left on device") as e:
        trainer.save_checkpoint(path)
    assert e.value.errno == errno.ENOSPC
    monkeypatch.setattr(os, "fsync", real_fsync)
    _intact(path, old)


@pytest.mark.parametrize(
    "code, text", [(errno.EROFS, "Read-only file system"), (errno.EACCES, "Permission denied")]
)
def test_read_only_directory_keeps_the_old_checkpoint(trained, monkeypatch, code, text):
    """Tests run as root, so chmod cannot make a directory read-only: creating the temp
    file fails as it would."""
    trainer, path, old = trained
    real_open = os.open

    def refuse(file, flags, *args, **kwargs):
        if str(file).endswith(".tmp"):
            raise OSError(code, text)
        return real_open(file, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(OSError, match=f"cannot write '{path}': {text}"):
        trainer.save_checkpoint(path)
    monkeypatch.setattr(os, "open", real_open)
    _intact(path, old)


@pytest.mark.parametrize(
    "error", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()]
)
def test_a_failed_rename_keeps_the_old_checkpoint(trained, monkeypatch, error):
    trainer, path, old = trained

    def fail(src, dst):
        raise error

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(type(error)):
        trainer.save_checkpoint(path)
    monkeypatch.undo()
    _intact(path, old)


def test_bad_paths_are_named(trained, tmp_path):
    trainer, path, _ = trained
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(OSError, match=f"cannot write '{blocker / 'sub' / 'x.ckpt'}'"):
        trainer.save_checkpoint(blocker / "sub" / "x.ckpt")
    with pytest.raises(IsADirectoryError, match=f"cannot write '{tmp_path}': it is a dir"):
        trainer.save_checkpoint(tmp_path)


def test_stale_temp_files_are_ignored_then_removed(trained):
    trainer, path, _ = trained
    stale = path.parent / ".last.ckpt.0123456789ab.tmp"
    stale.write_bytes(path.read_bytes()[:1000])  # what kill -9 mid-write leaves
    with pytest.raises(CheckpointError, match=str(stale)):
        read_checkpoint(stale)
    t = Trainer(**QUIET, logger=False, max_epochs=2, callbacks=[Keeper(path.parent)])
    t.fit(DropoutNet(), loaders()[0], ckpt_path="last")
    assert t.ckpt_path == str(path)
    t.save_checkpoint(path)
    assert not stale.exists()


class Rank(SingleDeviceStrategy):
    """Rank ``rank`` of two; rank 0's broadcast value is ``from_rank0``."""

    def __init__(self, rank: int, from_rank0=None):
        super().__init__("cpu")
        self.rank, self.from_rank0, self.calls = rank, from_rank0, []

    @property
    def global_rank(self) -> int:
        return self.rank

    @property
    def world_size(self) -> int:
        return 2

    def broadcast(self, obj, src: int = 0):
        self.calls.append("broadcast")
        return obj if self.rank == 0 else self.from_rank0

    def barrier(self, name=None):
        self.calls.append("barrier")


def test_only_rank_zero_writes_and_every_rank_learns_the_outcome(trained, tmp_path):
    trainer, _, _ = trained
    trainer.strategy = Rank(1)
    trainer.save_checkpoint(tmp_path / "r1.ckpt")
    assert not (tmp_path / "r1.ckpt").exists()
    assert trainer.strategy.calls == ["broadcast", "barrier"]
    trainer.strategy = Rank(1, from_rank0="OSError: disk full")
    with pytest.raises(RuntimeError, match="rank 0 could not write .*disk full"):
        trainer.save_checkpoint(tmp_path / "r1.ckpt")
    trainer.strategy = Rank(0)
    trainer.save_checkpoint(tmp_path / "r0.ckpt")
    read_checkpoint(tmp_path / "r0.ckpt")


# ------------------------------------------------------------------------ non-finite loss
class NaNAt(DropoutNet):
    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss * float("nan") if self.global_step == 3 else loss


class Snapshot(Callback):
    def __init__(self):
        self.before = self.after = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == 3:
            self.before = weights(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == 4:
            self.after = weights(pl_module)


def test_nonfinite_loss_raise_is_the_default():
    with pytest.raises(
        FloatingPointError,
        match=r"non-finite loss \(nan\) at global step 3 "
        r"\(epoch 0, batch_idx 3\)",
    ):
        Trainer(**QUIET, logger=False, max_epochs=1).fit(NaNAt(), loaders()[0])


def test_nonfinite_loss_skip_leaves_the_weights_alone():
    snap = Snapshot()
    model = NaNAt()
    with pytest.warns(RuntimeWarning, match="global step 3.*skipping this batch"):
        Trainer(
            **QUIET, logger=False, max_epochs=1, callbacks=[snap], on_nonfinite_loss="skip"
        ).fit(model, loaders()[0])
    assert _same_weights(snap.before, snap.after)
    assert all(np.isfinite(w).all() for w in weights(model))


def test_nonfinite_loss_warn_and_bad_option():
    model = NaNAt()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Trainer(**QUIET, logger=False, max_steps=5, on_nonfinite_loss="warn").fit(
            model, loaders()[0]
        )
    nonfinite = [w for w in caught if "non-finite loss" in str(w.message)]
    assert "global step 3" in str(nonfinite[0].message)  # then NaN weights keep it NaN
    assert all(issubclass(w.category, RuntimeWarning) for w in nonfinite)
    assert not all(np.isfinite(w).all() for w in weights(model))
    with pytest.raises(ValueError, match="on_nonfinite_loss='ignore'.*'raise', 'skip', 'warn'"):
        Trainer(on_nonfinite_loss="ignore")


def test_nonfinite_loss_in_manual_optimization():
    class Manual(NaNAt):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False

        def training_step(self, batch, batch_idx):
            opt = self.optimizers()
            opt.zero_grad()
            loss = NaNAt.training_step(self, batch, batch_idx)
            self.manual_backward(loss)
            opt.step()

    with pytest.raises(FloatingPointError, match="global step 3"):
        Trainer(**QUIET, logger=False, max_steps=5).fit(Manual(), loaders()[0])


# ---------------------------------------------------------------------- load_from_checkpoint
def test_load_from_checkpoint_rebuilds_the_module(trained):
    trainer, path, _ = trained
    model = DropoutNet.load_from_checkpoint(path, lr=0.5)
    assert dict(model.hparams) == {"hidden": 16, "lr": 0.5, "p": 0.3}
    assert _same_weights(weights(model), weights(trainer.lightning_module))


def test_load_from_checkpoint_without_hyperparameters(tmp_path):
    class NoHparams(DropoutNet):
        def __init__(self, hidden):
            super(DropoutNet, self).__init__()
            self.fc1, self.fc2 = ember.nn.Linear(4, hidden), ember.nn.Linear(hidden, 2)
            self.drop = ember.nn.Dropout(0.0)

        def configure_optimizers(self):
            return ember.optim.SGD(self.parameters(), lr=0.1)

    trainer = Trainer(**QUIET, logger=False, max_steps=1)
    trainer.fit(NoHparams(16), loaders()[0])
    path = tmp_path / "x.ckpt"
    trainer.save_checkpoint(path)
    assert "hyper_parameters" not in read_checkpoint(path)
    with pytest.raises(
        ValueError,
        match=r"holds no hyperparameters.*needs \['hidden'\].*"
        r"save_hyperparameters\(\)",
    ):
        NoHparams.load_from_checkpoint(path)
    again = NoHparams.load_from_checkpoint(path, hidden=16)
    assert _same_weights(weights(again), weights(trainer.lightning_module))
