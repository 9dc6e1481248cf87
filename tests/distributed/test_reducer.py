"""DDP's machinery without MPI: the bucket plan, compression, the communication thread, and the
reducer driven by a fake two-rank communicator (the "other rank" holds identical gradients)."""

from __future__ import annotations

import threading
import time

import ml_dtypes
import numpy as np
import pytest

import ember
import ember.nn.functional as F
from ember import nn
from ember.autograd.function import Function
from ember.distributed.ddp import DistributedDataParallel
from ember.distributed.reducer import CommThread, compress, decompress, plan_buckets

MB = 1024 * 1024


# ------------------------------------------------------------------ bucket plan
def test_plan_is_reverse_registration_order_with_small_first_bucket():
    # the issue-3 MLP: 784-512-512-10 (weight, bias per layer), float32
    sizes = [784 * 512 * 4, 512 * 4, 512 * 512 * 4, 512 * 4, 512 * 10 * 4, 10 * 4]
    plan = plan_buckets(sizes, ["float32"] * 6, 25 * MB, 1 * MB)
    # walk: l3.b, l3.w, l2.b, l2.w (1.07 MB >= 1 MB: closes), then l1.b, l1.w
    assert plan == [[5, 4, 3, 2], [1, 0]]


def test_plan_caps_after_the_first_bucket():
    sizes = [400] * 10
    plan = plan_buckets(sizes, ["f"] * 10, cap_bytes=1000, first_cap_bytes=300)
    assert plan[0] == [9]  # 400 >= 300 closes the first bucket at once
    assert plan[1:] == [[8, 7, 6], [5, 4, 3], [2, 1, 0]]
    assert sorted(i for b in plan for i in b) == list(range(10))


def test_plan_one_dtype_per_bucket_ordered_by_first_parameter():
    sizes = [100, 100, 100, 100]
    dtypes = ["float32", "float16", "float32", "float16"]
    plan = plan_buckets(sizes, dtypes, cap_bytes=10_000, first_cap_bytes=10_000)
    assert plan == [[3, 1], [2, 0]]  # float16 bucket opens first (index 3 is walked first)


def test_plan_rejects_non_positive_caps():
    with pytest.raises(ValueError, match="caps must be positive"):
        plan_buckets([4], ["f"], 0, 1)


# ------------------------------------------------------------------ compression
@pytest.mark.parametrize(
    "kind,dtype,rel", [("fp16", np.float16, 1e-3), ("bf16", ml_dtypes.bfloat16, 8e-3)]
)
def test_compression_round_trip(kind, dtype, rel):
    rng = np.random.default_rng(0)
    flat = rng.standard_normal(1000).astype(np.float32) * 100
    low = np.empty(flat.size, dtype)
    compress(flat, 0.25, low)
    back = np.empty_like(flat)
    decompress(low, back)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, flat * 0.25, rtol=rel, atol=1e-6)


def test_compression_scales_before_rounding():
    flat = np.full(4, 60000.0, np.float32)  # 4 ranks x 60000 would overflow float16's sum
    low = np.empty(4, np.float16)
    compress(flat, 0.25, low)
    assert np.isfinite(low.astype(np.float32) * 4).all()
    assert float(low[0]) == 15000.0


# ------------------------------------------------------------------ comm thread
def test_comm_thread_runs_in_order_and_reraises():
    t = CommThread()
    seen = []
    for i in range(5):
        t.submit(seen.append, i)
    t.wait()
    assert seen == [0, 1, 2, 3, 4]

    def boom():
        raise OSError("link down")

    t.submit(boom)
    with pytest.raises(RuntimeError, match="gradient allreduce failed: link down"):
        t.wait()
    t.submit(seen.append, 5)  # still usable
    t.wait()
    assert seen[-1] == 5
    t.stop()


# ------------------------------------------------------------------ reducer, fake 2 ranks
class FakeComm:
    """Two ranks whose peer always holds the same values as this one."""

    rank, size, local_rank, local_size, name = 0, 2, 0, 1, "fake"

    def __init__(self, log=None):
        self.log = log if log is not None else []

    def allreduce(self, arr, op="sum", yield_while=None):
        self.log.append(("allreduce", arr.size, time.perf_counter()))
        time.sleep(0.002)
        if op == "sum":
            arr *= arr.dtype.type(2)
        return arr

    def broadcast(self, arr, root=0):
        return arr

    def allgather_object(self, obj):
        return [obj, obj]

    def broadcast_object(self, obj, root=0):
        return obj

    def dup(self, name):
        return FakeComm(self.log)


class Marker(Function):
    """Identity that records when its backward runs (the start of the network)."""

    def __init__(self, events):
        self.events = events

    def forward(self, x):
        return x.copy()

    def backward(self, g):
        time.sleep(0.02)  # the rest of backward: the first buckets' allreduces overlap it
        self.events.append(("marker", time.perf_counter()))
        return g


class Net(nn.Module):
    def __init__(self, events):
        super().__init__()
        self.events = events
        self.l1 = nn.Linear(8, 32)
        self.l2 = nn.Linear(32, 32)
        self.l3 = nn.Linear(32, 3)
        self.unused = nn.Linear(2, 2)

    def forward(self, x):
        h = self.l1(x).relu()
        h = Marker(self.events).apply(h)
        return self.l3(self.l2(h).relu())


def _grads(model):
    return {n: None if p.grad is None else p.grad.data.copy() for n, p in model.named_parameters()}


