"""The README's main job (examples/train_mlp.py) runs and its loss falls."""

from __future__ import annotations

import importlib.util
import pathlib

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "train_mlp.py"


def test_train_mlp_example_loss_falls(capsys):
    spec = importlib.util.spec_from_file_location("train_mlp", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    final = mod.main(["--steps", "300"])
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("step")]
    first = float(lines[0].split("loss")[1].split()[0])
    assert len(lines) == 4 and final < 0.9 * first, lines
