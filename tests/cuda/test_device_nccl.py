"""The NCCL path of ember.distributed on the fake CuPy (one process): the communicator's set
up, allreduces enqueued on the side stream while backward runs, and the DDP wiring."""

from __future__ import annotations

import numpy as np
import pytest

import ember
import ember.nn as nn
from ember.distributed.comm import LocalCommunicator
from ember.distributed.ddp import DistributedDataParallel
from ember.distributed.nccl import CudaReducer, NcclCommunicator, device_for_local_rank
from ember.distributed.reducer import Reducer


class TwoRanks(LocalCommunicator):
    """A communicator that says there are two ranks (the fake NCCL's other rank adds 0)."""

    size = 2


def _model():
    ember.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 32), nn.GELU(), nn.Linear(32, 32), nn.Linear(32, 3))


def _grads(model, x):
    model.zero_grad()
    model(x).square().sum().backward()
    return [p.grad.cpu().numpy().copy() for p in model.parameters()]


def test_communicator_joins_with_the_broadcast_id_on_the_local_rank_gpu(fake_cuda):
    comm = NcclCommunicator(LocalCommunicator())
    assert comm.device == "cuda:0" and device_for_local_rank(3) == "cuda:0"  # one GPU here
    a = ember.arange(6.0, device="cuda").data
    out = comm.allreduce(a, "mean")
    assert out is a and a.get().tolist() == list(range(6))
    call = fake_cuda.cuda.nccl.calls[-1]
    assert call["count"] == 6 and call["stream"] == comm.stream.ptr != 0  # on the side stream
    with pytest.raises(TypeError, match="contiguous CuPy array"):
        comm.allreduce(np.ones(3, np.float32))
    with pytest.raises(TypeError, match="unsupported op"):
        comm.allreduce(a, "prod")


def test_cuda_reducer_overlaps_backward_and_matches_plain_gradients(fake_cuda):
    x = ember.tensor(np.random.default_rng(0).standard_normal((5, 6)).astype(np.float32))
    ref = _grads(_model(), x)
    model = _model().to("cuda")
    calls_in_backward = []
    comm = NcclCommunicator(LocalCommunicator())
    reducer = CudaReducer(model.parameters(), comm, bucket_cap_mb=0.001, first_bucket_mb=0.0005)
    assert len(reducer.buckets) > 1 and all(
        isinstance(b.flat, fake_cuda.ndarray) for b in reducer.buckets
    )
    # the first layer's gradient is the last to come: count the allreduces enqueued before it
    first = next(model.parameters())
    first.register_hook(lambda g: calls_in_backward.append(len(fake_cuda.cuda.nccl.calls)))
    got = _grads(model, x.cuda())
    assert calls_in_backward[0] >= 1  # some buckets went out while backward still ran
    assert len(fake_cuda.cuda.nccl.calls) == len(reducer.buckets)
    assert comm.stream.record() in fake_cuda.cuda.get_current_stream().waited or any(
        w is not None for w in fake_cuda.cuda.get_current_stream().waited
    )
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    reducer.close()


def test_ddp_with_cuda_parameters_takes_the_nccl_path(fake_cuda):
    x = ember.tensor(np.random.default_rng(1).standard_normal((4, 6)).astype(np.float32))
    ref = _grads(_model(), x)
    ddp = DistributedDataParallel(_model().to("cuda"), comm=TwoRanks(), first_bucket_mb=0.001)
    assert isinstance(ddp.reducer, CudaReducer) and isinstance(ddp.reducer.comm, NcclCommunicator)
    got = _grads(ddp, x.cuda())
    for a, b in zip(got, ref):  # the other (fake) rank contributed zeros: the mean is half
        np.testing.assert_allclose(a, b / 2, rtol=1e-5, atol=1e-6)
    ddp.close()


def test_mpi_reducer_refuses_cuda_parameters(fake_cuda):
    with pytest.raises(NotImplementedError, match="NCCL communicator"):
        Reducer(nn.Linear(2, 2).to("cuda").parameters(), TwoRanks())
