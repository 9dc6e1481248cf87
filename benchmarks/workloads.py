"""The three reference workloads (issue 3, Benchmarks): a full training step in Ember and in
PyTorch, timed in one process.

    python -m benchmarks.workloads [--only mlp|cnn|gpt] [--steps N] [--quick] [--single-core]

One step is ``zero_grad(); loss = loss_fn(model(x), y); loss.backward(); opt.step()``, the same
code in both frameworks (models in ``benchmarks/models.py``; Ember starts from torch's initial
weights). Timing: ``benchmarks.common.measure`` (warm-up, Ember and torch samples interleaved
with alternating order, medians and interquartile spreads, torch threads = cores). Before the
table, each workload is checked for correctness: with identical weights and inputs the losses of
the first steps must agree with torch's.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from benchmarks import models
from benchmarks.common import Case, base_parser, environment, measure, print_table, setup_torch

CHECK_STEPS = 5


class Workload:
    """One reference workload: how to build its model, optimizer, data and loss in a framework."""

    def __init__(self, name, target, formulation, build, data, optimizer, forward):
        self.name, self.target, self.formulation = name, target, formulation
        self.build, self.data, self.optimizer, self.forward = build, data, optimizer, forward


def _mlp_forward(lib, nnf, model, batch):
    x, y = batch
    return nnf.cross_entropy(model(x), y)


def _cnn_forward(lib, nnf, model, batch):
    x, y = batch
    return nnf.cross_entropy(model(x), y)


def _gpt_forward(lib, nnf, model, batch):
    idx, pos, y = batch
    logits = model(idx, pos)
    return nnf.cross_entropy(logits.view(-1, models.GPT_VOCAB), y.view(-1))


def _gpt_data(lib):
    x, y = models.gpt_data()
    pos = np.arange(models.GPT_BLOCK, dtype=np.int64)
    return lib.tensor(x), lib.tensor(pos), lib.tensor(y)


def _xy(fn):
    def data(lib):
        x, y = fn()
        return lib.tensor(x), lib.tensor(y)

    return data


WORKLOADS = [
    Workload(
        "mlp",
        1.0,
        "784-512-512-10 ReLU MLP, batch 128, cross_entropy, Adam(lr=1e-3)",
        lambda nn, nnf: models.mlp(nn),
        _xy(models.mlp_data),
        lambda optim, params: optim.Adam(params, lr=1e-3),
        _mlp_forward,
    ),
    Workload(
        "cnn",
        1.5,
        "4x [conv3x3 (no bias) + BatchNorm2d + ReLU], 2 maxpools, Linear(4096, 10); "
        "input 64x3x32x32, cross_entropy, SGD(lr=0.01, momentum=0.9)",
        lambda nn, nnf: models.cnn(nn),
        _xy(models.cnn_data),
        lambda optim, params: optim.SGD(params, lr=0.01, momentum=0.9),
        _cnn_forward,
    ),
    Workload(
        "gpt",
        1.0,
        "char GPT: vocab 65, block 128, 4 layers, 4 heads, n_embd 128, pre-LN, causal "
        "SDPA, 4x GELU MLP, untied lm_head; batch 16, cross_entropy, AdamW(lr=1e-3)",
        models.gpt,
        _gpt_data,
        lambda optim, params: optim.AdamW(params, lr=1e-3),
        _gpt_forward,
    ),
]


def build_pair(w: Workload, torch):
    """(torch_state, ember_state): each a (model, optimizer, batch, nnf, lib) tuple, with the
    Ember model holding a copy of torch's freshly initialised weights."""
    import ember
    import ember.nn as enn
    import ember.nn.functional as eF
    import ember.optim as eoptim

    torch.manual_seed(0)
    tmodel = w.build(torch.nn, torch.nn.functional)
    emodel = w.build(enn, eF)
    models.copy_weights(tmodel, emodel)
    tmodel.train()
    emodel.train()
    t = (
        tmodel,
        w.optimizer(torch.optim, tmodel.parameters()),
        w.data(torch),
        torch.nn.functional,
        torch,
    )
    e = (emodel, w.optimizer(eoptim, emodel.parameters()), w.data(ember), eF, ember)
    return t, e


def make_step(state, w: Workload):
    """The timed unit: one full training step. Returns the loss tensor."""
    model, opt, batch, nnf, lib = state

    def step():
        opt.zero_grad()
        loss = w.forward(lib, nnf, model, batch)
        loss.backward()
        opt.step()
        return loss

    return step


