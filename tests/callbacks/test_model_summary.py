"""ModelSummary / summarize: parameter counts, trainable split, size, modes and the table."""

from __future__ import annotations

import pytest

from ember import nn
from ember.callbacks import ModelSummary, summarize
from ember.callbacks.model_summary import human_readable_count
from tests.callbacks.fakes import fake_trainer


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(10, 5), nn.ReLU(), nn.Linear(5, 2))
        self.norm = nn.BatchNorm1d(2)


def test_counts_of_a_known_model():
    m = nn.Sequential(nn.Linear(10, 5), nn.ReLU(), nn.Linear(5, 2))
    s = summarize(m)
    assert s.layer_names == ["0", "1", "2"]
    assert s.layer_types == ["Linear", "ReLU", "Linear"]
    assert s.param_nums == [55, 0, 12]
    assert s.total_parameters == 67
    assert s.trainable_parameters == 67
    assert s.non_trainable_parameters == 0
    assert s.model_size == pytest.approx(67 * 4 / 1e6)
    assert s.total_training_modes == {"train": 3, "eval": 0}


def test_non_trainable_and_eval_mode():
    m = nn.Sequential(nn.Linear(10, 5), nn.ReLU(), nn.Linear(5, 2))
    m[0].requires_grad_(False)
    m[2].eval()
    s = summarize(m)
    assert s.trainable_parameters == 12
    assert s.non_trainable_parameters == 55
    assert s.total_parameters == 67
    assert s.training_modes == [True, True, False]
    assert s.total_training_modes == {"train": 2, "eval": 1}
    text = str(s)
    assert "12        Trainable params" in text
    assert "55        Non-trainable params" in text
    assert "| eval" in text


def test_max_depth():
    m = Net()
    assert summarize(m, 1).layer_names == ["body", "norm"]
    assert summarize(m, 1).param_nums == [67, 4]
    assert summarize(m, 2).layer_names == ["body", "body.0", "body.1", "body.2", "norm"]
    assert summarize(m, -1).layer_names == ["body", "body.0", "body.1", "body.2", "norm"]
    s0 = summarize(m, 0)
    assert s0.layer_names == []
    assert s0.total_parameters == 71
    with pytest.raises(ValueError, match="max_depth"):
        summarize(m, -2)
    with pytest.raises(ValueError, match="max_depth"):
        ModelSummary(max_depth=1.5)


def test_shared_parameters_count_once():
    lin = nn.Linear(4, 4)
    m = nn.Sequential(lin, lin)
    assert summarize(m).total_parameters == 20


def test_table_layout_matches_lightning():
    m = nn.Sequential(nn.Linear(10, 5), nn.ReLU(), nn.Linear(5, 2))
    lines = str(summarize(m)).splitlines()
    assert lines[0] == "  | Name | Type   | Params | Mode "
    assert lines[1] == "-" * 40
    assert lines[2] == "0 | 0    | Linear | 55     | train"
    assert lines[6] == "67        Trainable params"
    assert lines[8] == "67        Total params"
    assert lines[9] == "0.000     Total estimated model params size (MB)"
    assert lines[10] == "3         Modules in train mode"


def test_human_readable_count():
    assert human_readable_count(0) == "0  "
    assert human_readable_count(67) == "67  "
    assert human_readable_count(1234) == "1.2 K"
    assert human_readable_count(123456) == "123 K"
    assert human_readable_count(3_000_000) == "3.0 M"
    assert human_readable_count(2_500_000_000) == "2.5 B"


def test_callback_prints_on_rank_zero_only(capsys):
    m = nn.Sequential(nn.Linear(10, 5), nn.ReLU(), nn.Linear(5, 2))
    ModelSummary().on_fit_start(fake_trainer(), m)
    out = capsys.readouterr().out
    assert "67        Total params" in out
    ModelSummary().on_fit_start(fake_trainer(is_global_zero=False), m)
    ModelSummary(max_depth=0).on_fit_start(fake_trainer(), m)
    assert capsys.readouterr().out == ""
