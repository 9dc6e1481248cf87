"""``ember-train trainer=gpu`` end to end on the fake CuPy: the GPU trainer preset (CUDA,
16-mixed) runs the offline GPT recipe and the MLP recipe through the CLI's ``run``, and a
checkpoint saved there loads on the CPU."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("hydra")

from ember.recipes.models import GPTModule  # noqa: E402
from ember.recipes.runner import run  # noqa: E402
from ember.trainer.checkpoint_io import read_checkpoint  # noqa: E402
from tests.recipes.helpers import compose, tiny_gpt_overrides  # noqa: E402


def test_gpu_preset_trains_the_gpt_recipe_on_the_device(fake_cuda, tmp_path, capsys):
    overrides = ["experiment=gpt_pysource", "trainer=gpu", "logger=none", "model.dropout=0.1"]
    overrides += tiny_gpt_overrides()
    cfg = compose(overrides, tmp_path)
    assert cfg.trainer.accelerator == "cuda" and cfg.trainer.precision == "16-mixed"
    summary = run(cfg)
    assert summary["global_step"] == 6
    assert np.isfinite(summary["metrics"]["val_loss"])
    assert "--- sample at step 3 ---" in capsys.readouterr().out
    ckpt = summary["best_model_path"] or summary["last_model_path"]
    state = read_checkpoint(ckpt)
    assert all(t.device == "cpu" for t in state["state_dict"].values())  # host arrays
    assert state["grad_scaler"]["scale"] > 0  # the GradScaler's state travels along
    assert "0" in state["rng_states"]["cuda"]  # and the device generator's (dropout drew)
    module = GPTModule.load_from_checkpoint(ckpt)  # a GPU run's module, rebuilt on the CPU
    assert all(p.device == "cpu" for p in module.parameters())


def test_gpu_preset_with_bf16(fake_cuda, tmp_path):
    overrides = ["experiment=mlp_synthetic", "trainer=gpu", "trainer.precision=bf16-mixed"]
    cfg = compose([*overrides, "debug=fdr"], tmp_path)
    summary = run(cfg)
    assert summary["global_step"] == 1 and np.isfinite(summary["metrics"]["train_loss"])
