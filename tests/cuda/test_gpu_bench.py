"""benchmarks/gpu.py on a machine without a GPU: it imports, parses its arguments, fails with a
clear message, and its Ember half (models resized, a step with autocast) runs on the fake CuPy."""

from __future__ import annotations

import numpy as np
import pytest

import ember
import ember.nn.functional as F
from benchmarks import gpu, models
from ember.tensor import backend


def test_arguments_parse():
    args = gpu.parser().parse_args(["--only", "gpt2", "--quick", "--json", "x.json", "--profile"])
    assert args.only == "gpt2" and args.quick and args.json == "x.json" and args.profile
    assert gpu.parser().parse_args([]).only is None


def test_without_cupy_it_stops_with_a_clear_message(monkeypatch, capsys):
    monkeypatch.setattr(backend, "_cupy", None)
    monkeypatch.setattr(backend, "_cupy_error", ImportError("No module named 'cupy'"))
    assert gpu.main(["--quick"]) == 2
    err = capsys.readouterr().err
    assert "an NVIDIA GPU is needed" in err and "No module named 'cupy'" in err
    with pytest.raises(gpu.NoGPUError, match="CuPy"):
        gpu.require_gpu()


def test_peaks_and_flops():
    assert gpu.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert gpu.peak_tflops("NVIDIA H200") == 989.0
    assert gpu.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert gpu.peak_tflops("Some GPU") is None
    cfg = gpu.CONFIGS["gpt"]
    assert gpu.gpt_flops_per_token(10_000_000, cfg) == 6e7 + 12 * 6 * 384 * 256


def test_sized_resizes_the_models_and_restores_them():
    before = models.GPT_EMBD, models.CNN_INPUT
    with gpu.sized("gpt2-small") as cfg:
        assert models.GPT_EMBD == 768 and models.GPT_BLOCK == 1024 and cfg["GPT_BATCH"] == 8
    with gpu.sized("cnn"):
        assert models.CNN_INPUT == (512, 3, 32, 32)
    assert (models.GPT_EMBD, models.CNN_INPUT) == before


TINY = {
    "gpt": {
        "GPT_LAYERS": 1,
        "GPT_HEADS": 2,
        "GPT_EMBD": 16,
        "GPT_BLOCK": 8,
        "GPT_BATCH": 2,
        "GPT_VOCAB": 65,
    },
    "gpt2-small": {
        "GPT_LAYERS": 1,
        "GPT_HEADS": 2,
        "GPT_EMBD": 16,
        "GPT_BLOCK": 8,
        "GPT_BATCH": 2,
        "GPT_VOCAB": 97,
    },
    "cnn": {"CNN_INPUT": (4, 3, 32, 32)},
}


@pytest.mark.parametrize("name", sorted(TINY))
def test_the_ember_step_runs_on_the_device(fake_cuda, monkeypatch, name):
    import ember.nn as enn
    import ember.optim as eoptim

    monkeypatch.setattr(gpu, "CONFIGS", TINY)
    with gpu.sized(name):
        w = gpu._workload(name)
        model = w.build(enn, F).to("cuda")
        state = (model, w.optimizer(eoptim, model.parameters()), gpu._batch(ember, name, "cuda"))
        synced = []
        step = gpu.make_step(state, name, ember, F, lambda: synced.append(1))
        losses = [float(step().item()) for _ in range(3)]
    assert synced == [1, 1, 1] and all(np.isfinite(losses))
    assert all(p.is_cuda for p in model.parameters())
    assert losses[-1] < losses[0]  # it trains


def test_gpu_check_script_is_valid_bash():
    import pathlib
    import subprocess

    script = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    for stage in ("stage setup", "stage cuda", "stage bench", "stage suites"):
        assert stage in text
    assert "--no-index --find-links" in text and "summary.md" in text
