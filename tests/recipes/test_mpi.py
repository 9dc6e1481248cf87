"""``ember-train`` under ``mpiexec -n 2``: the ranks share one run directory (one ``.hydra/``, one
log), train identical weights, and a ``-m`` sweep is refused."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("hydra")

from tests.distributed.mpirun import child_env, mpiexec, one_mpi_job_at_a_time  # noqa: E402
from tests.recipes.helpers import only_run_dir, output, tiny_gpt_overrides  # noqa: E402

pytestmark = pytest.mark.mpi


def _mpi_train(args, cwd, timeout=180.0):
    cmd = [mpiexec(), "-n", "2", sys.executable, "-m", "ember.recipes.train", *args]
    with one_mpi_job_at_a_time():
        return subprocess.run(
            cmd, cwd=str(cwd), env=child_env(), capture_output=True, text=True, timeout=timeout
        )


def test_two_ranks_share_one_run_dir_and_end_with_identical_weights(tmp_path):
    # a run-dir pattern that differs per rank: only rank 0's resolution may be used
    per_rank = "hydra.run.dir=outputs/gpt/rank${oc.env:PMI_RANK}"
    proc = _mpi_train([*tiny_gpt_overrides(), per_rank], tmp_path)
    assert proc.returncode == 0, output(proc)
    run_dir = only_run_dir(tmp_path)
    assert run_dir.name == "rank0"
    assert [p.parent for p in tmp_path.rglob(".hydra")] == [run_dir]
    assert [p.name for p in tmp_path.rglob("*.log")] == ["train.log"]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    text = proc.stdout + proc.stderr
    assert text.count("=== ember-train: done ===") == 1  # rank 0 reports, once
    assert "final weights identical on all 2 ranks" in text
    assert "for 6 steps on 2 ranks" in text
    assert text.count("--- sample at step") == 2  # samples come from rank 0 only


def test_multirun_with_two_ranks_is_refused(tmp_path):
    proc = _mpi_train(["-m", "experiment=mlp_synthetic", "optimizer.lr=1e-3,3e-3"], tmp_path)
    assert proc.returncode != 0
    assert proc.stderr.count("cannot run under mpiexec with 2 ranks") == 1, output(proc)
    assert list(tmp_path.iterdir()) == []


class _FakeComm:
    def __init__(self, rank):
        self.rank, self.size, self.sent = rank, 2, []

    def broadcast_object(self, obj, root=0):
        self.sent.append(obj)
        return obj if self.rank == 0 else ["/runs/a b/it's", None]


@pytest.mark.parametrize("rank", [0, 1])
def test_agreement_overrides_per_rank(rank, monkeypatch, tmp_path):
    from ember.recipes import rundir
    from ember.recipes.checks import compose

    comm = _FakeComm(rank)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(rundir, "launcher_size", lambda: 2)
    monkeypatch.setattr("ember.distributed.comm.world", lambda timeout=None: comm)
    out = rundir.agree_on_run_dir("train", ["seed=1", "hydra.run.dir=runs/${seed}"])
    expected = str(tmp_path / "runs" / "1") if rank == 0 else "/runs/a b/it's"
    assert len(comm.sent) == 1 and (rank != 0 or comm.sent[0] == [expected, None])
    tail = ["hydra.output_subdir=null", "hydra/job_logging=none", "hydra/hydra_logging=none"]
    assert out[3:] == (tail if rank else [])
    cfg = compose("train", out, hydra=True)  # Hydra reads the quoted path back verbatim
    assert cfg.hydra.run.dir == expected
