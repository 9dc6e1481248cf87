"""Mixed precision on the CPU: what it costs, measured (issue 9).

    python -m benchmarks.amp [--repeat N]

1. Half-precision matmul: NumPy's own float16 matmul (a scalar loop), the tensor-core emulation
   Ember uses (half operands, float32 BLAS product, one rounding; ember.ops.parallel) and float32.
2. The MLP reference workload (784-512-512-10, batch 128, Adam): one full training step in
   float32, under autocast(bfloat16) and under autocast(float16) with a GradScaler; the same three
   in PyTorch (CPU autocast) for reference when torch is installed.
3. The disabled path: an op's autocast check when no region is open.

Samples are interleaved (a, b, c, a, b, c, ...) and medians reported, so load drift on a shared
machine hits every variant alike.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import numpy as np

from benchmarks import models


def _median_ms(fns: dict, repeat: int, inner: int = 1) -> dict:
    for f in fns.values():  # warm-up
        f()
        f()
    samples: dict = {k: [] for k in fns}
    for _ in range(repeat):
        for k, f in fns.items():
            t = time.perf_counter()
            for _ in range(inner):
                f()
            samples[k].append((time.perf_counter() - t) / inner * 1e3)
    return {k: statistics.median(v) for k, v in samples.items()}


def bench_matmul(repeat: int) -> None:
    import ember
    from ember.ops.parallel import gemm

    bf16 = ember.bfloat16.np
    print("half matmul (ms, median)            numpy f16   emulated f16   emulated bf16   float32")
    for m, k, n in ((128, 784, 512), (128, 512, 512), (512, 128, 384), (64, 128, 128)):
        rng = np.random.default_rng(0)
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        a16, b16, abf, bbf = (
            a.astype(np.float16),
            b.astype(np.float16),
            a.astype(bf16),
            b.astype(bf16),
        )
        fns = {
            "np16": (np.matmul, a16, b16),
            "emu16": (gemm, a16, b16),
            "emubf": (gemm, abf, bbf),
            "f32": (gemm, a, b),
        }
        t = _median_ms(
            {k: functools.partial(f, x, y) for k, (f, x, y) in fns.items()}, max(3, repeat // 4)
        )
        print(
            f"  ({m:4d}, {k:4d}) @ ({k:4d}, {n:4d})        {t['np16']:9.2f}   {t['emu16']:12.3f}"
            f"   {t['emubf']:13.3f}   {t['f32']:7.3f}"
        )


def _ember_steps():
    import ember
    import ember.nn as nn
    import ember.nn.functional as F
    from ember.amp import GradScaler

    x_np, y_np = models.mlp_data()
    x, y = ember.tensor(x_np), ember.tensor(y_np)

    def build(mode):
        ember.manual_seed(0)
        model = models.mlp(nn)
        opt = ember.optim.Adam(model.parameters(), lr=1e-3)
        scaler = GradScaler("cpu", init_scale=1024.0) if mode == "f16" else None
        low = {"f16": ember.float16, "bf16": ember.bfloat16}.get(mode)

        def step():
            opt.zero_grad()
            with ember.autocast("cpu", dtype=low or ember.bfloat16, enabled=low is not None):
                loss = F.cross_entropy(model(x), y)
            if scaler is None:
                loss.backward()
                opt.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            return loss

        return step

    return {f"ember {m}": build(m) for m in ("f32", "bf16", "f16")}


def _torch_steps():
    try:
        from benchmarks.common import setup_torch

        torch = setup_torch()  # its thread pool sized to the cores, as in benchmarks.workloads
    except ImportError:
        return {}
    x_np, y_np = models.mlp_data()
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)

    def build(mode):
        torch.manual_seed(0)
        model = models.mlp(torch.nn)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        scaler = torch.amp.GradScaler("cpu", init_scale=1024.0) if mode == "f16" else None
        low = {"f16": torch.float16, "bf16": torch.bfloat16}.get(mode)

        def step():
            opt.zero_grad()
            with torch.autocast("cpu", dtype=low or torch.bfloat16, enabled=low is not None):
                loss = torch.nn.functional.cross_entropy(model(x), y)
            if scaler is None:
                loss.backward()
                opt.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            return loss

        return step

    return {f"torch {m}": build(m) for m in ("f32", "bf16", "f16")}


def bench_mlp(repeat: int) -> None:
    steps = {**_ember_steps(), **_torch_steps()}
    t = _median_ms(steps, repeat)
    print("\nMLP training step (784-512-512-10, batch 128, Adam), ms, median")
    for fw in ("ember", "torch"):
        if f"{fw} f32" not in t:
            continue
        base = t[f"{fw} f32"]
        row = "   ".join(
            f"{m}: {t[f'{fw} {m}']:6.2f} ({t[f'{fw} {m}'] / base:4.2f}x)"
            for m in ("f32", "bf16", "f16")
        )
        print(f"  {fw:5s}  {row}")


def bench_disabled_check(repeat: int) -> None:
    import ember
    from ember.autograd.autocast_state import state

    a, b = ember.randn(4, 4), ember.randn(4, 4)
    n = 20000

    def checks():
        for _ in range(n):
            if state.enabled:
                pass

    t = _median_ms({"check": checks, "matmul": lambda: [a @ b for _ in range(n // 20)]}, repeat)
    print(
        f"\nautocast off: the check costs {t['check'] / n * 1e6:.0f} ns; a 4x4 matmul op "
        f"{t['matmul'] / (n // 20) * 1e6:.0f} ns"
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15, help="samples per variant")
    args = parser.parse_args(argv)
    bench_matmul(args.repeat)
    bench_mlp(args.repeat)
    bench_disabled_check(args.repeat)


if __name__ == "__main__":
    main()
