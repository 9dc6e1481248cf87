"""Run under ``mpiexec -n N python tests/distributed/mpi_worker.py SCENARIO OUT.json``.

Each rank trains or checks something; rank 0 compares with a single-process reference it
computes itself and writes the numbers (max differences, flags) to OUT.json. The pytest side
(``test_mpi.py``) asserts on them. Failure scenarios ('raise', 'stall', 'stall_backward',
'exit') are expected to end the job.
"""

from __future__ import annotations

import copy
import json
import sys
import time

import numpy as np

import ember
import ember.nn.functional as F
import ember.optim
from ember import nn
from ember.distributed.comm import world
from ember.distributed.ddp import DistributedDataParallel
from ember.distributed.sync_batchnorm import convert_sync_batchnorm

STEPS = 20
B = 4  # per-rank batch


def data(step: int, n: int, shape, classes: int = 3):
    rng = np.random.default_rng(100 + step)
    x = rng.standard_normal((n,) + tuple(shape)).astype(np.float32)
    y = rng.integers(0, classes, n)
    return x, y


def shard(a, rank: int, size: int, per: int):
    return a[rank * per : (rank + 1) * per]


def mlp():
    return nn.Sequential(
        nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)
    )


def bn_net():
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 5 * 5, 8),
        nn.BatchNorm1d(8),
        nn.Tanh(),
        nn.Linear(8, 3),
    )


def flat_state(model) -> np.ndarray:
    return np.concatenate([v.data.astype(np.float64).ravel() for v in model.state_dict().values()])


def diff(a, b) -> float:
    """max |a - b| / max(1, |b|): absolute for weights below 1, relative above (variances)."""
    a, b = flat_state(a), flat_state(b)
    return float((np.abs(a - b) / np.maximum(1.0, np.abs(b))).max())


def max_rank_spread(comm, vec: np.ndarray) -> float:
    """max over entries of (max over ranks - min over ranks)."""
    hi, lo = vec.copy(), vec.copy()
    comm.allreduce(hi, "max")
    comm.allreduce(lo, "min")
    return float(np.abs(hi - lo).max())


def sgd(params):
    return ember.optim.SGD(params, lr=0.1, momentum=0.9)


def train_ddp(comm, model, shape, micro: int = 1, sync_buffers: bool = False, **ddp_kwargs):
    ddp = DistributedDataParallel(model, comm=comm, **ddp_kwargs)
    opt = sgd(model.parameters())
    for step in range(STEPS):
        opt.zero_grad()
        for k in range(micro):
            x, y = data(step * micro + k, B * comm.size, shape)
            x = ember.tensor(shard(x, comm.rank, comm.size, B))
            y = ember.tensor(shard(y, comm.rank, comm.size, B))
            if k < micro - 1:
                with ddp.no_sync():
                    F.cross_entropy(ddp(x), y).backward()
            else:
                F.cross_entropy(ddp(x), y).backward()
        opt.step()
    timings = ddp.communication_timings()
    if sync_buffers:
        ddp.sync_buffers()
    ddp.close()
    return timings


def train_reference(model, shape, n: int, micro: int = 1):
    opt = sgd(model.parameters())
    for step in range(STEPS):
        opt.zero_grad()
        for k in range(micro):
            x, y = data(step * micro + k, n, shape)
            F.cross_entropy(model(ember.tensor(x)), ember.tensor(y)).backward()
        opt.step()


def train_simulated_bn(model, shape, size: int):
    """What DDP with plain BatchNorm computes: per-shard batch statistics, gradients averaged,
    rank 0's buffers broadcast before every forward."""
    opt = sgd(model.parameters())
    for step in range(STEPS):
        opt.zero_grad()
        x, y = data(step, B * size, shape)
        start = {k: b.data.copy() for k, b in model.named_buffers()}
        for r in reversed(range(size)):  # shard 0 last: its buffer update is the one kept
            for k, b in model.named_buffers():
                b.data[...] = start[k]
            out = model(ember.tensor(shard(x, r, size, B)))
            (F.cross_entropy(out, ember.tensor(shard(y, r, size, B))) / size).backward()
        opt.step()


