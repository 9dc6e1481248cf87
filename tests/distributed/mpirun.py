"""Launching ``tests/distributed/mpi_worker.py`` under mpiexec from pytest.

Each run is a subprocess in its own process group with a timeout: on expiry the whole group
(mpiexec and every rank) is killed, so a hang fails the test instead of the suite. Children get
one BLAS/OpenMP/Ember thread each (4 ranks share 2 cores) and no inherited launcher variables.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import pytest

WORKER = pathlib.Path(__file__).with_name("mpi_worker.py")
ROOT = WORKER.parents[2]


@contextlib.contextmanager
def one_mpi_job_at_a_time():
    """Serialise mpiexec launches across pytest-xdist workers: two MPICH jobs started at once
    on this 2-core machine occasionally killed each other's ranks before they printed
    anything (seen as an empty output and exit status 1)."""
    with open(os.path.join(tempfile.gettempdir(), "ember-mpi-tests.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def mpiexec() -> str:
    """The mpiexec beside this Python (the mpich wheel's), else the one on PATH; skips the
    test when MPI or mpi4py is missing."""
    pytest.importorskip("mpi4py")
    here = pathlib.Path(sys.executable).with_name("mpiexec")
    path = str(here) if here.exists() else shutil.which("mpiexec")
    if path is None:
        pytest.skip("mpiexec is not installed (pip install mpich, or the 'mpi' extra)")
    return path


@dataclass
class Run:
    returncode: int
    output: str
    seconds: float
    result: dict | None


def child_env() -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PMI_", "PMIX_", "OMPI_", "MPI_LOCAL", "HYDRA_", "MV2_"))
    }
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "EMBER_NUM_THREADS"):
        env[var] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("EMBER_MPI", None)
    return env


def run_worker(
    tmp_path, scenario: str, ranks: int, timeout: float = 120.0, collective_timeout: float = 60.0
) -> Run:
    """Run one scenario on ``ranks`` processes; rank 0's JSON result (None if it wrote none)."""
    out = pathlib.Path(tmp_path) / f"{scenario}-{ranks}.json"
    cmd = [
        mpiexec(),
        "-n",
        str(ranks),
        sys.executable,
        str(WORKER),
        scenario,
        str(out),
        str(collective_timeout),
    ]
    with one_mpi_job_at_a_time():
        return _run(cmd, ranks, scenario, out, timeout)


def _run(cmd, ranks: int, scenario: str, out: pathlib.Path, timeout: float) -> Run:
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
        pytest.fail(f"mpiexec -n {ranks} {scenario} did not finish within {timeout} s:\n{text}")
    seconds = time.monotonic() - t0
    result = json.loads(out.read_text()) if out.exists() else None
    return Run(proc.returncode, text, seconds, result)