def check(w: Workload, torch, steps: int = CHECK_STEPS) -> bool:
    """Identical weights and inputs: the losses of the first ``steps`` steps agree."""
    t, e = build_pair(w, torch)
    ts, es = make_step(t, w), make_step(e, w)
    tl = [float(ts().item()) for _ in range(steps)]
    el = [float(es().item()) for _ in range(steps)]
    diffs = [abs(a - b) for a, b in zip(el, tl)]
    first_ok = diffs[0] <= 1e-5 * max(1.0, abs(tl[0]))
    track_ok = all(d <= 1e-3 * max(1.0, abs(b)) for d, b in zip(diffs, tl))
    print(
        f"  {w.name}: loss ember/torch step 1 {el[0]:.7f} / {tl[0]:.7f} (|diff| "
        f"{diffs[0]:.1e}); step {steps} {el[-1]:.7f} / {tl[-1]:.7f} (|diff| {diffs[-1]:.1e}); "
        f"max |diff| over {steps} steps {max(diffs):.1e}  "
        f"{'ok' if first_ok and track_ok else 'MISMATCH'}"
    )
    return first_ok and track_ok


def core_probe() -> float:
    """How much a second thread speeds up a NumPy kernel right now (about 1.8 on two idle
    cores, about 1.0 when other processes keep the other core busy): the 2-thread numbers
    of both frameworks are only comparable to a quiet machine's when this is near 2."""
    import statistics

    from ember.ops import parallel

    x = np.random.default_rng(0).standard_normal(1 << 21).astype(np.float32)
    out = np.empty_like(x)

    def run(threads):
        t0 = time.perf_counter()
        parallel.run_blocks(
            lambda lo, hi: np.exp(x[lo:hi], out=out[lo:hi]), x.size, 1 << 18, threads
        )
        return time.perf_counter() - t0

    one, two = [], []
    for _ in range(15):
        one.append(run(1))
        two.append(run(2))
    return statistics.median(one) / statistics.median(two)


def case(w: Workload, torch) -> Case:
    """A benchmarks.common Case whose two builders share one torch initialisation."""
    pair = {}

    def get(i):
        if not pair:
            pair["p"] = build_pair(w, torch)
        return make_step(pair["p"][i], w)

    return Case(w.name, w.formulation, lambda: get(1), lambda: get(0), w.target)


def main(argv=None) -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="timed samples per framework (default 25, 9 with --quick); each sample "
        "is at least one full step",
    )
    p.add_argument("--no-check", action="store_true", help="skip the correctness check")
    p.add_argument(
        "--single-core",
        action="store_true",
        help="one thread per framework, timed with the calling thread's CPU clock "
        "(steady on a busy machine): re-runs itself with OPENBLAS_NUM_THREADS=1 "
        "EMBER_NUM_THREADS=1, --threads 1 --clock cpu",
    )
    args = p.parse_args(argv)
    if args.single_core:
        if (
            os.environ.get("EMBER_NUM_THREADS") != "1"
            or os.environ.get("OPENBLAS_NUM_THREADS") != "1"
        ):
            env = dict(os.environ, OPENBLAS_NUM_THREADS="1", EMBER_NUM_THREADS="1")
            rest = sys.argv[1:] if argv is None else list(argv)
            os.execve(sys.executable, [sys.executable, "-m", "benchmarks.workloads", *rest], env)
        args.threads, args.clock = 1, "cpu"
    if args.steps is not None:
        args.repeat = args.steps
    repeat = args.repeat if args.repeat is not None else (9 if args.quick else 25)
    sample_s = (args.sample_ms if args.sample_ms is not None else 1.0) / 1e3
    torch = setup_torch(args.threads)
    chosen = [w for w in WORKLOADS if args.only is None or args.only in w.name]
    if not args.no_check:
        print(f"correctness (identical weights and inputs, {CHECK_STEPS} steps):")
        for w in chosen:
            check(w, torch)
        print()
    results = []
    t0 = time.perf_counter()
    probing = args.clock == "wall" and (args.threads or 2) > 1
    probe = [core_probe()] if probing else []
    for w in chosen:
        results.append(measure(case(w, torch), repeat, sample_s, warmup=3, clock=args.clock))
        if probing:
            probe.append(core_probe())
    print(
        f"Ember vs PyTorch: full training step, float32, CPU\n{environment(torch)}; "
        f"{args.clock} clock; {repeat} interleaved samples per framework; "
        f"{time.perf_counter() - t0:.0f} s in all"
    )
    if probing:
        print(
            "second-core probe (2-thread speed-up of a NumPy kernel, ~1.8 when the other "
            "core is idle, ~1.0 when it is busy) before/after each workload: "
            + " ".join(f"{p:.2f}" for p in probe)
        )
    print()
    print_table(results)


if __name__ == "__main__":
    main()
