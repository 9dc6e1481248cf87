"""TensorBoardLogger: files are read back with TensorBoard's own EventAccumulator."""

from __future__ import annotations

import os
import subprocess
import sys
from argparse import Namespace

import numpy as np
import pytest

import ember
import ember.nn as nn
from ember.loggers import TensorBoardLogger
from ember.loggers._hparams import load_hparams_yaml
from tests.loggers._events import hparams_plugin, load, scalars


def _files(root) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs
    )


# ---------------------------------------------------------------- layout and versions
def test_layout_and_version_autoincrement(tmp_path):
    first = TensorBoardLogger(tmp_path)
    assert first.version == 0 and first.name == "lightning_logs"
    assert first.save_dir == str(tmp_path)
    assert first.root_dir == os.path.join(tmp_path, "lightning_logs")
    assert first.log_dir == os.path.join(tmp_path, "lightning_logs", "version_0")
    first.log_metrics({"a": 1.0}, 0)
    first.finalize("success")
    assert os.path.isdir(first.log_dir)

    second = TensorBoardLogger(tmp_path)
    assert second.version == 1
    # Not versions: a file called version_7, a non-numeric suffix. A gap is fine.
    (tmp_path / "lightning_logs" / "version_7").write_text("not a dir")
    (tmp_path / "lightning_logs" / "version_x").mkdir()
    (tmp_path / "lightning_logs" / "version_4").mkdir()
    assert TensorBoardLogger(tmp_path).version == 5


def test_explicit_int_and_string_versions_name_and_sub_dir(tmp_path):
    assert TensorBoardLogger(tmp_path, version=3).log_dir == os.path.join(
        tmp_path, "lightning_logs", "version_3"
    )
    assert TensorBoardLogger(tmp_path, name="exp", version="run_a").log_dir == os.path.join(
        tmp_path, "exp", "run_a"
    )
    assert TensorBoardLogger(tmp_path, name="").log_dir == os.path.join(tmp_path, "version_0")
    logger = TensorBoardLogger(tmp_path, name="exp", version=1, sub_dir="fit")
    assert logger.log_dir == os.path.join(tmp_path, "exp", "version_1", "fit")
    logger.log_metrics({"a": 1.0}, 0)
    logger.finalize("success")
    assert any(
        f.startswith(os.path.join("exp", "version_1", "fit", "events.out.tfevents"))
        for f in _files(tmp_path)
    )
    with pytest.raises(TypeError, match="version must be an int, a str or None"):
        TensorBoardLogger(tmp_path, version=1.5)


def test_constructing_and_asking_for_paths_writes_nothing(tmp_path):
    logger = TensorBoardLogger(tmp_path / "runs")
    _ = logger.version, logger.log_dir, logger.root_dir
    assert not (tmp_path / "runs").exists()


def test_save_dir_that_is_a_file_is_named_in_the_error(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(NotADirectoryError, match=r"TensorBoardLogger: .*'.*afile' is a file"):
        TensorBoardLogger(blocker)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "exp").write_text("x")
    with pytest.raises(NotADirectoryError, match=r"exp' is a file, not a directory"):
        TensorBoardLogger(tmp_path / "d", name="exp")


# ---------------------------------------------------------------- scalars
def test_scalars_by_step_from_floats_tensors_and_numpy(tmp_path):
    logger = TensorBoardLogger(tmp_path, flush_secs=1)
    for step in range(4):
        logger.log_metrics(
            {
                "float": 0.5 * step,
                "int": step,
                "tensor0d": ember.tensor(float(step) + 0.25),
                "tensor1el": ember.tensor([2.0 * step]),
                "np_scalar": np.float32(step) / 4,
                "np_0d": np.array(-step, dtype=np.float64),
                "flag": bool(step % 2),
            },
            step,
        )
    logger.finalize("success")
    ea = load(logger.log_dir)
    assert sorted(ea.Tags()["scalars"]) == sorted(
        ["float", "int", "tensor0d", "tensor1el", "np_scalar", "np_0d", "flag"]
    )
    assert scalars(ea, "float") == [(s, 0.5 * s) for s in range(4)]
    assert scalars(ea, "int") == [(s, s) for s in range(4)]
    assert scalars(ea, "tensor0d") == [(s, s + 0.25) for s in range(4)]
    assert scalars(ea, "tensor1el") == [(s, 2.0 * s) for s in range(4)]
    assert scalars(ea, "np_scalar") == [(s, s / 4) for s in range(4)]
    assert scalars(ea, "np_0d") == [(s, -s) for s in range(4)]
    assert scalars(ea, "flag") == [(s, s % 2) for s in range(4)]


