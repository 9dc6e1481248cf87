"""``import ember.trainer`` stays fast (< 0.5 s) and does not import tensorboardX, tqdm or
yaml: optional heavy modules load on first use."""

from __future__ import annotations

import os
import pathlib
import resource
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
HEAVY = ("tensorboardX", "tqdm", "yaml", "hydra", "mpi4py", "torch", "cupy")
CODE = f"import sys, ember.trainer; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
LIMIT = 0.5


def _run() -> tuple[float, float, str]:
    """(wall seconds, CPU seconds, heavy modules found) for one fresh interpreter."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert res.returncode == 0, res.stderr
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, res.stdout.strip()


def test_import_ember_trainer_is_fast_and_light():
    runs = [_run() for _ in range(3)]
    while min(r[0] for r in runs) >= LIMIT and len(runs) < 8:
        runs.append(_run())  # the best of several: the others measure the neighbours
    wall = min(r[0] for r in runs)
    cpu = min(r[1] for r in runs)
    print(
        f"python -c 'import ember.trainer': best wall {wall:.3f} s, best CPU {cpu:.3f} s "
        f"(of {len(runs)} runs)"
    )
    assert all(r[2] == "" for r in runs), f"heavy modules imported: {runs[0][2]}"
    # Wall time is the criterion. On an oversubscribed machine (other test workers, other
    # jobs) wall time measures the queue, so the interpreter's own CPU time stands in.
    overloaded = os.getloadavg()[0] > (os.cpu_count() or 1)
    assert wall < LIMIT or (overloaded and cpu < LIMIT), runs
