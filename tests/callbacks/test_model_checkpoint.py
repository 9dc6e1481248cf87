"""ModelCheckpoint on a fake Trainer whose save_checkpoint writes a small JSON marker: file
names, top-k bookkeeping (exactly which files remain), triggers and version suffixes. Errors,
options, ranks and state are in test_model_checkpoint_state.py; the same scenarios through
the real Trainer in test_model_checkpoint_trainer.py."""

from __future__ import annotations

import math
import os
from datetime import timedelta
from types import SimpleNamespace

import pytest

from ember.callbacks import model_checkpoint as mc_mod
from ember.callbacks.callback import Callback
from ember.callbacks.model_checkpoint import ModelCheckpoint
from tests.callbacks.fakes import (
    VALUES,
    Script,
    ckpt_trainer,
    files,
    fit,
    marker,
    run_fit,
    top2_with_last,
)


# ------------------------------------------------------------------------- names
@pytest.mark.parametrize(
    "template, metrics, auto, expected",
    [
        ("{epoch}", {"epoch": 0}, True, "epoch=0.ckpt"),
        ("{epoch:03d}", {"epoch": 5}, True, "epoch=005.ckpt"),
        (
            "{epoch}-{val_loss:.2f}",
            {"epoch": 2, "val_loss": 0.123456},
            True,
            "epoch=2-val_loss=0.12.ckpt",
        ),
        (
            "{epoch}-{step}-{val_loss:.3f}",
            {"epoch": 2, "step": 300, "val_loss": 0.123},
            True,
            "epoch=2-step=300-val_loss=0.123.ckpt",
        ),
        (None, {"epoch": 2, "step": 300}, True, "epoch=2-step=300.ckpt"),
        (
            "epoch={epoch}-validation_loss={val_loss:.2f}",
            {"epoch": 2, "val_loss": 0.123456},
            False,
            "epoch=2-validation_loss=0.12.ckpt",
        ),
        ("{missing:d}", {}, True, "missing=0.ckpt"),
        (
            "epoch={epoch}-step={step}-val_acc={val/acc:.2f}",
            {"epoch": 2, "step": 9, "val/acc": 0.789},
            False,
            "epoch=2-step=9-val_acc=0.79.ckpt",
        ),
        ("{val/acc:.2f}", {"val/acc": 0.789}, True, "val/acc=0.79.ckpt"),
        ("{val.loss:.1f}", {"val.loss": 0.5}, True, "val.loss=0.5.ckpt"),
        ("{epoch}-{epoch_test}", {"epoch": 1, "epoch_test": 7}, True, "epoch=1-epoch_test=7.ckpt"),
        ("model-{epoch}", {"epoch": 1}, True, "model-epoch=1.ckpt"),
        ("{epoch}_{val_loss}", {"epoch": 1, "val_loss": 0.25}, False, "1_0.25.ckpt"),
    ],
)
def test_format_checkpoint_name(tmp_path, template, metrics, auto, expected):
    cb = ModelCheckpoint(dirpath=tmp_path, filename=template, auto_insert_metric_name=auto)
    assert cb.format_checkpoint_name(metrics) == os.path.join(os.path.realpath(tmp_path), expected)
    assert metrics.get("missing") is None  # the caller's dict is left alone


def test_format_checkpoint_name_version_override_and_no_dir():
    cb = ModelCheckpoint(filename="{epoch}")
    assert cb.format_checkpoint_name({"epoch": 2}, ver=3) == "epoch=2-v3.ckpt"
    assert cb.format_checkpoint_name({"epoch": 2, "step": 5}, filename="{step}") == "step=5.ckpt"
    cb.CHECKPOINT_JOIN_CHAR, cb.CHECKPOINT_EQUALS_CHAR = "_", ":"
    assert (
        cb.format_checkpoint_name({"epoch": 2, "step": 5}, filename="{epoch}_{step}", ver=1)
        == "epoch:2_step:5_v1.ckpt"
    )


# --------------------------------------------------------------------- top-k runs