def test_prefix_and_tensor_requiring_grad(tmp_path):
    w = ember.tensor(3.0, requires_grad=True)
    logger = TensorBoardLogger(tmp_path, prefix="train")
    logger.log_metrics({"loss": w * 2}, 7)
    logger.finalize("success")
    ea = load(logger.log_dir)
    assert ea.Tags()["scalars"] == ["train-loss"]
    assert scalars(ea, "train-loss") == [(7, 6.0)]


def test_dict_value_becomes_one_chart(tmp_path):
    logger = TensorBoardLogger(tmp_path)
    logger.log_metrics({"loss": {"train": 1.0, "val": ember.tensor(2.0)}}, 3)
    logger.finalize("success")
    for sub, value in (("train", 1.0), ("val", 2.0)):
        ea = load(os.path.join(logger.log_dir, "loss", sub))
        assert scalars(ea, "loss") == [(3, value)]


def test_non_scalar_metric_error_names_key_and_shape(tmp_path):
    logger = TensorBoardLogger(tmp_path)
    with pytest.raises(
        ValueError,
        match=r"metric 'vec' must be a scalar, got a tensor of shape "
        r"\(3,\)",
    ):
        logger.log_metrics({"vec": ember.tensor([1.0, 2.0, 3.0])}, 0)
    with pytest.raises(ValueError, match=r"metric 'arr' must be a scalar.*\(2, 2\)"):
        logger.log_metrics({"arr": np.zeros((2, 2))}, 0)
    with pytest.raises(ValueError, match="metric 'name' must be a number or a one-element"):
        logger.log_metrics({"name": "abc"}, 0)
    logger.finalize("failed")


def test_save_flushes_pending_events(tmp_path):
    """tensorboardX's own flush() leaves queued events unwritten; save() must not."""
    logger = TensorBoardLogger(tmp_path, flush_secs=3600, max_queue=1000)
    for epoch in range(3):
        for step in range(epoch * 40, (epoch + 1) * 40):
            logger.log_metrics({"loss": float(step)}, step)
        logger.save()  # epoch end
        assert scalars(load(logger.log_dir), "loss") == [
            (s, float(s)) for s in range((epoch + 1) * 40)
        ]
    logger.finalize("success")


# ---------------------------------------------------------------- hyperparameters
def test_hparams_yaml_and_hparams_plugin(tmp_path):
    params = {
        "lr": 1e-3,
        "layers": 4,
        "use_bias": True,
        "act": "gelu",
        "optimizer": {"name": "adamw", "betas": (0.9, 0.95), "sched": {"warmup": 100}},
        "scale": ember.tensor(2.5),
        "np_int": np.int64(7),
        "shape": np.zeros((2, 3)),
        "nothing": None,
    }
    logger = TensorBoardLogger(tmp_path)
    logger.log_hyperparams(params)
    logger.finalize("success")

    yaml_data = load_hparams_yaml(os.path.join(logger.log_dir, "hparams.yaml"))
    assert yaml_data == {
        "lr": 1e-3,
        "layers": 4,
        "use_bias": True,
        "act": "gelu",
        "optimizer": {"name": "adamw", "betas": [0.9, 0.95], "sched": {"warmup": 100}},
        "scale": 2.5,
        "np_int": 7,
        "shape": [[0.0] * 3] * 2,
        "nothing": None,
    }

    ea = load(logger.log_dir)
    start, experiment = hparams_plugin(ea)
    hp = start.hparams
    assert set(hp) == {
        "lr",
        "layers",
        "use_bias",
        "act",
        "optimizer/name",
        "optimizer/betas",
        "optimizer/sched/warmup",
        "scale",
        "np_int",
        "shape",
        "nothing",
    }
    assert hp["lr"].number_value == pytest.approx(1e-3)
    assert hp["layers"].number_value == 4
    assert hp["use_bias"].bool_value is True
    assert hp["act"].string_value == "gelu"
    assert hp["optimizer/name"].string_value == "adamw"
    assert hp["optimizer/betas"].string_value == "[0.9, 0.95]"
    assert hp["optimizer/sched/warmup"].number_value == 100
    assert hp["scale"].number_value == 2.5
    assert hp["np_int"].number_value == 7
    assert hp["shape"].string_value == str([[0.0] * 3] * 2)
    assert hp["nothing"].string_value == "None"
    assert [m.name.tag for m in experiment.metric_infos] == ["hp_metric"]
    assert scalars(ea, "hp_metric") == [(0, -1.0)]


