"""``ember-train`` and ``ember-generate`` end to end, each in a subprocess started from a
temporary directory (the packaged configs must be found from anywhere)."""

from __future__ import annotations

import pathlib
import re

import pytest

pytest.importorskip("hydra")
pytest.importorskip("tensorboard")

from tests.loggers._events import hparams_plugin, load, scalars  # noqa: E402
from tests.recipes.helpers import only_run_dir, output, run_cli, tiny_gpt_overrides  # noqa: E402


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short run of the default experiment: (cwd, run dir, process)."""
    cwd = tmp_path_factory.mktemp("cli")
    proc = run_cli("train", tiny_gpt_overrides(), cwd)
    assert proc.returncode == 0, output(proc)
    return cwd, only_run_dir(cwd), proc


def test_run_dir_checkpoints_and_report(trained):
    cwd, run_dir, proc = trained
    assert run_dir.parent.name == "gpt_pysource"
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert (run_dir / "train.log").is_file()
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert "last.ckpt" in ckpts and len(ckpts) == 2, ckpts
    text = proc.stdout + proc.stderr
    assert f"run directory: {run_dir}" in text
    assert f"tensorboard --logdir {run_dir}" in text
    assert re.search(r"best val_loss: \d+\.\d{4}", text)
    assert re.search(r"last metrics: .*train_loss=\d", text)
    assert f"last checkpoint: {run_dir / 'checkpoints' / 'last.ckpt'}" in text
    assert re.search(
        r"wall time: [\d.]+ s for 6 steps; throughput: [\d.]+ samples/s \(\d+ tokens/s\)", text
    )
    assert "block_size: 16" in text  # the resolved config tree is printed at the start
    log = (run_dir / "train.log").read_text()
    assert "=== ember-train: done ===" in log and "run directory:" in log


def test_event_file_has_metrics_samples_and_hparams(trained):
    _, run_dir, _ = trained
    ea = load(run_dir / "tensorboard")
    assert len(scalars(ea, "val_loss")) == 2  # val_check_interval=3 over 6 steps
    assert scalars(ea, "train_loss") and any(t.startswith("lr-") for t in ea.Tags()["scalars"])
    samples = ea.Tensors("samples/text_summary")
    assert [e.step for e in samples] == [3, 6]
    assert samples[0].tensor_proto.string_val[0].decode().startswith("    def ")
    start, experiment = hparams_plugin(ea)
    assert start.hparams["model.n_layer"].number_value == 1
    assert start.hparams["optimizer.lr"].number_value == pytest.approx(2e-3)
    assert start.hparams["data.source"].string_value == "pysource"
    tags = {m.name.tag for m in experiment.metric_infos}
    assert {"hp_metric", "final/val_loss"} <= tags
    best = min(v for _, v in scalars(ea, "val_loss"))
    assert scalars(ea, "hp_metric") == [(0, pytest.approx(best))]


def _universal(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")  # as text-mode pipes read it


def test_generate_samples_from_the_run(trained):
    from ember.recipes.checks import check_command_line
    from ember.recipes.generate import generate

    cwd, run_dir, _ = trained
    args = [f"ckpt_path={run_dir}", "prompt='def '", "max_new_tokens=15", "seed=3", "top_k=5"]
    (expected,) = generate(check_command_line("generate", args, job_name="generate"))
    assert expected.startswith("def ") and len(expected) == 4 + 15
    first = run_cli("generate", args, cwd)
    assert first.returncode == 0, output(first)
    assert first.stdout == _universal(expected) + "\n"
    two = run_cli("generate", [*args, "num_samples=2"], cwd)
    assert two.returncode == 0, output(two)
    assert two.stdout.startswith("--- sample 1 ---\n" + _universal(expected) + "\n--- sample 2 ---")
    greedy = [*args[:3], "temperature=0"]
    (a,) = generate(check_command_line("generate", greedy, job_name="generate"))
    (b,) = generate(check_command_line("generate", [*greedy, "seed=9"], job_name="generate"))
    assert a == b  # temperature 0 is argmax: the seed does not matter


def test_generate_errors_name_the_problem(trained, tmp_path):
    cwd, run_dir, _ = trained
    proc = run_cli("generate", [f"ckpt_pth={run_dir}"], tmp_path)
    assert proc.returncode == 2 and f"did you mean ckpt_path={run_dir}" in proc.stderr
    proc = run_cli("generate", [f"ckpt_path={tmp_path}/nothing"], tmp_path)
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    proc = run_cli("generate", [f"ckpt_path={run_dir}", "prompt='caf\u00e9'"], tmp_path)
    assert proc.returncode == 2 and "outside the vocabulary" in proc.stderr


def test_resume_from_the_last_checkpoint(trained):
    cwd, run_dir, _ = trained
    last = run_dir / "checkpoints" / "last.ckpt"
    args = [*tiny_gpt_overrides(), "trainer.max_steps=9", f"ckpt_path={last}", "name=resumed"]
    proc = run_cli("train", args, cwd)
    assert proc.returncode == 0, output(proc)
    assert "wall time: " in proc.stdout + proc.stderr
    assert re.search(r"for 9 steps", proc.stdout + proc.stderr)
    resumed = [p for p in (cwd / "outputs" / "resumed").iterdir()]
    ea = load(resumed[0] / "tensorboard")
    steps = [s for s, _ in scalars(ea, "val_loss")]
    assert steps and min(steps) >= 5  # it went on from step 6; it did not start over


def test_multirun_runs_each_job_with_its_hparams(tmp_path):
    args = [
        "-m",
        "experiment=mlp_synthetic",
        "optimizer.lr=1e-3,3e-3",
        "data.num_samples=256",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
    ]
    proc = run_cli("train", args, tmp_path)
    assert proc.returncode == 0, output(proc)
    (sweep,) = list((tmp_path / "multirun" / "mlp_synthetic").iterdir())
    assert (sweep / "multirun.yaml").is_file()
    assert f"tensorboard --logdir {sweep}" in proc.stdout + proc.stderr
    for job, lr in (("0", 1e-3), ("1", 3e-3)):
        ea = load(sweep / job / "tensorboard")
        start, experiment = hparams_plugin(ea)
        assert start.hparams["optimizer.lr"].number_value == pytest.approx(lr)
        assert start.hparams["model._target_"].string_value == "ember.recipes.models.MLP"
        assert "hp_metric" in {m.name.tag for m in experiment.metric_infos}
        (hp,) = scalars(ea, "hp_metric")
        assert hp[1] == pytest.approx(max(v for _, v in scalars(ea, "val_acc")))
        assert (sweep / job / "checkpoints" / "last.ckpt").is_file()


def test_typo_fails_up_front_with_a_suggestion(tmp_path):
    proc = run_cli("train", ["trainer.max_step=1", "experiment=gpt_pysource"], tmp_path)
    assert proc.returncode == 2, output(proc)
    assert "Could not override 'trainer.max_step'" in proc.stderr
    assert "did you mean trainer.max_steps=1" in proc.stderr
    assert list(pathlib.Path(tmp_path).iterdir()) == []  # no run directory was made


def test_shell_completion_script(tmp_path):
    proc = run_cli("train", ["-sc", "install=bash"], tmp_path)
    assert proc.returncode == 0, output(proc)
    assert "hydra_bash_completion" in proc.stdout and "complete" in proc.stdout