def test_reducer_averages_in_buckets_overlapping_backward():
    events = []
    ember.manual_seed(0)
    model = Net(events)
    plain = Net([])
    plain.load_state_dict(model.state_dict())
    comm = FakeComm()
    ddp = DistributedDataParallel(
        model, comm=comm, bucket_cap_mb=2e-4, first_bucket_mb=2e-4, find_unused_parameters=True
    )
    assert len(ddp.reducer.buckets) == 3  # [unused, l3], [l2], [l1]
    x = ember.randn(5, 8)
    y = ember.tensor([0, 1, 2, 0, 1])
    F.cross_entropy(ddp(x), y).backward()
    F.cross_entropy(plain(x), y).backward()
    got, want = _grads(model), _grads(plain)
    assert got["unused.weight"] is None and got["unused.bias"] is None
    for name in want:
        if want[name] is not None:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-7)
    # grads are views of the bucket buffers (no copy back)
    b, slot = ddp.reducer._where[id(model.l3.weight)]
    assert model.l3.weight.grad.data is b.views[slot]
    # l3/l2's buckets were reduced while backward still ran (before the marker's backward
    # finished), l1's only after
    marker_t = next(t for kind, t in events if kind == "marker")
    sizes_before = [n for kind, n, t in comm.log if kind == "allreduce" and t < marker_t]
    assert len(sizes_before) == 2, "l3's and l2's buckets did not start during backward"
    t = ddp.communication_timings()
    assert t["allreduce_s"] > 0 and 0 < t["hidden_share"] <= 1
    ddp.close()


def test_unused_parameter_holds_its_bucket_back_without_find_unused():
    events = []
    model = Net(events)
    comm = FakeComm()
    ddp = DistributedDataParallel(model, comm=comm, bucket_cap_mb=2e-4, first_bucket_mb=2e-4)
    ddp(ember.randn(2, 8)).sum().backward()
    marker_t = next(t for kind, t in events if kind == "marker")
    started = [t for kind, n, t in comm.log if kind == "allreduce"]
    assert len(started) == 3 and all(t > marker_t for t in started)  # in order, at the end
    assert model.unused.weight.grad is None and model.l3.weight.grad is not None
    ddp.close()


def test_no_sync_accumulates_then_one_synchronised_backward():
    ember.manual_seed(0)
    model = Net([])
    comm = FakeComm()
    ddp = DistributedDataParallel(model, comm=comm)
    xs = [ember.randn(4, 8) for _ in range(3)]
    with ddp.no_sync():
        ddp(xs[0]).sum().backward()
        ddp(xs[1]).sum().backward()
    assert comm.log == []  # nothing communicated
    ddp(xs[2]).sum().backward()
    assert len(comm.log) == len(ddp.reducer.buckets)
    ref = Net([])
    ref.load_state_dict(model.state_dict())
    for x in xs:
        ref(x).sum().backward()
    for p, q in zip(model.parameters(), ref.parameters()):
        if q.grad is not None:
            np.testing.assert_allclose(p.grad.data, q.grad.data, rtol=1e-5, atol=1e-6)
    ddp.close()


def test_forward_under_no_sync_backward_outside_does_not_sync():
    model = Net([])
    comm = FakeComm()
    ddp = DistributedDataParallel(model, comm=comm)
    with ddp.no_sync():
        loss = ddp(ember.randn(2, 8)).sum()
    loss.backward()  # torch: the forward decided
    assert comm.log == []
    ddp.close()


def test_backward_without_ddp_forward_syncs():
    model = Net([])
    comm = FakeComm()
    ddp = DistributedDataParallel(model, comm=comm)
    model(ember.randn(2, 8)).sum().backward()  # the inner module, as a Trainer may call it
    n = len(comm.log)
    assert n == len(ddp.reducer.buckets)
    ddp.close()
    model.zero_grad()
    model(ember.randn(2, 8)).sum().backward()  # hooks removed: no more communication
    assert len(comm.log) == n


def test_state_dict_has_no_module_prefix_and_loads_either_form():
    model = Net([])
    ddp = DistributedDataParallel(model, comm=FakeComm())
    sd = ddp.state_dict()
    assert list(sd) == list(model.state_dict())
    assert not any(k.startswith("module.") for k in sd)
    fresh = DistributedDataParallel(Net([]), comm=FakeComm())
    fresh.load_state_dict({"module." + k: v for k, v in sd.items()})
    for a, b in zip(fresh.module.parameters(), model.parameters()):
        np.testing.assert_array_equal(a.data, b.data)
    assert [n for n, _ in ddp.named_parameters()][0].startswith("module.")  # as torch
    ddp.close()
    fresh.close()


def test_different_models_are_reported():
    class Mismatch(FakeComm):
        def allgather_object(self, obj):
            return [obj, "other"]

        def broadcast_object(self, obj, root=0):
            return [["p", "l1.weight", [1, 1], "float32", True]]

    with pytest.raises(RuntimeError, match="ranks hold different models"):
        DistributedDataParallel(Net([]), comm=Mismatch())


def test_bad_arguments():
    with pytest.raises(ValueError, match="compression must be None, 'fp16' or 'bf16'"):
        DistributedDataParallel(Net([]), comm=FakeComm(), compression="int8")
    with pytest.raises(TypeError, match="expected an ember.nn.Module"):
        DistributedDataParallel(object(), comm=FakeComm())


def test_one_process_is_a_passthrough():
    from ember.distributed.comm import LocalCommunicator

    model = Net([])
    ddp = DistributedDataParallel(model, comm=LocalCommunicator())
    assert ddp.reducer is None
    x = ember.randn(3, 8)
    np.testing.assert_array_equal(ddp(x).data, model(x).data)
    ddp(x).sum().backward()
    assert model.l1.weight.grad is not None
    assert threading.active_count() >= 1
