"""Data parallelism under real MPI: ``mpiexec -n 2`` and ``-n 4`` (oversubscribed) subprocesses.

One mpiexec run per scenario and world size (module-scoped), the assertions below read its
results. The failure scenarios check that a job with a raising, stalled or exiting rank ends
with a non-zero status, quickly, and says which rank.
"""

from __future__ import annotations

import pytest

from tests.distributed.mpirun import run_worker

pytestmark = pytest.mark.mpi

TOL = 1e-6  # float32 weights after 20 SGD steps: N ranks x B == 1 process x N*B


@pytest.fixture(scope="module", params=[2, 4], ids=["2ranks", "4ranks"])
def trained(request, tmp_path_factory):
    run = run_worker(tmp_path_factory.mktemp("train"), "train", request.param)
    assert run.returncode == 0, run.output
    assert run.result is not None and run.result["size"] == request.param
    return run.result


@pytest.fixture(scope="module", params=[2, 4], ids=["2ranks", "4ranks"])
def strategy(request, tmp_path_factory):
    run = run_worker(tmp_path_factory.mktemp("strategy"), "strategy", request.param)
    assert run.returncode == 0, run.output
    return run.result


# ------------------------------------------------------------------ equivalence
def test_mlp_matches_single_process(trained):
    assert trained["mlp_moved"] > 1e-2  # the weights really changed
    assert trained["mlp_rank_spread"] == 0.0  # rank 0's init was broadcast; ranks agree
    assert trained["mlp_vs_single"] <= TOL


def test_gradient_accumulation_with_no_sync(trained):
    assert trained["accum_rank_spread"] == 0.0
    assert trained["accum_vs_single"] <= TOL


def test_batchnorm_buffers_broadcast(trained):
    # plain BatchNorm: per-rank batch statistics, rank 0's running stats (as torch)
    assert trained["bn_param_rank_spread"] == 0.0
    assert trained["bn_state_rank_spread"] == 0.0  # after sync_buffers (before evaluation)
    assert trained["bn_vs_simulated"] <= TOL


def test_sync_batchnorm_matches_single_process(trained):
    assert trained["syncbn_rank_spread"] == 0.0  # buffers too: global statistics everywhere
    assert trained["syncbn_vs_single"] <= TOL


@pytest.mark.parametrize("kind,tol", [("fp16", 2e-3), ("bf16", 1e-2)])
def test_compressed_gradients(trained, kind, tol):
    assert trained[f"{kind}_rank_spread"] == 0.0
    assert 0.0 < trained[f"{kind}_vs_single"] <= tol


def test_unused_parameters(trained):
    assert trained["never_grad_is_none"]  # no rank used it: grad stays None
    assert trained["odd_grad_spread"] == 0.0  # used on some ranks: zero-filled elsewhere
    assert trained["odd_grad_err"] <= 1e-5
    assert trained["a_grad_spread"] == 0.0


# ------------------------------------------------------------------ strategy
def test_strategy_collectives(strategy):
    n = strategy["size"]
    total = n * (n - 1) / 2
    assert strategy["reduce_sum"] == [total, [total, 2 * total], [total], [total, n]]
    assert strategy["reduce_max"] == n - 1
    assert strategy["reduce_mean"] == pytest.approx(total / n)
    weights = range(1, n + 1)
    assert strategy["weighted"] == pytest.approx(sum((w - 1) * w for w in weights) / sum(weights))
    assert strategy["any"] is True and strategy["all"] is False
    assert strategy["bcast_json"] == {"rank": n - 1, "x": [1, 2]}
    assert strategy["bcast_array"] == [[[0, 2, 4], [6, 8, 10]], "int16"]
    assert strategy["bcast_tensor"] == [1.0, 1.0]
    assert strategy["bcast_path"] == "/tmp/r0"
    assert strategy["local_rank"] == list(range(n))


def test_strategy_dataloaders(strategy):
    n = strategy["size"]
    fit, val = strategy["fit_shards"], strategy["val_shards"]
    per = -(-10 // n)
    assert all(len(s) == per for s in fit)  # padded: every rank the same count
    assert set().union(*map(set, fit)) == set(range(10))
    assert sorted(sum(val, [])) == list(range(10))  # evaluation: each sample exactly once
    assert strategy["val_metric"] == pytest.approx(strategy["val_metric_single"], abs=1e-12)


# ------------------------------------------------------------------ failures never hang
def test_exception_on_one_rank_aborts_the_job(tmp_path):
    run = run_worker(tmp_path, "raise", 2, timeout=60)
    assert run.returncode != 0
    assert run.seconds < 30, run.output
    assert "rank 1/2" in run.output and "deliberate failure on the last rank" in run.output
    assert "Traceback" in run.output


def test_abort_on_exception_block(tmp_path):
    run = run_worker(tmp_path, "raise_in_context", 2, timeout=60)
    assert run.returncode != 0
    assert run.seconds < 30, run.output
    assert "rank 0/2" in run.output and "KeyError" in run.output


def test_watchdog_names_the_stalled_rank(tmp_path):
    run = run_worker(tmp_path, "stall", 4, timeout=90, collective_timeout=2.0)
    assert run.returncode != 0
    assert run.seconds < 30, run.output
    assert "ranks that did not arrive: [3]" in run.output, run.output
    assert "rank 3 (" in run.output and "mpi_worker.py" in run.output  # where it is instead


def test_watchdog_in_the_gradient_thread(tmp_path):
    run = run_worker(tmp_path, "stall_backward", 2, timeout=60, collective_timeout=2.0)
    assert run.returncode != 0
    assert run.seconds < 30, run.output
    assert "'ddp-grad'" in run.output and "did not arrive: [1]" in run.output, run.output


def test_rank_that_exits_early_ends_the_job(tmp_path):
    run = run_worker(tmp_path, "exit", 2, timeout=60, collective_timeout=600.0)
    assert run.returncode != 0
    assert run.seconds < 30, run.output
    assert "EXITED" in run.output, run.output
