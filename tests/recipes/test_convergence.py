"""Convergence of two recipes (slow: ``python -m pytest -m slow tests/recipes``).

- gpt_shakespeare_baby (4 layers, 4 heads, 128 dims, block 64, 2000 steps of 12 windows) reaches
  val loss <= 1.88 on tinyshakespeare, nanoGPT's published CPU result for the same setup.
- cnn_mnist reaches >= 98% accuracy on a held-out 2k split of the MNIST test set (trained on
  the other 8k images; the training file is not on this machine).
"""

from __future__ import annotations

import pytest

pytest.importorskip("hydra")

from ember.recipes.runner import run  # noqa: E402
from tests.recipes.helpers import compose  # noqa: E402

pytestmark = pytest.mark.slow

_QUIET = ["trainer.enable_progress_bar=false", "callbacks.text_samples=null"]


def _run(overrides, tmp_path, data_dir, monkeypatch) -> dict:
    monkeypatch.setenv("EMBER_DATA_DIR", str(data_dir))
    summary = run(compose(overrides, tmp_path))
    print(
        f"{overrides[0]}: best {summary['monitor']} {summary['best_score']:.4f}, "
        f"{summary['global_step']} steps in {summary['seconds']:.1f} s"
    )
    return summary


def test_baby_gpt_shakespeare_reaches_nanogpts_cpu_val_loss(tmp_path, data_dir, monkeypatch):
    summary = _run(["experiment=gpt_shakespeare_baby", *_QUIET], tmp_path, data_dir, monkeypatch)
    assert summary["global_step"] == 2000
    assert summary["best_score"] <= 1.88, summary["metrics"]


def test_cnn_mnist_reaches_98_percent_on_the_holdout_split(tmp_path, data_dir, monkeypatch):
    summary = _run(
        ["experiment=cnn_mnist", "trainer.enable_progress_bar=false"],
        tmp_path,
        data_dir,
        monkeypatch,
    )
    assert summary["best_score"] >= 0.98, summary["metrics"]