def test_hparams_with_chosen_metrics_and_namespace(tmp_path):
    logger = TensorBoardLogger(tmp_path, default_hp_metric=False)
    logger.log_hyperparams(Namespace(lr=0.1, depth=2))  # no metric: yaml only
    assert load_hparams_yaml(os.path.join(logger.log_dir, "hparams.yaml")) == {
        "lr": 0.1,
        "depth": 2,
    }
    logger.save()
    with pytest.raises(KeyError):
        load(logger.log_dir).PluginTagToContent("hparams")

    logger.log_hyperparams({"width": 8}, metrics={"val/acc": 0.0, "val/loss": ember.tensor(9.0)})
    logger.finalize("success")
    ea = load(logger.log_dir)
    start, experiment = hparams_plugin(ea)
    assert set(start.hparams) == {"lr", "depth", "width"}  # merged with the first call
    assert sorted(m.name.tag for m in experiment.metric_infos) == ["val/acc", "val/loss"]
    assert scalars(ea, "val/loss") == [(0, 9.0)]
    assert "hp_metric" not in ea.Tags()["scalars"]
    assert load_hparams_yaml(os.path.join(logger.log_dir, "hparams.yaml")) == {
        "lr": 0.1,
        "depth": 2,
        "width": 8,
    }


def test_hp_metric_is_written_once(tmp_path):
    logger = TensorBoardLogger(tmp_path)
    logger.log_hyperparams({"a": 1})
    logger.log_hyperparams({"b": 2})
    logger.finalize("success")
    assert scalars(load(logger.log_dir), "hp_metric") == [(0, -1.0)]


def test_bad_params_type(tmp_path):
    with pytest.raises(TypeError, match="log_hyperparams: params must be a dict"):
        TensorBoardLogger(tmp_path).log_hyperparams([1, 2])


# ---------------------------------------------------------------- text and histograms
def test_text(tmp_path):
    logger = TensorBoardLogger(tmp_path)
    logger.log_text("samples", "ROMEO: *to be*", 4)
    logger.log_text("samples", "JULIET: or not", 8)
    logger.finalize("success")
    ea = load(logger.log_dir)
    assert ea.Tags()["tensors"] == ["samples/text_summary"]
    assert ea.SummaryMetadata("samples/text_summary").plugin_data.plugin_name == "text"
    events = ea.Tensors("samples/text_summary")
    assert [(e.step, e.tensor_proto.string_val[0].decode()) for e in events] == [
        (4, "ROMEO: *to be*"),
        (8, "JULIET: or not"),
    ]


def test_histograms_of_weights_and_grads(tmp_path):
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2))
    model(ember.randn(8, 5)).sum().backward()
    model[2].bias.grad = None  # a parameter without a gradient gets only its weights
    logger = TensorBoardLogger(tmp_path)
    logger.log_histograms(model, 3)
    logger.finalize("success")
    ea = load(logger.log_dir)
    names = ["0.weight", "0.bias", "2.weight", "2.bias"]
    expected = [f"weights/{n}" for n in names] + [f"gradients/{n}" for n in names[:3]]
    assert sorted(ea.Tags()["histograms"]) == sorted(expected)
    for tag, array in (
        ("weights/0.weight", model[0].weight.numpy(force=True)),
        ("gradients/2.weight", model[2].weight.grad.numpy()),
    ):
        (event,) = ea.Histograms(tag)
        assert event.step == 3
        h = event.histogram_value
        assert h.num == array.size
        assert h.min == pytest.approx(array.min()) and h.max == pytest.approx(array.max())
        assert h.sum == pytest.approx(array.sum(), abs=1e-5)


def test_histograms_every_n_steps(tmp_path):
    model = nn.Linear(3, 2)
    logger = TensorBoardLogger(tmp_path, histogram_every_n_steps=2)
    done = [logger.maybe_log_histograms(model, step) for step in (0, 0, 1, 2, 3, 4)]
    logger.finalize("success")
    assert done == [True, False, False, True, False, True]
    steps = [e.step for e in load(logger.log_dir).Histograms("weights/weight")]
    assert steps == [0, 2, 4]
    assert TensorBoardLogger(tmp_path).maybe_log_histograms(model, 0) is False
    with pytest.raises(ValueError, match="histogram_every_n_steps must be a positive int"):
        TensorBoardLogger(tmp_path, histogram_every_n_steps=0)