def scenario_train(comm) -> dict:
    res = {}
    # ---- MLP: different initial weights per rank; DDP takes rank 0's
    ember.manual_seed(1234 + comm.rank)
    model = mlp()
    init = copy.deepcopy(model.state_dict()) if comm.rank == 0 else None
    t = train_ddp(comm, model, (6,))
    res["mlp_rank_spread"] = max_rank_spread(comm, flat_state(model))
    res["timings"] = t
    if comm.rank == 0:
        ref = mlp()
        ref.load_state_dict(init)
        train_reference(ref, (6,), B * comm.size)
        res["mlp_vs_single"] = diff(model, ref)
        res["mlp_moved"] = diff(_loaded(mlp, init), ref)

    # ---- small first buckets (several buckets in flight) + gradient accumulation (no_sync)
    ember.manual_seed(7)
    model = mlp()
    init = copy.deepcopy(model.state_dict())
    train_ddp(comm, model, (6,), micro=3, bucket_cap_mb=0.0005, first_bucket_mb=0.0002)
    res["accum_rank_spread"] = max_rank_spread(comm, flat_state(model))
    if comm.rank == 0:
        ref = _loaded(mlp, init)
        train_reference(ref, (6,), B * comm.size, micro=3)
        res["accum_vs_single"] = diff(model, ref)

    # ---- plain BatchNorm: buffers broadcast from rank 0; equals the simulated computation
    ember.manual_seed(11)
    model = bn_net()
    init = copy.deepcopy(model.state_dict())
    train_ddp(comm, model, (2, 5, 5), sync_buffers=True)
    params = np.concatenate([p.data.ravel() for p in model.parameters()]).astype(np.float64)
    res["bn_param_rank_spread"] = max_rank_spread(comm, params)
    res["bn_state_rank_spread"] = max_rank_spread(comm, flat_state(model))
    if comm.rank == 0:
        ref = _loaded(bn_net, init)
        train_simulated_bn(ref, (2, 5, 5), comm.size)
        res["bn_vs_simulated"] = diff(model, ref)

    # ---- SyncBatchNorm: exactly the single process with the global batch (buffers too)
    ember.manual_seed(11)
    model = convert_sync_batchnorm(bn_net(), comm)
    train_ddp(comm, model, (2, 5, 5))
    res["syncbn_rank_spread"] = max_rank_spread(comm, flat_state(model))
    if comm.rank == 0:
        ref = _loaded(bn_net, init)
        train_reference(ref, (2, 5, 5), B * comm.size)
        res["syncbn_vs_single"] = diff(model, ref)

    # ---- compression: ranks agree, close to full precision
    for kind in ("fp16", "bf16"):
        ember.manual_seed(5)
        model = mlp()
        init = copy.deepcopy(model.state_dict())
        train_ddp(comm, model, (6,), compression=kind)
        res[f"{kind}_rank_spread"] = max_rank_spread(comm, flat_state(model))
        if comm.rank == 0:
            ref = _loaded(mlp, init)
            train_reference(ref, (6,), B * comm.size)
            res[f"{kind}_vs_single"] = diff(model, ref)
    res.update(unused_parameters(comm))
    return res


def _loaded(build, state):
    m = build()
    m.load_state_dict(state)
    return m


