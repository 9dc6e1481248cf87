"""Data-parallel step time: the same workload on 1 process and under ``mpiexec -n N``.

    OPENBLAS_NUM_THREADS=1 EMBER_NUM_THREADS=1 python -m benchmarks.ddp --workload mlp
    OPENBLAS_NUM_THREADS=1 EMBER_NUM_THREADS=1 mpiexec -n 2 python -m benchmarks.ddp --workload mlp

One step is ``zero_grad(); loss = loss_fn(ddp(x), y); loss.backward(); opt.step()`` with a fixed
per-rank batch (the global batch grows with the ranks). Without an MPI launcher the model runs
unwrapped (the 1-rank baseline). Rank 0 prints the median step time, the global throughput and,
under MPI, the allreduce time per step and the share of it hidden behind backward.
Scaling efficiency = throughput(N ranks) / (N x throughput(1 rank)).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from benchmarks import models


def _batch(workload: str, per_rank: int, rank: int, step: int):
    import ember

    rng = np.random.default_rng(1000 * step + rank)
    if workload == "mlp":
        x = rng.standard_normal((per_rank, models.MLP_SIZES[0]), dtype=np.float32)
        y = rng.integers(0, models.MLP_SIZES[-1], per_rank)
        return ember.tensor(x), ember.tensor(y)
    if workload == "cnn":
        x = rng.standard_normal((per_rank,) + models.CNN_INPUT[1:], dtype=np.float32)
        y = rng.integers(0, 10, per_rank)
        return ember.tensor(x), ember.tensor(y)
    if workload == "gpt":
        tokens = rng.integers(0, models.GPT_VOCAB, (per_rank, models.GPT_BLOCK + 1))
        pos = np.arange(models.GPT_BLOCK, dtype=np.int64)
        return ember.tensor(tokens[:, :-1]), ember.tensor(pos), ember.tensor(tokens[:, 1:])
    raise ValueError(f"unknown workload {workload!r}")


def _loss(nnf, workload, model, batch):
    if workload == "gpt":
        idx, pos, y = batch
        logits = model(idx, pos)
        return nnf.cross_entropy(logits.view(-1, models.GPT_VOCAB), y.view(-1))
    x, y = batch
    return nnf.cross_entropy(model(x), y)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workload", default="mlp", choices=("mlp", "cnn", "gpt"))
    parser.add_argument(
        "--batch", type=int, default=None, help="per-rank batch (default: mlp 64, cnn 32, gpt 8)"
    )
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--bucket-mb", type=float, default=25.0)
    parser.add_argument("--first-bucket-mb", type=float, default=1.0)
    parser.add_argument("--compression", default=None, choices=(None, "fp16", "bf16"))
    args = parser.parse_args(argv)
    if args.batch is None:
        args.batch = {"mlp": 64, "cnn": 32, "gpt": 8}[args.workload]

    import ember
    import ember.nn.functional as F
    import ember.optim
    from ember import nn
    from ember.distributed.comm import world
    from ember.distributed.ddp import DistributedDataParallel

    comm = world()
    ember.manual_seed(0)
    build = {
        "mlp": lambda: models.mlp(nn),
        "cnn": lambda: models.cnn(nn),
        "gpt": lambda: models.gpt(nn, F),
    }
    model = build[args.workload]()
    wrapped = model
    if comm.size > 1:
        wrapped = DistributedDataParallel(
            model,
            bucket_cap_mb=args.bucket_mb,
            first_bucket_mb=args.first_bucket_mb,
            compression=args.compression,
            comm=comm,
        )
    opt = ember.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batches = [_batch(args.workload, args.batch, comm.rank, s) for s in range(8)]
    times, comm_s, hidden = [], [], []
    for step in range(args.warmup + args.steps):
        batch = batches[step % len(batches)]
        comm.barrier()
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = _loss(F, args.workload, wrapped, batch)
        loss.backward()
        opt.step()
        dt = time.perf_counter() - t0
        if step >= args.warmup:
            times.append(dt)
            if wrapped is not model:
                t = wrapped.communication_timings()
                comm_s.append(t["allreduce_s"])
                hidden.append(t["hidden_s"])
    med = statistics.median(times)
    all_med = comm.allgather_object(med)
    if comm.rank == 0:
        step_s = max(all_med)
        thr = comm.size * args.batch / step_s
        line = (
            f"{args.workload}: {comm.size} rank(s), batch {args.batch}/rank: step "
            f"{step_s * 1e3:.2f} ms (median; IQR {_iqr(times) * 1e3:.2f} ms), "
            f"{thr:.0f} samples/s"
        )
        if comm_s:
            line += (
                f"; allreduce {statistics.median(comm_s) * 1e3:.2f} ms/step, hidden "
                f"behind backward {sum(hidden) / max(sum(comm_s), 1e-12):.0%}"
            )
        print(line, flush=True)


def _iqr(xs) -> float:
    q = statistics.quantiles(xs, n=4)
    return q[2] - q[0]


if __name__ == "__main__":
    main()