def test_log_graph_warns(tmp_path):
    with pytest.warns(UserWarning, match="log_graph=True is not supported"):
        TensorBoardLogger(tmp_path, log_graph=True)


# ---------------------------------------------------------------- resume: purge_step
def _write_steps(logger, steps, offset=0.0):
    for step in steps:
        logger.log_metrics({"loss": offset + step}, step)


def test_resume_without_purge_step_duplicates_points(tmp_path):
    """The control for the next test: TensorBoard does keep both runs' points."""
    first = TensorBoardLogger(tmp_path)
    _write_steps(first, range(10))
    first.finalize("success")
    again = TensorBoardLogger(tmp_path, version=0)
    _write_steps(again, range(5, 10), offset=100)
    again.finalize("success")
    assert len(scalars(load(first.log_dir), "loss")) == 15


def test_purge_step_removes_the_old_tail(tmp_path):
    first = TensorBoardLogger(tmp_path)
    _write_steps(first, range(10))
    first.finalize("success")
    resumed = TensorBoardLogger(tmp_path, version=0, purge_step=5)
    _write_steps(resumed, range(5, 10), offset=100)
    resumed.finalize("success")
    # Both event files survive (same second, distinct names) and read back without duplicates.
    events = [f for f in os.listdir(first.log_dir) if "tfevents" in f]
    assert len(events) == 2
    assert scalars(load(first.log_dir), "loss") == (
        [(s, float(s)) for s in range(5)] + [(s, 100.0 + s) for s in range(5, 10)]
    )


def test_purge_step_set_after_the_writer_opened(tmp_path):
    first = TensorBoardLogger(tmp_path)
    first.log_hyperparams({"lr": 0.1})
    _write_steps(first, range(10))
    first.finalize("success")
    resumed = TensorBoardLogger(tmp_path, version=0)
    resumed.log_hyperparams({"lr": 0.1})  # the Trainer may log hparams before it restores
    resumed.purge_step = 5
    _write_steps(resumed, range(5, 10), offset=100)
    resumed.finalize("success")
    ea = load(first.log_dir)
    assert scalars(ea, "loss") == [(s, float(s)) for s in range(5)] + [
        (s, 100.0 + s) for s in range(5, 10)
    ]
    with pytest.raises(ValueError, match="purge_step must be a non-negative int"):
        resumed.purge_step = -1


def test_resumed_run_does_not_repeat_hp_metric_nor_purge_after_reopen(tmp_path):
    first = TensorBoardLogger(tmp_path)
    first.log_hyperparams({"lr": 0.1})
    _write_steps(first, range(10))
    first.finalize("success")
    resumed = TensorBoardLogger(tmp_path, version=0, purge_step=5)
    resumed.log_hyperparams({"lr": 0.1})
    _write_steps(resumed, range(5, 8), offset=100)
    resumed.finalize("success")
    _write_steps(resumed, [8, 9], offset=200)  # e.g. test() after fit(): a new file, no purge
    resumed.finalize("success")
    ea = load(first.log_dir)
    assert scalars(ea, "hp_metric") == [(0, -1.0)]
    assert scalars(ea, "loss") == [(s, float(s)) for s in range(5)] + [
        (5, 105.0),
        (6, 106.0),
        (7, 107.0),
        (8, 208.0),
        (9, 209.0),
    ]


# ---------------------------------------------------------------- ranks and imports
def test_non_zero_rank_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBER_RANK", "1")
    logger = TensorBoardLogger(tmp_path / "logs", histogram_every_n_steps=1)
    assert not logger.experiment
    logger.log_hyperparams({"lr": 0.1})
    logger.log_metrics({"loss": 1.0}, 0)
    logger.log_text("t", "x", 0)
    logger.log_histograms(nn.Linear(2, 2), 0)
    logger.maybe_log_histograms(nn.Linear(2, 2), 0)
    logger.save()
    logger.finalize("success")
    assert not (tmp_path / "logs").exists()
    assert list(tmp_path.iterdir()) == []


def test_import_is_lazy():
    code = (
        "import sys, ember.loggers; "
        "bad = [m for m in ('tensorboardX', 'yaml', 'tensorboard', 'ember.trainer') "
        "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
    )
    assert result.returncode == 0, result.stdout + result.stderr