def test_top_k_scenario_exact_files(tmp_path):
    d = tmp_path / "ck"
    cb = top2_with_last(d)
    trainer = fit(tmp_path, cb, VALUES)
    e3, e4 = (
        os.path.join(str(d), n)
        for n in ("epoch=3-step=40-val_loss=1.000.ckpt", "epoch=4-step=50-val_loss=2.000.ckpt")
    )
    assert files(d) == {
        "epoch=3-step=40-val_loss=1.000.ckpt",
        "epoch=4-step=50-val_loss=2.000.ckpt",
        "last.ckpt",
    }
    # every save, in order: the top-k file, then last.ckpt
    assert trainer.saved == [
        "epoch=0-step=10-val_loss=5.000.ckpt",
        "last.ckpt",
        "epoch=1-step=20-val_loss=3.000.ckpt",
        "last.ckpt",
        "epoch=2-step=30-val_loss=4.000.ckpt",
        "last.ckpt",
        "epoch=3-step=40-val_loss=1.000.ckpt",
        "last.ckpt",
        "epoch=4-step=50-val_loss=2.000.ckpt",
        "last.ckpt",
    ]
    assert cb.best_model_path == e3 and cb.best_model_score == 1.0
    assert cb.best_k_models == {e3: 1.0, e4: 2.0}
    assert cb.kth_best_model_path == e4 and cb.kth_value == 2.0
    assert cb.current_score == 2.0
    assert cb.last_model_path == os.path.join(str(d), "last.ckpt")
    assert marker(e3)["step"] == 40 and marker(d / "last.ckpt")["step"] == 50
    # the state written into a file already names that file (set before saving)
    state = marker(e3)["callbacks"][cb.state_key]
    assert state["best_model_path"] == e3 and state["best_model_score"] == 1.0
    assert state["last_global_step_saved"] == 40  # a resumed run does not save step 40 again
    assert (
        marker(d / "last.ckpt")["callbacks"][cb.state_key]["last_model_path"] == cb.last_model_path
    )


def test_top_1_keeps_only_the_best(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path / "ck", monitor="val_loss")
    fit(tmp_path, cb, VALUES)
    assert files(tmp_path / "ck") == {"epoch=3-step=40.ckpt"}
    assert cb.best_k_models == {cb.best_model_path: 1.0}
    assert cb.kth_best_model_path == cb.best_model_path


def test_save_top_k_minus_one_keeps_all(tmp_path):
    cb = ModelCheckpoint(
        dirpath=tmp_path / "ck",
        monitor="val_loss",
        save_top_k=-1,
        filename="{epoch}-{val_loss:.1f}",
    )
    fit(tmp_path, cb, VALUES)
    names = {
        "epoch=0-val_loss=5.0.ckpt",
        "epoch=1-val_loss=3.0.ckpt",
        "epoch=2-val_loss=4.0.ckpt",
        "epoch=3-val_loss=1.0.ckpt",
        "epoch=4-val_loss=2.0.ckpt",
    }
    assert files(tmp_path / "ck") == names
    assert len(cb.best_k_models) == 5
    assert os.path.basename(cb.best_model_path) == "epoch=3-val_loss=1.0.ckpt"
    assert os.path.basename(cb.kth_best_model_path) == "epoch=0-val_loss=5.0.ckpt"
    assert cb.kth_value == 5.0


def test_save_top_k_zero_saves_only_last(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path / "ck", monitor="val_loss", save_top_k=0, save_last=True)
    trainer = fit(tmp_path, cb, VALUES)
    assert files(tmp_path / "ck") == {"last.ckpt"}
    assert trainer.saved == ["last.ckpt"] * 5
    assert cb.best_model_path == "" and cb.best_model_score is None and cb.best_k_models == {}
    # nothing at all without save_last
    cb = ModelCheckpoint(dirpath=tmp_path / "none", monitor="val_loss", save_top_k=0)
    assert fit(tmp_path, cb, VALUES).saved == []


def test_mode_max(tmp_path):
    cb = ModelCheckpoint(
        dirpath=tmp_path / "ck",
        monitor="val_acc",
        mode="max",
        save_top_k=2,
        filename="{epoch}-{val_acc:.2f}",
    )
    fit(tmp_path, cb, [0.1, 0.5, 0.3, 0.7, 0.2], key="val_acc")
    assert files(tmp_path / "ck") == {"epoch=1-val_acc=0.50.ckpt", "epoch=3-val_acc=0.70.ckpt"}
    assert cb.best_model_score == 0.7 and cb.kth_value == 0.5
    assert ModelCheckpoint(mode="max").kth_value == -math.inf
    assert ModelCheckpoint().kth_value == math.inf


def test_ties_do_not_replace(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path / "ck", monitor="val_loss")
    fit(tmp_path, cb, [2, 1, 1, 1])
    assert files(tmp_path / "ck") == {"epoch=1-step=20.ckpt"}


