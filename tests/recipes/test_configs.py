"""Every packaged config composes and instantiates; the up-front command-line checks."""

from __future__ import annotations

import math
import os

import pytest

pytest.importorskip("hydra")

from ember.recipes.checks import (  # noqa: E402
    UsageError,
    check_command_line,
    first_of_sweeps,
    missing_values,
    suggestions,
)
from ember.recipes.runner import build, hparams_of  # noqa: E402
from tests.recipes.helpers import EXPERIMENTS, NEEDS_DATA, compose, output, run_cli  # noqa: E402


def test_the_issue_experiments_are_packaged():
    assert {"gpt_pysource", "gpt_shakespeare", "cnn_mnist", "resnet_cifar10"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_instantiates(experiment, tmp_path, request, monkeypatch):
    if experiment in NEEDS_DATA:
        monkeypatch.setenv("EMBER_DATA_DIR", str(request.getfixturevalue("data_dir")))
    cfg = compose([f"experiment={experiment}"], tmp_path)  # (image data loads in setup)
    assert cfg.name == experiment
    assert missing_values(cfg) == []
    objs = build(cfg)
    model, trainer = objs["model"], objs["trainer"]
    assert type(model).__name__ == cfg.model._target_.rsplit(".", 1)[1]
    assert callable(model.__dict__["optimizer_factory"])
    assert trainer.default_root_dir == str(tmp_path)
    names = {type(cb).__name__ for cb in trainer.callbacks}
    assert {"ModelCheckpoint", "LearningRateMonitor", "TQDMProgressBar"} <= names
    assert [type(lg).__name__ for lg in trainer.loggers] == ["TensorBoardLogger"]
    hp = hparams_of(cfg)
    assert hp["seed"] == cfg.seed and "optimizer.lr" in hp and "model._target_" in hp
    assert all(isinstance(v, (int, float, str, bool, type(None))) for v in hp.values())


def test_the_default_experiment_is_the_offline_char_gpt(tmp_path):
    cfg = compose([], tmp_path)
    assert cfg.name == "gpt_pysource" and cfg.data.source == "pysource"
    assert cfg.model._target_.endswith("GPTModule") and cfg.model.block_size == 64
    assert cfg.callbacks.text_samples._target_.endswith("TextSamples")


def test_gpt_shakespeare_matches_nanogpt(tmp_path):
    full = compose(["experiment=gpt_shakespeare"], tmp_path)
    assert (full.model.n_layer, full.model.n_head, full.model.n_embd) == (6, 6, 384)
    assert (full.data.block_size, full.model.dropout) == (256, 0.2)
    baby = compose(["experiment=gpt_shakespeare_baby"], tmp_path)
    assert (baby.model.n_layer, baby.model.n_head, baby.model.n_embd) == (4, 4, 128)
    assert (baby.data.block_size, baby.model.block_size, baby.model.dropout) == (64, 64, 0.0)


GROUP_OPTIONS = [
    ("trainer", "cpu"),
    ("trainer", "gpu"),
    ("trainer", "ddp"),
    ("optimizer", "sgd"),
    ("optimizer", "adam"),
    ("scheduler", "onecycle"),
    ("scheduler", "none"),
    ("callbacks", "early_stopping"),
    ("logger", "csv"),
    ("logger", "none"),
    ("debug", "fdr"),
    ("debug", "overfit"),
    ("debug", "profile"),
]


@pytest.mark.parametrize("group,option", GROUP_OPTIONS)
def test_group_options_compose(group, option, tmp_path):
    cfg = compose([f"{group}={option}"], tmp_path)
    if group == "trainer":
        assert cfg.trainer._target_ == "ember.trainer.Trainer"
        assert {"cpu": "cpu", "gpu": "cuda", "ddp": "auto"}[option] == cfg.trainer.accelerator
    if group == "logger" and option == "none":
        assert not cfg.logger
    if (group, option) == ("callbacks", "early_stopping"):
        assert cfg.callbacks.early_stopping.monitor == "val_loss"
    if (group, option) == ("debug", "fdr"):
        assert cfg.trainer.fast_dev_run is True


@pytest.mark.parametrize(
    "overrides",
    [["optimizer=sgd", "scheduler=onecycle"], ["logger=csv", "callbacks=early_stopping"]],
)
def test_other_groups_instantiate(overrides, tmp_path):
    cfg = compose(["experiment=mlp_synthetic", *overrides], tmp_path)
    objs = build(cfg)
    trainer = objs["trainer"]
    kinds = {type(cb).__name__ for cb in trainer.callbacks} | {
        type(lg).__name__ for lg in trainer.loggers
    }
    assert ("EarlyStopping" in kinds) == ("callbacks=early_stopping" in overrides)
    assert ("CSVLogger" in kinds) == ("logger=csv" in overrides)


def test_scheduler_none_builds_no_scheduler(tmp_path):
    cfg = compose(["scheduler=none"], tmp_path)
    assert build(cfg)["model"].__dict__["scheduler_factory"] is None


def test_cosine_warmup_schedule():
    import ember
    from ember.recipes.schedulers import cosine_warmup

    p = ember.nn.Parameter(ember.zeros(1))
    opt = ember.optim.SGD([p], lr=1.0)
    sched = cosine_warmup(opt, total_steps=110, warmup_steps=10, min_lr_ratio=0.1)
    lrs = []
    for _ in range(120):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1 / 11) and lrs[9] == pytest.approx(10 / 11)
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[60] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lrs[110] == pytest.approx(0.1) and lrs[119] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="min_lr_ratio"):
        cosine_warmup(opt, total_steps=10, min_lr_ratio=2.0)


