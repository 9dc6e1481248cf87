"""Shared timing for the benchmarks: Ember and PyTorch timed in one process, interleaved.

The machine is shared and noisy, so every number is a median over many samples, the two
frameworks alternate sample by sample (drift hits both alike), and the spread is reported next
to the median. One sample runs a workload ``inner`` times back to back; ``inner`` is calibrated
once per workload so that a sample lasts about ``sample_s`` seconds, and both frameworks use the
same ``inner``.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field


def cores() -> int:
    """The cores this process may run on (not the host's count when pinned by a cgroup/affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def setup_torch(threads: int | None = None):
    """Import torch with its intra-op pool sized to the machine's cores (NumPy's BLAS uses
    them all by default, so the comparison is fair)."""
    import torch

    torch.set_num_threads(threads or cores())
    return torch


def environment(torch=None) -> str:
    """One line that says what the numbers were measured on."""
    import numpy as np

    parts = [f"python {platform.python_version()}", f"numpy {np.__version__}"]
    if torch is not None:
        parts.append(f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    parts.append(f"{cores()} cores")
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    if load:
        parts.append(f"load {load[0]:.1f}")
    return ", ".join(parts)


@dataclass
class Case:
    """One workload, made twice: ``ember()`` and ``torch()`` each return a zero-argument step.

    The builders run once (allocations outside the timed region); the steps are what is timed.
    ``target`` is the largest acceptable Ember/PyTorch ratio (None: informative only).
    ``threaded``: either framework spreads the work over worker threads (large BLAS or
    elementwise kernels), so the ``cpu`` clock cannot time it.
    """

    name: str
    formulation: str
    ember: Callable[[], Callable[[], object]]
    torch: Callable[[], Callable[[], object]]
    target: float | None = None
    threaded: bool = False


@dataclass
class Result:
    case: Case
    inner: int
    clock: str = "wall"
    ember: list = field(default_factory=list)  # seconds per step, one entry per sample
    torch: list = field(default_factory=list)

    @property
    def ember_median(self) -> float:
        return statistics.median(self.ember)

    @property
    def torch_median(self) -> float:
        return statistics.median(self.torch)

    @property
    def ratio(self) -> float:
        return self.ember_median / self.torch_median

    @property
    def pair_ratios(self) -> list:
        """Ember/PyTorch for each interleaved pair of samples (robust to slow drift)."""
        return sorted(e / t for e, t in zip(self.ember, self.torch))

    @property
    def valid(self) -> bool:
        return self.clock == "wall" or not self.case.threaded

    @property
    def ok(self) -> bool | None:
        t = self.case.target
        return None if t is None or not self.valid else self.ratio <= t


def quantile(xs, q: float) -> float:
    xs = sorted(xs)
    if len(xs) == 1:
        return xs[0]
    pos = q * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def spread(xs) -> float:
    """Interquartile range relative to the median (0.05 = the middle half lies within 5%)."""
    med = statistics.median(xs)
    return (quantile(xs, 0.75) - quantile(xs, 0.25)) / med if med else 0.0


def settle(step: Callable[[], object], seconds: float, min_calls: int = 2) -> None:
    """Run ``step`` untimed for a while, so that the other framework's thread pool (OpenBLAS
    and OpenMP workers spin for milliseconds after a parallel call) has gone quiet and this
    framework's own pool and caches are warm before the timed sample starts."""
    t0 = time.perf_counter()
    n = 0
    while n < min_calls or time.perf_counter() - t0 < seconds:
        step()
        n += 1


CLOCKS = {
    "wall": time.perf_counter,
    # CPU time of the calling thread: immune to being descheduled on a busy machine, but blind
    # to work done by worker threads, so only meaningful for single-threaded workloads.
    "cpu": time.thread_time,
}


def time_sample(step: Callable[[], object], inner: int, clock=time.perf_counter) -> float:
    """Seconds per step, averaged over ``inner`` back-to-back calls."""
    t0 = clock()
    for _ in range(inner):
        step()
    return (clock() - t0) / inner


def calibrate(steps, sample_s: float, max_inner: int = 100_000) -> int:
    """The number of calls that makes one sample of the fastest step last about ``sample_s``."""
    inner = 1
    while True:
        fastest = min(time_sample(s, inner) for s in steps)
        if fastest * inner >= sample_s or inner >= max_inner:
            return inner
        inner = min(max_inner, max(inner * 2, int(sample_s / max(fastest, 1e-9) * 1.1)))


def measure(case: Case, repeat: int, sample_s: float, warmup: int = 3, clock="wall") -> Result:
    """Warm both steps up, calibrate, then take ``repeat`` interleaved samples of each.

    The order inside each pair alternates (Ember first, then PyTorch first...). Before each
    sample the garbage collector runs and the step runs untimed for half a sample (at least
    twice): switching frameworks otherwise charges one framework for the other's spinning
    worker threads (measured: +40-140% on a 1024x1024 matmul on 2 cores).
    """
    e_step, t_step = case.ember(), case.torch()
    for _ in range(warmup):
        e_step()
        t_step()
    inner = calibrate((e_step, t_step), sample_s)
    res = Result(case, inner, clock)
    timer = CLOCKS[clock]
    for r in range(repeat):
        order = ((e_step, res.ember), (t_step, res.torch))
        for step, out in order if r % 2 == 0 else order[::-1]:
            gc.collect()
            settle(step, sample_s / 2)
            out.append(time_sample(step, inner, timer))
    return res


def fmt_time(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:8.1f} us"
    if s < 1:
        return f"{s * 1e3:8.2f} ms"
    return f"{s:8.3f} s "


def print_table(results, title: str = "") -> None:
    """Median times, the ratio Ember/PyTorch, the spreads and the verdict against the target."""
    if title:
        print(title)
    head = (
        f"{'workload':<26} {'ember':>11} {'±':>5} {'pytorch':>11} {'±':>5} "
        f"{'ratio':>6} {'ratio IQR':>11} {'target':>7}  {'verdict':<7} {'n x inner':>10}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        c = r.case
        pr = r.pair_ratios
        target = f"{c.target:.1f}x" if c.target is not None else "-"
        if not r.valid:
            verdict = "n/a*"
        elif r.ok is None:
            verdict = "-"
        else:
            verdict = "ok" if r.ok else f"MISS {r.ratio / c.target:.2f}x"
        print(
            f"{c.name:<26} {fmt_time(r.ember_median)} {spread(r.ember):>5.0%} "
            f"{fmt_time(r.torch_median)} {spread(r.torch):>5.0%} {r.ratio:>5.2f}x "
            f"{quantile(pr, 0.25):>5.2f}-{quantile(pr, 0.75):<5.2f} {target:>7}  "
            f"{verdict:<7} {len(r.ember):>4} x {r.inner:<5}"
        )
    print()
    print("formulations:")
    for r in results:
        print(f"  {r.case.name:<24} {r.case.formulation}")
    print(
        "\nember/pytorch = ratio of the medians; '±' = interquartile range / median of the "
        "samples;\n'ratio IQR' = quartiles of the per-pair ratios of interleaved samples; "
        "'n x inner' = samples x steps per sample."
    )
    if any(not r.valid for r in results):
        print(
            "n/a*: the cpu clock only sees the calling thread; this workload runs on worker "
            "threads, so its times are not comparable (use --clock wall)."
        )


def base_parser(description: str) -> argparse.ArgumentParser:
    """The options every benchmark takes: ``--repeat``, ``--quick``, ``--sample-ms``."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="samples per framework and workload (default 21, 7 with --quick)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="fewer and shorter samples: a smoke run, not a measurement",
    )
    p.add_argument(
        "--sample-ms",
        type=float,
        default=None,
        help="target duration of one sample in ms (default 15, 5 with --quick)",
    )
    p.add_argument(
        "--only", default=None, help="run only the workloads whose name contains this text"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: the cores this process may use); for a fair "
        "single-thread run also start with OPENBLAS_NUM_THREADS=1 (NumPy's BLAS)",
    )
    p.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall (default) or cpu: the calling thread's CPU time, steadier on a "
        "busy machine but wrong for multi-threaded work (large tensors)",
    )
    return p


def settings(args) -> tuple[int, float]:
    repeat = args.repeat if args.repeat is not None else (7 if args.quick else 21)
    sample_ms = args.sample_ms if args.sample_ms is not None else (5.0 if args.quick else 15.0)
    return max(1, repeat), sample_ms / 1e3


def run_cases(cases, args, title: str, torch=None) -> list:
    """Measure the selected cases and print the table; returns the Results."""
    repeat, sample_s = settings(args)
    if args.only:
        cases = [c for c in cases if args.only in c.name]
    results = []
    t0 = time.perf_counter()
    for c in cases:
        results.append(measure(c, repeat, sample_s, clock=args.clock))
    print(
        f"{title}\n{environment(torch)}; {args.clock} clock; {repeat} interleaved samples "
        f"of >= {sample_s * 1e3:.0f} ms each; {time.perf_counter() - t0:.0f} s in all\n"
    )
    print_table(results)
    return results
