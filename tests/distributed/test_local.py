"""The one-process side of ember.distributed: launch detection, the local communicator, lazy
mpi4py, DDPStrategy and SyncBatchNorm with one rank, abort_on_exception."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import ember
from ember import nn
from ember.data.dataloader import DataLoader
from ember.data.dataset import TensorDataset
from ember.distributed import comm as comm_mod
from ember.distributed.comm import LocalCommunicator, launch_env
from ember.distributed.ddp_strategy import DDPStrategy, strategy_for
from ember.distributed.failure import abort_on_exception
from ember.distributed.strategy import SingleDeviceStrategy
from ember.distributed.sync_batchnorm import SyncBatchNorm, convert_sync_batchnorm

_LAUNCH_VARS = (
    "PMI_RANK",
    "PMI_SIZE",
    "OMPI_COMM_WORLD_RANK",
    "OMPI_COMM_WORLD_SIZE",
    "PMIX_RANK",
    "MV2_COMM_WORLD_RANK",
    "MPI_LOCALRANKID",
    "EMBER_MPI",
)


@pytest.fixture
def no_launcher(monkeypatch):
    for var in _LAUNCH_VARS:
        monkeypatch.delenv(var, raising=False)


def test_launch_detection(no_launcher, monkeypatch):
    assert launch_env() is None
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "3")
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_RANK", "1")
    assert launch_env() == {"rank": 3, "size": 4, "local_rank": 1}
    monkeypatch.setenv("EMBER_MPI", "0")
    assert launch_env() is None
    monkeypatch.delenv("OMPI_COMM_WORLD_RANK")
    monkeypatch.setenv("EMBER_MPI", "1")
    assert launch_env()["rank"] == 0
    monkeypatch.delenv("EMBER_MPI")
    monkeypatch.setenv("PMIX_RANK", "2")
    assert launch_env()["rank"] == 2


def test_importing_never_imports_mpi4py():
    code = (
        "import sys, ember.distributed as d, ember.distributed.ddp, "
        "ember.distributed.ddp_strategy, ember.distributed.sync_batchnorm; "
        "c = d.world(); assert c.size == 1, c; print('mpi4py' in sys.modules)"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k not in _LAUNCH_VARS}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == "False"


def test_local_communicator():
    c = LocalCommunicator()
    a = np.arange(3.0)
    assert c.allreduce(a, "mean") is a and a.tolist() == [0.0, 1.0, 2.0]
    assert c.broadcast_object({"a": (1, 2)}) == {"a": [1, 2]}  # JSON: tuples become lists
    assert c.allgather_object(5) == [5]
    assert c.allgather(np.ones(2)).shape == (1, 2)
    with pytest.raises(ValueError, match="op must be one of sum, mean, max, min"):
        c.allreduce(a, "prod")
    with pytest.raises(TypeError, match="must be JSON-serialisable"):
        c.broadcast_object(object())


def test_world_without_launcher_is_local(no_launcher, monkeypatch):
    monkeypatch.setattr(comm_mod, "_WORLD", None)
    assert isinstance(comm_mod.world(), LocalCommunicator)


def test_strategy_for(no_launcher, monkeypatch):
    monkeypatch.setattr(comm_mod, "_WORLD", None)
    assert type(strategy_for("auto")) is SingleDeviceStrategy
    assert type(strategy_for("single_device")) is SingleDeviceStrategy
    assert isinstance(strategy_for("ddp"), DDPStrategy)
    s = SingleDeviceStrategy()
    assert strategy_for(s) is s
    with pytest.raises(ValueError, match="expected 'auto', 'ddp', 'single_device'"):
        strategy_for("fsdp")


def test_ddp_strategy_with_one_rank():
    s = DDPStrategy(comm=LocalCommunicator())
    assert (s.global_rank, s.local_rank, s.world_size, s.is_global_zero) == (0, 0, 1, True)
    vals = {"loss": 1.5, "acc": np.array([0.5, 0.25]), "n": 3, "t": ember.tensor([2.0])}
    out = s.reduce(vals, op="sum")
    assert out["loss"] == 1.5 and out["n"] == 3 and isinstance(out["n"], int)
    np.testing.assert_array_equal(out["acc"], [0.5, 0.25])
    assert out["t"].tolist() == [2.0]
    assert s.reduce(2.0, op="mean", weight=4) == 2.0
    with pytest.raises(ValueError, match="weight only applies to op='mean'"):
        s.reduce(1.0, op="sum", weight=2)
    with pytest.raises(ValueError, match="op must be"):
        s.reduce(1.0, op="prod")
    assert s.reduce_boolean_decision(True) is True
    assert s.broadcast({"x": 1}) == {"x": 1}
    dl = DataLoader(TensorDataset(ember.arange(4)), batch_size=2)
    assert s.process_dataloader(dl, "fit") is dl  # one rank: nothing to shard
    model = nn.Linear(2, 2)
    wrapped = s.setup_module(model)
    assert wrapped.module is model
    s.teardown()


def test_sync_batchnorm_with_one_rank_is_batchnorm():
    ember.manual_seed(0)
    bn = nn.BatchNorm2d(3)
    sbn = SyncBatchNorm(3, process_group=LocalCommunicator())
    x = ember.randn(4, 3, 5, 5)
    a, b = bn(x), sbn(x)
    np.testing.assert_allclose(a.data, b.data, rtol=1e-6)
    np.testing.assert_allclose(bn.running_var.data, sbn.running_var.data, rtol=1e-6)
    with pytest.raises(ValueError, match=r"SyncBatchNorm: expected .* input"):
        sbn(ember.randn(4))


class _TwoRankComm:
    """A peer holding the same batch as this rank: statistics and sums double."""

    rank, size = 0, 2

    def allgather(self, arr):
        return np.stack([arr, arr])

    def allreduce(self, arr, op="sum"):
        arr *= 2
        return arr


def test_sync_batchnorm_function_against_batchnorm_on_the_doubled_batch():
    torch = pytest.importorskip("torch")
    ember.manual_seed(0)
    sbn = SyncBatchNorm(3, process_group=_TwoRankComm())
    sbn.weight.data[...] = np.array([1.0, 2.0, 0.5], np.float32)
    x = np.random.default_rng(0).standard_normal((4, 3, 2, 2)).astype(np.float32)
    g = np.random.default_rng(1).standard_normal((4, 3, 2, 2)).astype(np.float32)
    ex = ember.tensor(x, requires_grad=True)
    (sbn(ex) * ember.tensor(g)).sum().backward()

    tbn = torch.nn.BatchNorm2d(3)
    with torch.no_grad():
        tbn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
    tx = torch.tensor(np.concatenate([x, x]), requires_grad=True)
    out = tbn(tx)
    (out * torch.tensor(np.concatenate([g, g]))).sum().backward()
    np.testing.assert_allclose(
        sbn.running_mean.data, tbn.running_mean.numpy(), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(sbn.running_var.data, tbn.running_var.numpy(), rtol=1e-5)
    # the input gradient of this rank's half; weight/bias grads are this rank's share (DDP
    # averages them: here the two halves are equal, so half the full-batch gradient)
    np.testing.assert_allclose(ex.grad.data, tx.grad[:4].numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        sbn.weight.grad.data, tbn.weight.grad.numpy() / 2, rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(sbn.bias.grad.data, tbn.bias.grad.numpy() / 2, rtol=1e-4, atol=1e-5)


def test_convert_sync_batchnorm_keeps_state():
    model = nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3), nn.Sequential(nn.BatchNorm1d(4)))
    model[1].running_mean.data[...] = 7.0
    model.eval()
    w = model[1].weight
    out = convert_sync_batchnorm(model)
    assert out is model
    assert isinstance(model[1], SyncBatchNorm) and isinstance(model[2][0], SyncBatchNorm)
    assert model[1].weight is w and model[1].running_mean.data[0] == 7.0
    assert not model[1].training
    assert list(model.state_dict()) == [
        "0.weight",
        "0.bias",
        "1.weight",
        "1.bias",
        "1.running_mean",
        "1.running_var",
        "1.num_batches_tracked",
        "2.0.weight",
        "2.0.bias",
        "2.0.running_mean",
        "2.0.running_var",
        "2.0.num_batches_tracked",
    ]
    root = convert_sync_batchnorm(nn.BatchNorm1d(2))
    assert isinstance(root, SyncBatchNorm)
    assert SyncBatchNorm.convert_sync_batchnorm(nn.BatchNorm1d(2)).num_features == 2


def test_abort_on_exception_with_one_process_reraises():
    with pytest.raises(KeyError):
        with abort_on_exception(LocalCommunicator()):
            raise KeyError("x")