# ------------------------------------------------------------------ command-line checks
def test_misspelled_key_gets_hydras_error_and_a_suggestion():
    with pytest.raises(UsageError) as info:
        check_command_line("train", ["trainer.max_step=5"])
    text = str(info.value)
    assert "Could not override 'trainer.max_step'" in text  # Hydra's own message
    assert "did you mean trainer.max_steps=5" in text


def test_key_without_its_group_prefix_is_found_by_its_leaf():
    hints = suggestions("train", ["max_steps=3", "optimizer.lr=1e-3"])
    assert hints == ["max_steps=3: there is no key 'max_steps'; did you mean trainer.max_steps=3?"]


def test_misspelled_option_suggests_the_close_one():
    with pytest.raises(UsageError) as info:
        check_command_line("train", ["experiment=cnn_mnsit"])
    assert "did you mean experiment=cnn_mnist?" in str(info.value)


def test_suggestions_use_the_chosen_groups_keys():
    # channels exists in model=cnn_mnist only; the typo is judged against that model's keys
    hints = suggestions("train", ["model=cnn_mnist", "model.chanels=[8,16]"])
    assert len(hints) == 1 and "did you mean model.channels=[8,16]" in hints[0]


def test_unknown_key_without_a_close_match_says_how_to_add_it():
    hints = suggestions("train", ["zzqqx=1"])
    assert hints == ["zzqqx=1: there is no key 'zzqqx' (prefix it with + to add a new key)"]


def test_missing_required_value_is_reported_up_front():
    with pytest.raises(UsageError, match=r"missing required values.*\n  ckpt_path=\.\.\."):
        check_command_line("generate", [], job_name="generate")
    cfg = check_command_line("generate", ["ckpt_path=x.ckpt", "top_k=5"], job_name="generate")
    assert cfg.ckpt_path == "x.ckpt" and cfg.top_k == 5


def test_nested_missing_values_are_found(tmp_path):
    cfg = compose(["model.n_layer=???", "callbacks.lr_monitor.logging_interval=???"], tmp_path)
    assert missing_values(cfg) == ["callbacks.lr_monitor.logging_interval", "model.n_layer"]


def test_a_sweep_is_checked_through_its_first_job():
    assert first_of_sweeps(["optimizer.lr=1e-3,3e-4", "seed=1", "model=gpt,mlp"]) == [
        "optimizer.lr=0.001",
        "seed=1",
        "model=gpt",
    ]
    with pytest.raises(UsageError, match="did you mean optimizer.lr"):
        check_command_line("train", ["optimizer.lrr=1e-3,3e-4"], multirun=True)


def test_prepare_passes_the_command_line_on_after_checking_it():
    import pathlib

    from ember.recipes.train import prepare

    my_configs = str(pathlib.Path(__file__).resolve().parents[2] / "examples" / "my_configs")
    for argv in (
        ["seed=3", "optimizer.lr=1e-3"],
        ["-m", "optimizer.lr=1e-3,2e-3"],
        ["--config-dir", my_configs, "experiment=tiny_gpt"],
        ["--help"],
        ["--cfg", "job", "no_such_key=1"],  # Hydra's info flags are Hydra's business
    ):
        assert prepare(list(argv)) == argv
    with pytest.raises(UsageError, match="did you mean trainer.max_steps=1"):
        prepare(["-m", "trainer.max_step=1,2"])


def test_prepare_composes_from_the_config_path_hydra_will_use(tmp_path):
    """``-cp``/``--config-path`` replaces the packaged configs for the up-front check too:
    a required value that only the user's train.yaml has is reported before Hydra starts."""
    import shutil

    import ember.recipes
    from ember.recipes.train import prepare

    packaged = os.path.join(os.path.dirname(ember.recipes.__file__), "configs")
    mine = tmp_path / "mine"
    shutil.copytree(packaged, mine, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    with open(mine / "train.yaml", "a") as f:
        f.write("\nnote: ???\n")
    with pytest.raises(UsageError, match=r"missing required values.*\n  note=\.\.\."):
        prepare(["-cp", str(mine)])
    assert prepare(["--config-path", str(mine), "note=hi"]) == [
        "--config-path",
        str(mine),
        "note=hi",
    ]
    # a relative path is found beside ember/recipes/train.py, as Hydra finds it
    assert prepare(["-cp", "configs", "seed=3"]) == ["-cp", "configs", "seed=3"]
    with pytest.raises(UsageError, match="not found"):
        prepare(["-cp", str(tmp_path / "nowhere")])
    with pytest.raises(UsageError, match="config_path to specify the config name"):
        prepare(["-cp", str(mine / "train.yaml")])  # Hydra's own check, before composing
    # under python -m, Hydra finds a relative path beside train.py (not in the package): so
    # does the check, which reports the missing value from the user's train.yaml
    relative = os.path.relpath(mine, os.path.dirname(ember.recipes.__file__))
    proc = run_cli("train", ["-cp", relative], cwd=tmp_path)
    assert proc.returncode == 2, output(proc)
    assert "missing required values" in proc.stderr and "note=..." in proc.stderr, output(proc)