def test_nan_is_ranked_worst(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path / "ck", monitor="val_loss", save_top_k=2)
    fit(tmp_path, cb, [math.nan, 3, 2])
    assert files(tmp_path / "ck") == {"epoch=1-step=20.ckpt", "epoch=2-step=30.ckpt"}
    cb = ModelCheckpoint(dirpath=tmp_path / "ck2", monitor="val_loss", save_top_k=-1)
    fit(tmp_path, cb, [math.nan, 3])
    assert sorted(cb.best_k_models.values()) == [3.0, math.inf]


def test_monitor_none_keeps_latest_or_all(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path / "one")
    fit(tmp_path, cb, epochs=3)
    assert files(tmp_path / "one") == {"epoch=2-step=30.ckpt"}
    assert cb.best_model_path == os.path.join(str(tmp_path / "one"), "epoch=2-step=30.ckpt")
    assert cb.best_model_score is None and cb.best_k_models == {}
    cb = ModelCheckpoint(dirpath=tmp_path / "all", save_top_k=-1)
    fit(tmp_path, cb, epochs=3)
    assert files(tmp_path / "all") == {
        "epoch=0-step=10.ckpt",
        "epoch=1-step=20.ckpt",
        "epoch=2-step=30.ckpt",
    }


def test_every_n_train_steps(tmp_path):
    cb = ModelCheckpoint(
        dirpath=tmp_path / "ck", every_n_train_steps=3, save_top_k=-1, save_last=True
    )
    trainer = fit(tmp_path, cb, epochs=2)
    assert files(tmp_path / "ck") == {
        f"epoch={s // 10}-step={s}.ckpt" for s in (3, 6, 9, 12, 15, 18)
    } | {"last.ckpt"}
    # last.ckpt follows every save, and the epoch end (step 10, 20) refreshes it too
    assert trainer.saved.count("last.ckpt") == 8
    assert marker(tmp_path / "ck" / "last.ckpt")["step"] == 20


def test_every_n_train_steps_with_accumulation_saves_once_per_step(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path / "ck", every_n_train_steps=1, save_top_k=-1)
    trainer = fit(tmp_path, cb, epochs=1, accumulate_grad_batches=5)
    assert trainer.saved == ["epoch=0-step=1.ckpt", "epoch=0-step=2.ckpt"]


def test_every_n_epochs(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path / "ck", every_n_epochs=2, save_top_k=-1, save_last=True)
    trainer = fit(tmp_path, cb, epochs=5)
    assert files(tmp_path / "ck") == {"epoch=1-step=20.ckpt", "epoch=3-step=40.ckpt", "last.ckpt"}
    assert trainer.saved.count("last.ckpt") == 5  # save_last ignores every_n_epochs
    cb = ModelCheckpoint(dirpath=tmp_path / "off", every_n_epochs=0, save_last=True)
    assert set(fit(tmp_path, cb, epochs=2).saved) == {"last.ckpt"}


