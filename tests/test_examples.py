"""The README's main job (``ember-train``), its ``--config-dir`` example, and the example
scripts in ``examples/``."""

from __future__ import annotations

import importlib.util
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "train_mlp.py"
MY_CONFIGS = ROOT / "examples" / "my_configs"
MAIN_JOB = "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && ember-train"


def test_readme_main_job_is_ember_train_and_the_script_is_installed():
    readme = (ROOT / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)\n```", readme, re.S).group(1)
    assert first_block == MAIN_JOB
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {
        "ember-train": "ember.recipes.train:main",
        "ember-generate": "ember.recipes.generate:main",
    }


def test_readme_config_dir_example_composes():
    pytest.importorskip("hydra")
    from ember.recipes.checks import check_command_line

    text = (MY_CONFIGS / "experiment" / "tiny_gpt.yaml").read_text()
    assert "```yaml\n" + text + "```" in (ROOT / "README.md").read_text()
    cfg = check_command_line("train", ["experiment=tiny_gpt"], config_dir=str(MY_CONFIGS))
    assert (cfg.name, cfg.model.n_layer, cfg.model.block_size, cfg.data.source) == (
        "tiny_gpt",
        2,
        32,
        "shakespeare",
    )


def test_train_mlp_example_loss_falls(capsys):
    spec = importlib.util.spec_from_file_location("train_mlp", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    final = mod.main(["--steps", "300"])
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("step")]
    first = float(lines[0].split("loss")[1].split()[0])
    assert len(lines) == 4 and final < 0.9 * first, lines


@pytest.mark.slow
def test_the_main_job_trains_and_writes_python(tmp_path):
    """``ember-train`` as the README runs it (the full default run, about a minute)."""
    pytest.importorskip("hydra")
    from tests.recipes.helpers import only_run_dir, output, run_cli

    proc = run_cli("train", [], tmp_path, timeout=900)
    assert proc.returncode == 0, output(proc)
    text = proc.stdout + proc.stderr
    best = float(re.search(r"best val_loss: ([\d.]+)", text).group(1))
    print(re.search(r"wall time: .*", text).group(0), f"best val_loss {best}")
    assert best < 2.0
    assert "--- sample at step 500 ---\ndef " in text
    assert (only_run_dir(tmp_path) / "checkpoints" / "last.ckpt").is_file()