class Branchy(nn.Module):
    """``odd`` is used only on odd ranks, ``never`` on none."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.odd = nn.Linear(4, 4)
        self.never = nn.Linear(4, 4)

    def forward(self, x, use_odd: bool):
        h = self.a(x)
        if use_odd:
            h = self.odd(h)
        return h.sum()


def unused_parameters(comm) -> dict:
    ember.manual_seed(3)
    model = Branchy()
    ddp = DistributedDataParallel(model, comm=comm)
    x = ember.tensor(np.full((2, 4), comm.rank + 1.0, np.float32))
    ddp(x, comm.rank % 2 == 1).backward()
    out = {
        "never_grad_is_none": model.never.weight.grad is None,
        "odd_grad_spread": max_rank_spread(
            comm, model.odd.weight.grad.data.astype(np.float64).ravel()
        )
        if model.odd.weight.grad is not None
        else -1.0,
        "a_grad_spread": max_rank_spread(comm, model.a.weight.grad.data.astype(np.float64).ravel()),
    }
    # odd ranks' contribution averaged over all ranks (even ranks contribute zeros)
    local = np.zeros((4, 4))
    for r in range(comm.size):
        if r % 2 == 1:
            h = model.a(ember.tensor(np.full((2, 4), r + 1.0, np.float32))).data
            local += np.ones((4, 1)) @ h.sum(0, keepdims=True).astype(np.float64)
    expect = local / comm.size
    out["odd_grad_err"] = float(np.abs(model.odd.weight.grad.data - expect).max())
    ddp.close()
    return out


def scenario_strategy(comm) -> dict:
    from ember.data.dataloader import DataLoader
    from ember.data.dataset import TensorDataset
    from ember.distributed.ddp_strategy import DDPStrategy

    s = DDPStrategy(comm=comm)
    r, n = comm.rank, comm.size
    res = {}
    red = s.reduce(
        {"a": float(r), "b": np.array([r, 2.0 * r]), "c": ember.tensor([1.0 * r]), "n": [r, 1]},
        op="sum",
    )
    res["reduce_sum"] = [red["a"], red["b"].tolist(), red["c"].tolist(), red["n"]]
    res["reduce_max"] = s.reduce(float(r), op="max")
    res["reduce_mean"] = s.reduce(np.float32(r), op="mean")
    res["weighted"] = s.reduce(float(r), op="mean", weight=r + 1)
    res["any"] = s.reduce_boolean_decision(r == 1, all=False)
    res["all"] = s.reduce_boolean_decision(r == 1, all=True)
    res["bcast_json"] = s.broadcast({"rank": r, "x": [1, 2]}, src=n - 1)
    arr = s.broadcast(np.arange(6, dtype=np.int16).reshape(2, 3) * (r + 1), src=1)
    res["bcast_array"] = [arr.tolist(), str(arr.dtype)]
    res["bcast_tensor"] = s.broadcast(ember.tensor([float(r)] * 2), src=1).tolist()
    res["bcast_path"] = str(s.broadcast(__import__("pathlib").Path(f"/tmp/r{r}")))
    res["local_rank"] = s.comm.allgather_object(s.local_rank)
    # data: 'fit' pads and shuffles, evaluation covers each sample once
    ds = TensorDataset(ember.arange(10, dtype=ember.float32))
    fit = s.process_dataloader(DataLoader(ds, batch_size=2, shuffle=True), "fit")
    val = s.process_dataloader(DataLoader(ds, batch_size=2), "validate")
    fit_idx = [int(v) for (b,) in fit for v in b.tolist()]
    val_idx = [int(v) for (b,) in val for v in b.tolist()]
    res["fit_shards"] = comm.allgather_object(fit_idx)
    res["val_shards"] = comm.allgather_object(val_idx)
    # an exactly weighted validation metric: mean of x^2 over the dataset
    vals = np.array(val_idx, np.float64) ** 2
    res["val_metric"] = s.reduce(
        float(vals.mean()) if vals.size else 0.0, op="mean", weight=vals.size
    )
    res["val_metric_single"] = float((np.arange(10.0) ** 2).mean())
    return res


def scenario_raise(comm) -> dict:
    x = np.ones(3)
    comm.allreduce(x)
    if comm.rank == comm.size - 1:
        raise ValueError("deliberate failure on the last rank")
    comm.allreduce(x)
    time.sleep(60)  # not reached: the abort ends every rank
    return {}


def scenario_raise_in_context(comm) -> dict:
    """The exception is swallowed outside the block: only abort_on_exception can end it."""
    from ember.distributed.failure import abort_on_exception

    try:
        with abort_on_exception(comm):
            if comm.rank == 0:
                raise KeyError("deliberate failure inside abort_on_exception")
    except KeyError:
        pass
    comm.barrier()
    time.sleep(60)
    return {}


def scenario_stall(comm) -> dict:
    x = np.ones(3)
    comm.allreduce(x)
    if comm.rank == comm.size - 1:
        time.sleep(3600)
    comm.allreduce(x)
    return {}


def scenario_stall_backward(comm) -> dict:
    model = mlp()
    ddp = DistributedDataParallel(model, comm=comm)
    x, y = data(0, B, (6,))
    loss = F.cross_entropy(ddp(ember.tensor(x)), ember.tensor(y))
    if comm.rank == comm.size - 1:
        time.sleep(3600)
    loss.backward()
    return {}


def scenario_exit(comm) -> dict:
    if comm.rank == comm.size - 1:
        sys.exit(3)
    comm.barrier()
    time.sleep(60)
    return {}


def main() -> None:
    scenario, out = sys.argv[1], sys.argv[2]
    timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 60.0
    comm = world(timeout=timeout)
    res = globals()[f"scenario_{scenario}"](comm)
    res["size"] = comm.size
    if comm.rank == 0:
        with open(out, "w") as f:
            json.dump(res, f)


if __name__ == "__main__":
    main()