def test_train_time_interval(tmp_path, monkeypatch):
    clock = SimpleNamespace(t=100.0)
    monkeypatch.setattr(mc_mod, "time", SimpleNamespace(monotonic=lambda: clock.t))

    class Tick(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            clock.t += 1.0

    cb = ModelCheckpoint(
        dirpath=tmp_path / "ck", train_time_interval=timedelta(seconds=3.5), save_top_k=-1
    )
    trainer = ckpt_trainer(tmp_path)
    run_fit(trainer, [Tick(), cb], epochs=1)
    # the clock reads 101, 102, ... after each batch; 3.5 s pass at steps 4 and 8
    assert trainer.saved == ["epoch=0-step=4.ckpt", "epoch=0-step=8.ckpt"]


def test_version_suffix_on_name_collisions(tmp_path):
    metrics = {"train_loss": 1.0}
    cb = ModelCheckpoint(
        dirpath=tmp_path / "ck",
        filename="{epoch}",
        every_n_train_steps=3,
        monitor="train_loss",
        save_top_k=-1,
    )
    fit(tmp_path, cb, epochs=1, callback_metrics=metrics)
    assert files(tmp_path / "ck") == {"epoch=0.ckpt", "epoch=0-v1.ckpt", "epoch=0-v2.ckpt"}
    assert marker(tmp_path / "ck" / "epoch=0-v2.ckpt")["step"] == 9
    # without the counter the file is overwritten
    cb = ModelCheckpoint(
        dirpath=tmp_path / "nover",
        filename="{epoch}",
        every_n_train_steps=3,
        monitor="train_loss",
        save_top_k=-1,
        enable_version_counter=False,
    )
    trainer = fit(tmp_path, cb, epochs=1, callback_metrics=metrics)
    assert files(tmp_path / "nover") == {"epoch=0.ckpt"}
    assert marker(tmp_path / "nover" / "epoch=0.ckpt")["step"] == 9
    assert trainer.saved == ["epoch=0.ckpt"] * 3


def test_monitor_none_overwrites_its_own_previous_file(tmp_path):
    """Lightning: without a monitor, a name equal to the previous checkpoint's replaces it
    (no -v1), whatever save_top_k."""
    cb = ModelCheckpoint(
        dirpath=tmp_path / "ck", filename="{epoch}", every_n_train_steps=4, save_top_k=-1
    )
    trainer = fit(tmp_path, cb, epochs=1)
    assert files(tmp_path / "ck") == {"epoch=0.ckpt"} and trainer.saved == ["epoch=0.ckpt"] * 2
    assert marker(tmp_path / "ck" / "epoch=0.ckpt")["step"] == 8


def test_existing_files_get_versions_and_are_kept(tmp_path):
    d = tmp_path / "ck"
    d.mkdir()
    (d / "last.ckpt").write_text("old run")
    (d / "epoch=0-step=10.ckpt").write_text("old run")
    cb = ModelCheckpoint(dirpath=d, monitor="val_loss", save_last=True)
    with pytest.warns(UserWarning, match="exists and is not empty"):
        fit(tmp_path, cb, [2, 1])
    assert files(d) == {"last.ckpt", "epoch=0-step=10.ckpt", "last-v1.ckpt", "epoch=1-step=20.ckpt"}
    assert (d / "last.ckpt").read_text() == "old run"
    assert (d / "epoch=0-step=10.ckpt").read_text() == "old run"
    assert cb.last_model_path == os.path.join(str(d), "last-v1.ckpt")
    assert cb._find_last_checkpoints(SimpleNamespace(loggers=[])) == {
        os.path.join(str(d), "last.ckpt"),
        os.path.join(str(d), "last-v1.ckpt"),
    }


def test_custom_last_name(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True, save_top_k=0)
    cb.CHECKPOINT_NAME_LAST = "{epoch}-last"
    fit(tmp_path, cb, epochs=3)
    assert files(tmp_path / "ck") == {"epoch=2-last.ckpt"}  # the older ones are replaced


def test_save_last_link(tmp_path):
    d = tmp_path / "ck"
    cb = ModelCheckpoint(dirpath=d, monitor="val_loss", save_last="link")
    trainer = fit(tmp_path, cb, [3, 2, 4])
    assert files(d) == {"epoch=1-step=20.ckpt", "last.ckpt"}
    # epochs 0 and 1 linked last.ckpt to the new best; epoch 2 saved no top-k file, so
    # last.ckpt became a real file (a link would point at a stale checkpoint)
    assert trainer.saved == ["epoch=0-step=10.ckpt", "epoch=1-step=20.ckpt", "last.ckpt"]
    assert not os.path.islink(d / "last.ckpt") and marker(d / "last.ckpt")["step"] == 30
    assert marker(d / "epoch=1-step=20.ckpt")["step"] == 20  # not written through a link
    cb = ModelCheckpoint(dirpath=tmp_path / "l2", monitor="val_loss", save_last="link")
    fit(tmp_path, cb, [3, 2])
    link = tmp_path / "l2" / "last.ckpt"
    assert os.path.islink(link)
    assert os.path.realpath(link) == os.path.realpath(tmp_path / "l2" / "epoch=1-step=20.ckpt")


# ----------------------------------------------------------------- when to save
def test_saves_at_train_epoch_end_by_default_after_validation(tmp_path):
    seen = []

    class Spy(Callback):
        def on_validation_end(self, trainer, pl_module):
            seen.append(("val_end", list(trainer.saved)))

        def on_train_epoch_end(self, trainer, pl_module):
            seen.append(("epoch_end", list(trainer.saved)))

    cb = ModelCheckpoint(dirpath=tmp_path / "ck", monitor="val_loss")
    trainer = ckpt_trainer(tmp_path)
    run_fit(trainer, [Script("val_loss", [1]), cb, Spy()], epochs=1)
    assert seen == [("val_end", []), ("epoch_end", ["epoch=0-step=10.ckpt"])]


def test_save_on_train_epoch_end_false_saves_at_validation_end(tmp_path):
    seen = []

    class Spy(Callback):
        def on_validation_end(self, trainer, pl_module):
            seen.append(list(trainer.saved))

    cb = ModelCheckpoint(dirpath=tmp_path / "ck", monitor="val_loss", save_on_train_epoch_end=False)
    trainer = ckpt_trainer(tmp_path)
    run_fit(trainer, [Script("val_loss", [1, 0.5]), cb, Spy()], epochs=2)
    assert seen == [["epoch=0-step=10.ckpt"], ["epoch=0-step=10.ckpt", "epoch=1-step=20.ckpt"]]
    assert files(tmp_path / "ck") == {"epoch=1-step=20.ckpt"}


@pytest.mark.parametrize(
    "trainer_kw, at_epoch_end",
    [
        ({}, True),
        ({"val_check_interval": 1.0, "check_val_every_n_epoch": 1}, True),
        ({"val_check_interval": 0.5}, False),
        ({"val_check_interval": 3}, False),
        ({"check_val_every_n_epoch": 2}, False),
        ({"check_val_every_n_epoch": None}, False),
        ({"num_val_batches": [0], "check_val_every_n_epoch": 1}, True),
        ({"num_val_batches": []}, True),
    ],
)
def test_save_on_train_epoch_end_resolution(tmp_path, trainer_kw, at_epoch_end):
    trainer = ckpt_trainer(tmp_path, **trainer_kw)
    assert ModelCheckpoint()._should_save_on_train_epoch_end(trainer) is at_epoch_end
    assert (
        ModelCheckpoint(save_on_train_epoch_end=True)._should_save_on_train_epoch_end(trainer)
        is True
    )


def test_no_validation_saves_train_metric_at_epoch_end(tmp_path):
    class LogTrain(Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            trainer.callback_metrics["train_loss"] = [3.0, 1.0, 2.0][trainer.current_epoch]

    cb = ModelCheckpoint(
        dirpath=tmp_path / "ck", monitor="train_loss", filename="{epoch}-{train_loss:.1f}"
    )
    trainer = ckpt_trainer(tmp_path, num_val_batches=[0])
    run_fit(trainer, [LogTrain(), cb], epochs=3, val=False)
    assert files(tmp_path / "ck") == {"epoch=1-train_loss=1.0.ckpt"}


def test_validation_every_second_epoch(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path / "ck", monitor="val_loss", save_top_k=-1)
    trainer = ckpt_trainer(tmp_path, check_val_every_n_epoch=2)
    metric = Script("val_loss", [4, 3, 2, 1])

    def epoch(e, validate):
        trainer.current_epoch, trainer.global_step = e, 10 * (e + 1)
        if validate:
            metric.on_validation_epoch_end(trainer, None)
            cb.on_validation_end(trainer, None)
        cb.on_train_epoch_end(trainer, None)

    cb.setup(trainer, None, "fit")
    for e in range(4):
        epoch(e, validate=e % 2 == 1)
    assert trainer.saved == ["epoch=1-step=20.ckpt", "epoch=3-step=40.ckpt"]


def test_nothing_saved_in_sanity_check_other_stages_fast_dev_run_or_without_steps(tmp_path):
    for kw in (
        {"sanity_checking": True},
        {"state": SimpleNamespace(fn="validate")},
        {"fast_dev_run": 1},
        {"global_step": 0},
    ):
        trainer = ckpt_trainer(
            tmp_path, callback_metrics={"val_loss": 1.0}, global_step=kw.pop("global_step", 5)
        )
        for k, v in kw.items():
            setattr(trainer, k, v)
        cb = ModelCheckpoint(
            dirpath=tmp_path / "ck", monitor="val_loss", save_last=True, every_n_train_steps=1
        )
        cb.on_train_batch_end(trainer, None, None, None, 0)
        cb.on_train_epoch_end(trainer, None)
        cb.on_validation_end(trainer, None)
        assert trainer.saved == [], kw
    # the sanity check does not count as a validation run (missing key: no error yet)
    trainer = ckpt_trainer(tmp_path)
    cb = ModelCheckpoint(dirpath=tmp_path / "ck2", monitor="val_loss", every_n_train_steps=1)
    run_fit(trainer, [cb], epochs=0, sanity=True)
    assert cb._val_has_run is False


def test_no_duplicate_save_at_the_same_step(tmp_path):
    cb = ModelCheckpoint(
        dirpath=tmp_path / "ck", every_n_train_steps=5, every_n_epochs=None, save_last=True
    )
    trainer = fit(tmp_path, cb, epochs=1)
    # step 10 is saved by the batch hook; the epoch end at step 10 does not save again
    assert trainer.saved == [
        "epoch=0-step=5.ckpt",
        "last.ckpt",
        "epoch=0-step=10.ckpt",
        "last.ckpt",
    ]
