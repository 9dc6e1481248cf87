"""The Trainer under ``mpiexec -n 2`` / ``-n 4``: strategy choice, sharded data, synced logging,
rank-0-only writing, equivalence with one process, resuming across world sizes, failures.

Each scenario of ``trainer_worker.py`` runs once per module (subprocesses with timeouts, one
BLAS thread per rank); every rank writes its own JSON, asserted on here.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.distributed.mpirun import ROOT, child_env, mpiexec, one_mpi_job_at_a_time

pytestmark = pytest.mark.mpi

WORKER = pathlib.Path(__file__).with_name("trainer_worker.py")
TOL = 1e-6


def launch(workdir, scenario: str, ranks: int | None, timeout: float = 120.0):
    """Like ``_launch``, one MPI job at a time (see mpirun.one_mpi_job_at_a_time)."""
    with one_mpi_job_at_a_time():
        return _launch(workdir, scenario, ranks, timeout)


def _launch(workdir, scenario: str, ranks: int | None, timeout: float = 120.0):
    """Run a scenario (``ranks=None``: plain python, one process); returns (returncode,
    output, seconds, [per-rank results])."""
    prefix = pathlib.Path(workdir) / f"{scenario}-{ranks}"
    cmd = [sys.executable, str(WORKER), scenario, str(prefix), str(workdir)]
    if ranks is not None:
        cmd = [mpiexec(), "-n", str(ranks)] + cmd
    t0 = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=child_env(),
        cwd=str(ROOT),
        start_new_session=True,
    )
    try:
        text, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        text, _ = proc.communicate()
        pytest.fail(f"{scenario} on {ranks} ranks did not finish within {timeout} s:\n{text}")
    seconds = time.monotonic() - t0
    results = []
    for r in range(ranks or 1):
        path = pathlib.Path(f"{prefix}.rank{r}.json")
        results.append(json.loads(path.read_text()) if path.exists() else None)
    return proc.returncode, text, seconds, results


def ok(workdir, scenario: str, ranks: int | None) -> list:
    code, text, _, results = launch(workdir, scenario, ranks)
    assert code == 0, text
    assert all(r is not None for r in results), text
    return results


def spread(results, key) -> float:
    ref = np.asarray(results[0][key])
    return max(float(np.abs(np.asarray(r[key]) - ref).max()) for r in results)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    return ok(tmp_path_factory.mktemp("fit"), "fit", 2)


@pytest.fixture(scope="module")
def accumulated(tmp_path_factory):
    return ok(tmp_path_factory.mktemp("accumulate"), "accumulate", 2)


# ------------------------------------------------------------------ strategy and equivalence
def test_auto_strategy_under_mpiexec(fitted):
    assert [r["strategy"] for r in fitted] == ["DDPStrategy", "DDPStrategy"]
    assert [r["size"] for r in fitted] == [2, 2]


def test_auto_strategy_in_one_process():
    from ember.distributed.strategy import SingleDeviceStrategy
    from ember.trainer import Trainer

    assert type(Trainer(accelerator="cpu").strategy) is SingleDeviceStrategy
    ddp = Trainer(accelerator="cpu", strategy="ddp").strategy
    assert type(ddp).__name__ == "DDPStrategy" and ddp.world_size == 1


def test_two_ranks_match_one_process_with_double_batch(fitted):
    r0 = fitted[0]
    assert r0["steps"] == 20  # 40 samples, 2 ranks x batch 2, 2 epochs
    assert spread(fitted, "weights") == 0.0  # identical on both ranks
    diff = np.abs(np.asarray(r0["weights"]) - r0["single_weights"]).max()
    assert diff <= TOL
    moved = np.abs(np.asarray(r0["weights"])).max()
    assert moved > 0.0


def test_validation_metric_is_the_single_process_one(fitted):
    # 11 validation samples on 2 ranks (6 + 5, unpadded), weighted by the per-rank counts
    r0, r1 = fitted
    assert r0["metrics"]["val_loss"] == r1["metrics"]["val_loss"]
    assert r0["metrics"]["val_loss"] == pytest.approx(r0["single_metrics"]["val_loss"], rel=1e-5)
    # the same weights validated in one process: the same dataset mean
    assert r0["validate"]["val_loss"] == r1["validate"]["val_loss"]
    assert r0["validate"]["val_loss"] == pytest.approx(
        r0["single_validate"]["val_loss"], rel=1e-6, abs=1e-9
    )


def test_sync_dist_reduces_once_per_boundary(fitted):
    r0 = fitted[0]
    m = r0["metrics"]
    assert m["rank_step"] == 0.5 and m["rank_epoch"] == 0.5  # mean over ranks 0 and 1
    assert m["rank_max"] == 1.0  # reduce_fx="max", gathered in the same collective
    assert m["loss_epoch"] == fitted[1]["metrics"]["loss_epoch"]
    # 3 metrics x 20 steps would be 60+ collectives one by one; here: one per step, three per
    # training epoch end (two epochs) and one per validation run (two)
    assert r0["reduce_calls"] == 20 + 3 * 2 + 2


def test_only_rank_zero_writes(fitted):
    r0, r1 = fitted
    assert r0["printed"] > 0  # progress bar and model summary
    assert any(f.endswith(".ckpt") for f in r0["files"])
    assert any("events.out.tfevents" in f for f in r0["files"])
    assert r1["printed"] == 0
    assert not r1["files"]  # no run, log or checkpoint directory on rank 1


def test_accumulation_uses_no_sync(accumulated):
    r0 = accumulated[0]
    assert r0["steps"] == 5 and r0["blocked"] == 5  # 10 batches, every other one accumulates
    assert spread(accumulated, "weights") == 0.0
    assert np.abs(np.asarray(r0["weights"]) - r0["single_weights"]).max() <= TOL


def test_batchnorm_buffers_synced_before_validation(accumulated):
    assert spread(accumulated, "bn_params") == 0.0
    assert spread(accumulated, "bn_buffers") == 0.0  # per-rank data, rank 0's statistics
    assert np.abs(np.asarray(accumulated[0]["bn_buffers"])).max() > 0


# ------------------------------------------------------------------ changing world size
def test_checkpoint_from_four_ranks_resumes_on_two_and_one(tmp_path):
    saved = ok(tmp_path, "save", 4)
    seen = sorted(i for r in saved for _, batch in r["seen"] for i in batch)
    assert seen == list(range(24))  # 3 steps x 4 ranks x batch 2
    ckpt = tmp_path / "mid.ckpt"
    backup = tmp_path / "mid.bak"
    shutil.copy(ckpt, backup)
    for ranks in (2, None):
        shutil.copy(backup, ckpt)
        results = ok(tmp_path, "resume", ranks)
        n = ranks or 1
        first = sorted(i for r in results for e, batch in r["seen"] for i in batch if e == 0)
        assert first == list(range(24, 48)), (ranks, first)  # the rest of epoch 0, once
        second = sorted(i for r in results for e, batch in r["seen"] for i in batch if e == 1)
        assert second == list(range(48))
        assert results[0]["seen"][0][1] == [24.0 + k * n for k in range(2)]
        assert results[0]["steps"] == 3 + 24 // (2 * n) + 48 // (2 * n)


# ------------------------------------------------------------------ failures
def test_exception_in_training_step_ends_the_job(tmp_path):
    code, text, seconds, _ = launch(tmp_path, "fail", 2, timeout=60)
    assert code != 0
    assert seconds < 30, text
    assert "rank 1/2" in text and "deliberate failure in training_step" in text
