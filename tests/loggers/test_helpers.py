"""The shared logger helpers: hyperparameter conversion, metric values, version discovery."""

from __future__ import annotations

import dataclasses
import os
from argparse import Namespace

import ml_dtypes
import numpy as np
import pytest

import ember
from ember.loggers._hparams import (
    flatten_params,
    load_hparams_yaml,
    params_to_dict,
    sanitize_for_tensorboard,
    save_hparams_yaml,
    to_plain,
)
from ember.loggers._metrics import add_prefix, to_scalar
from ember.loggers._versioning import make_log_dir, next_version, version_dir_name


@dataclasses.dataclass
class _Opt:
    lr: float = 0.1
    betas: tuple = (0.9, 0.99)


def test_params_to_dict_accepts_dict_namespace_dataclass_none():
    assert params_to_dict(None) == {}
    assert params_to_dict({"a": 1, 2: "b"}) == {"a": 1, "2": "b"}
    assert params_to_dict(Namespace(x=1)) == {"x": 1}
    assert params_to_dict(_Opt()) == {"lr": 0.1, "betas": (0.9, 0.99)}
    with pytest.raises(TypeError, match=r"log_hyperparams: params must be a dict.*got int"):
        params_to_dict(3)


def test_to_plain_and_flatten_and_sanitize():
    bf = np.array(1.5, dtype=ml_dtypes.bfloat16)
    params = {
        "opt": _Opt(),
        "ns": Namespace(k={"deep": 1}),
        "fn": len,
        "empty": {},
        "bf": bf,
        "t": ember.tensor([[1, 2]]),
        "s": {3},
    }
    assert to_plain(params) == {
        "opt": {"lr": 0.1, "betas": [0.9, 0.99]},
        "ns": {"k": {"deep": 1}},
        "fn": str(len),
        "empty": {},
        "bf": 1.5,
        "t": [[1, 2]],
        "s": [3],
    }
    flat = flatten_params(params)
    assert list(flat) == ["opt/lr", "opt/betas", "ns/k/deep", "fn", "empty", "bf", "t", "s"]
    clean = sanitize_for_tensorboard(flat)
    assert clean == {
        "opt/lr": 0.1,
        "opt/betas": "[0.9, 0.99]",
        "ns/k/deep": 1,
        "fn": str(len),
        "empty": "{}",
        "bf": 1.5,
        "t": "[[1, 2]]",
        "s": "[3]",
    }
    assert all(type(v) in (bool, int, float, str) for v in clean.values())


def test_yaml_roundtrip_is_safe_and_atomic(tmp_path):
    path = str(tmp_path / "hparams.yaml")
    save_hparams_yaml(path, {"name": "!!python/object:os.system", "x": [1, 2.5, None]})
    assert load_hparams_yaml(path) == {"name": "!!python/object:os.system", "x": [1, 2.5, None]}
    assert os.listdir(tmp_path) == ["hparams.yaml"]  # no temp file left behind
    with pytest.raises(OSError, match=r"cannot write '.*missing.*hparams.yaml'"):
        save_hparams_yaml(str(tmp_path / "missing" / "hparams.yaml"), {"a": 1})


def test_to_scalar():
    assert to_scalar(True, "k", "L") == 1
    assert to_scalar(ember.tensor(3), "k", "L") == 3
    assert type(to_scalar(np.array(1.5, dtype=ml_dtypes.bfloat16), "k", "L")) is float
    assert to_scalar(np.int64(4), "k", "L") == 4
    with pytest.raises(
        ValueError,
        match=r"L.log_metrics: metric 'k' must be a scalar, got a "
        r"tensor of shape \(0,\)",
    ):
        to_scalar(ember.zeros(0), "k", "L")
    assert add_prefix({"a": 1}, "") == {"a": 1}
    assert add_prefix({"a": 1}, "p") == {"p-a": 1}


def test_versions(tmp_path):
    assert next_version(str(tmp_path / "none"), "X") == 0
    for name in ("version_0", "version_10", "version_2"):
        (tmp_path / name).mkdir()
    (tmp_path / "version_99").write_text("a file")
    (tmp_path / "version_-1").mkdir()
    assert next_version(str(tmp_path), "X") == 11
    assert version_dir_name(3) == "version_3" and version_dir_name("abc") == "abc"
    with pytest.raises(NotADirectoryError, match=r"X: cannot use log directory .*version_99' is"):
        make_log_dir(str(tmp_path / "version_99" / "sub"), "X")
