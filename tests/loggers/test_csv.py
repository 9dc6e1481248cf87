"""CSVLogger: metrics.csv content and header growth, hparams.yaml, versions, ranks, exit."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import numpy as np
import pytest

import ember
from ember.loggers import CSVLogger, TensorBoardLogger
from ember.loggers._hparams import load_hparams_yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _read(logger) -> tuple[list[str], list[dict]]:
    with open(os.path.join(logger.log_dir, "metrics.csv"), newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    return reader.fieldnames, rows


def test_rows_per_step_and_columns_growing_mid_run(tmp_path):
    logger = CSVLogger(tmp_path, flush_logs_every_n_steps=2)
    logger.log_metrics({"train_loss": ember.tensor(2.5), "lr": np.float32(0.5)}, 0)
    logger.log_metrics({"train_loss": 2.0, "lr": 0.25}, 1)  # (1 + 1) % 2 == 0: flushed
    assert _read(logger) == (
        ["step", "train_loss", "lr"],
        [
            {"step": "0", "train_loss": "2.5", "lr": "0.5"},
            {"step": "1", "train_loss": "2.0", "lr": "0.25"},
        ],
    )
    # Validation metrics appear at step 1 too, and a new epoch column later: the header grows
    # and the earlier rows are rewritten under it.
    logger.log_metrics({"val_loss": 3.0, "epoch": 0}, 1)
    logger.log_metrics({"train_loss": ember.tensor(1.5)}, 2)
    logger.finalize("success")
    header, rows = _read(logger)
    assert header == ["step", "train_loss", "lr", "val_loss", "epoch"]
    assert rows == [
        {"step": "0", "train_loss": "2.5", "lr": "0.5", "val_loss": "", "epoch": ""},
        {"step": "1", "train_loss": "2.0", "lr": "0.25", "val_loss": "", "epoch": ""},
        {"step": "1", "train_loss": "", "lr": "", "val_loss": "3.0", "epoch": "0"},
        {"step": "2", "train_loss": "1.5", "lr": "", "val_loss": "", "epoch": ""},
    ]


def test_same_step_values_share_a_row_and_step_none_counts(tmp_path):
    logger = CSVLogger(tmp_path, prefix="fit")
    logger.log_metrics({"a": 1}, 5)
    logger.log_metrics({"b": True}, 5)  # same step, new keys: same row
    logger.log_metrics({"a": 2}, 5)  # same key again: a new row
    logger.log_metrics({"c": {"x": 1.0, "y": ember.tensor(2.0)}})  # step None: rows so far
    logger.save()
    header, rows = _read(logger)
    assert header == ["step", "fit-a", "fit-b", "fit-c/x", "fit-c/y"]
    assert [dict(r) for r in rows] == [
        {"step": "5", "fit-a": "1", "fit-b": "1", "fit-c/x": "", "fit-c/y": ""},
        {"step": "5", "fit-a": "2", "fit-b": "", "fit-c/x": "", "fit-c/y": ""},
        {"step": "3", "fit-a": "", "fit-b": "", "fit-c/x": "1.0", "fit-c/y": "2.0"},
    ]


def test_values_are_exact(tmp_path):
    logger = CSVLogger(tmp_path)
    value = np.float32(1) / 3
    logger.log_metrics({"third": ember.tensor(value), "big": 1e300}, 0)
    logger.finalize("success")
    row = _read(logger)[1][0]
    assert float(row["third"]) == float(value) and float(row["big"]) == 1e300


def test_flush_every_n_steps(tmp_path):
    logger = CSVLogger(tmp_path, flush_logs_every_n_steps=3)
    path = os.path.join(logger.log_dir, "metrics.csv")
    logger.log_metrics({"a": 0.0}, 0)
    logger.log_metrics({"a": 1.0}, 1)
    assert not os.path.exists(path)
    logger.log_metrics({"a": 2.0}, 2)
    assert len(_read(logger)[1]) == 3
    with pytest.raises(ValueError, match="flush_logs_every_n_steps must be a positive int"):
        CSVLogger(tmp_path, flush_logs_every_n_steps=0)


def test_non_scalar_error(tmp_path):
    with pytest.raises(
        ValueError,
        match=r"CSVLogger.log_metrics: metric 'm' must be a scalar, "
        r"got a tensor of shape \(2,\)",
    ):
        CSVLogger(tmp_path).log_metrics({"m": ember.tensor([1.0, 2.0])}, 0)


def test_hparams_yaml(tmp_path):
    logger = CSVLogger(tmp_path)
    logger.log_hyperparams({"lr": 0.1, "model": {"depth": 3, "acts": ("relu", "gelu")}})
    logger.log_hyperparams({"seed": np.int32(4)}, metrics={"hp": 1.0})
    logger.finalize("success")
    assert load_hparams_yaml(os.path.join(logger.log_dir, "hparams.yaml")) == {
        "lr": 0.1,
        "model": {"depth": 3, "acts": ["relu", "gelu"]},
        "seed": 4,
    }
    assert _read(logger) == (["step", "hp"], [{"step": "0", "hp": "1.0"}])


def test_version_layout_shared_with_tensorboard(tmp_path):
    tb = TensorBoardLogger(tmp_path, name="exp")
    tb.log_metrics({"a": 1.0}, 0)
    tb.finalize("success")
    logger = CSVLogger(tmp_path, name="exp")
    assert logger.version == 1
    assert logger.log_dir == os.path.join(tmp_path, "exp", "version_1")
    assert CSVLogger(tmp_path, name="exp", version="named").log_dir == os.path.join(
        tmp_path, "exp", "named"
    )


def test_existing_file_is_replaced_or_continued_with_purge_step(tmp_path):
    first = CSVLogger(tmp_path)
    for step in range(6):
        first.log_metrics({"loss": float(step)}, step)
    first.finalize("success")

    resumed = CSVLogger(tmp_path, version=0, purge_step=3)
    for step in range(3, 5):
        resumed.log_metrics({"loss": 10.0 + step, "acc": 0.5}, step)
    resumed.finalize("success")
    assert _read(resumed) == (
        ["step", "loss", "acc"],
        [
            {"step": "0", "loss": "0.0", "acc": ""},
            {"step": "1", "loss": "1.0", "acc": ""},
            {"step": "2", "loss": "2.0", "acc": ""},
            {"step": "3", "loss": "13.0", "acc": "0.5"},
            {"step": "4", "loss": "14.0", "acc": "0.5"},
        ],
    )

    # Set after the logger wrote (the Trainer restores before or after logging hparams).
    late = CSVLogger(tmp_path, version=0, purge_step=5)
    late.log_metrics({"loss": 5.5}, 5)  # keeps the five rows above, adds step 5
    late.purge_step = 4  # drops steps 4 and 5, including the buffered row
    late.log_metrics({"loss": 44.0}, 4)
    late.finalize("success")
    assert [(r["step"], r["loss"]) for r in _read(late)[1]] == [
        ("0", "0.0"),
        ("1", "1.0"),
        ("2", "2.0"),
        ("3", "13.0"),
        ("4", "44.0"),
    ]
    with pytest.raises(ValueError, match="purge_step must be a non-negative int"):
        late.purge_step = -3

    fresh = CSVLogger(tmp_path, version=0)
    with pytest.warns(UserWarning, match="metrics.csv' already exists; it will be replaced"):
        fresh.log_metrics({"other": 1.0}, 0)
    fresh.finalize("success")
    assert _read(fresh) == (["step", "other"], [{"step": "0", "other": "1.0"}])


def test_non_zero_rank_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBER_RANK", "2")
    logger = CSVLogger(tmp_path / "logs", flush_logs_every_n_steps=1)
    logger.log_hyperparams({"lr": 0.1})
    logger.log_metrics({"loss": 1.0}, 0)
    logger.save()
    logger.finalize("success")
    assert list(tmp_path.iterdir()) == []


def test_save_dir_that_is_a_file(tmp_path):
    path = tmp_path / "file.txt"
    path.write_text("x")
    with pytest.raises(NotADirectoryError, match=r"CSVLogger: .*file\.txt' is a file"):
        CSVLogger(path)


def test_buffered_rows_are_written_at_exit(tmp_path):
    code = (
        "from ember.loggers import CSVLogger; import sys; "
        "lg = CSVLogger(sys.argv[1], version=0); lg.log_metrics({'loss': 0.5}, 0)"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, cwd=ROOT)
    with open(tmp_path / "lightning_logs" / "version_0" / "metrics.csv") as fh:
        assert fh.read().splitlines() == ["step,loss", "0,0.5"]
