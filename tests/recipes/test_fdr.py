"""Every experiment runs end to end in-process with ``debug=fdr`` (one training and one
validation batch, nothing written), through the same ``run`` the CLI calls."""

from __future__ import annotations

import pytest

pytest.importorskip("hydra")

from ember.recipes.runner import final_metric, run  # noqa: E402
from tests.recipes.helpers import EXPERIMENTS, NEEDS_DATA, compose  # noqa: E402

# smaller batches keep the big models quick (and a shorter block for the 6x384 GPT: attention
# with dropout, which it uses, takes seconds per step at block 256 on the CPU)
_SMALL = {
    "gpt_shakespeare": ["data.batch_size=2", "data.block_size=64", "data.val_windows=2"],
    "gpt_shakespeare_baby": ["data.val_windows=4"],
    "gpt_pysource": ["data.max_chars=200000"],
    "resnet_cifar10": ["data.batch_size=4"],
}


def _fake_cifar10(root, monkeypatch) -> None:
    """CIFAR-10 is not on this machine: a small archive in its real binary format (the data
    tests' builder), pinned as the one the dataset looks for."""
    import hashlib

    from ember.data.datasets import cifar as cifar_mod
    from ember.data.datasets import locate as locate_mod
    from tests.data.test_datasets import _cifar_archive

    archive = root / "cifar10" / "cifar-10-binary.tar.gz"
    archive.parent.mkdir(parents=True)
    _cifar_archive(archive)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    resource = locate_mod.Resource(archive.name, (), (digest,), alt_names=(cifar_mod.FOLDER,))
    monkeypatch.setattr(cifar_mod, "ARCHIVE", resource)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_runs_with_fast_dev_run(experiment, tmp_path, request, monkeypatch, capsys):
    if experiment in NEEDS_DATA:
        monkeypatch.setenv("EMBER_DATA_DIR", str(request.getfixturevalue("data_dir")))
    if experiment == "resnet_cifar10":
        data_root = request.getfixturevalue("tmp_path_factory").mktemp("cifar")
        _fake_cifar10(data_root, monkeypatch)
        monkeypatch.setenv("EMBER_DATA_DIR", str(data_root))
    cfg = compose([f"experiment={experiment}", "debug=fdr", *_SMALL.get(experiment, [])], tmp_path)
    summary = run(cfg)
    assert summary["global_step"] == 1
    metrics = summary["metrics"]
    assert "train_loss" in metrics and "val_loss" in metrics, metrics
    assert final_metric(summary) == metrics[cfg.monitor]
    assert summary["weights_identical"] and summary["world_size"] == 1
    assert summary["best_model_path"] is None  # fast_dev_run writes no checkpoint
    assert list(tmp_path.iterdir()) == []  # ...and nothing else
    if experiment.startswith("gpt"):
        assert "--- sample at step 1 ---" in capsys.readouterr().out


def test_debug_profile_writes_the_hottest_functions(tmp_path, capsys):
    overrides = ["experiment=mlp_synthetic", "debug=profile", "logger=none"]
    cfg = compose([*overrides, "trainer.enable_progress_bar=false"], tmp_path)
    summary = run(cfg)
    assert summary["global_step"] == 20
    report = (tmp_path / "profile.txt").read_text()
    assert "Ordered by: cumulative time" in report and "fit" in report


@pytest.mark.filterwarnings("ignore:overfit_batches")  # the Trainer's note that it stops shuffling
def test_debug_overfit_drives_the_loss_down(tmp_path):
    cfg = compose(["experiment=mlp_synthetic", "debug=overfit", "trainer.max_epochs=40"], tmp_path)
    summary = run(cfg)
    assert summary["global_step"] == 80  # two batches per epoch
    assert summary["metrics"]["train_loss"] < 0.05, summary["metrics"]
    assert summary["metrics"]["val_acc"] == 1.0  # validated on the same two batches
