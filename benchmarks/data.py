"""DataLoader throughput with a slow ``__getitem__``: Ember vs PyTorch, 0/2/4 workers.

    python -m benchmarks.data [--quick] [--repeat N]

Each step is one epoch over 64 samples whose ``__getitem__`` either sleeps 5 ms (I/O-bound,
like reading files) or spins ~5 ms of Python (CPU-bound, like decoding). Both frameworks load
the same dataset with the same batch size; the table's ratio column is Ember/PyTorch, and the
speed-up of workers over ``num_workers=0`` is printed at the end.
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks.common import Case, base_parser, run_cases, setup_torch

N, BATCH, MS = 64, 8, 5.0


class SlowIO:
    """Sleeps (releases the GIL and the CPU) — what reading from disk or network looks like."""

    def __len__(self):
        return N

    def __getitem__(self, i):
        time.sleep(MS / 1e3)
        return np.full(16, i, dtype=np.float32), i


def _spin(n: int) -> int:
    x = 0
    for k in range(n):
        x += k * k
    return x


def _calibrate_spin() -> int:
    """Loop count that costs about MS ms of CPU here (fixed work, not a wall-clock wait)."""
    n = 20_000
    start = time.process_time()
    _spin(n)
    took = max(time.process_time() - start, 1e-6)
    return max(1, int(n * (MS / 1e3) / took))


SPIN = _calibrate_spin()


class SlowCPU(SlowIO):
    """A fixed amount of pure-Python work (about MS ms; holds the GIL)."""

    def __getitem__(self, i):
        _spin(SPIN)
        return np.full(16, i, dtype=np.float32), i


def _ember_epoch(ds, workers, context=None):
    from ember.data import DataLoader

    kw = {"multiprocessing_context": context} if context else {}
    loader = DataLoader(
        ds, batch_size=BATCH, num_workers=workers, persistent_workers=workers > 0, **kw
    )

    def step():
        for _ in loader:
            pass

    return step


def _torch_epoch(ds, workers, torch):
    from torch.utils.data import DataLoader

    loader = DataLoader(ds, batch_size=BATCH, num_workers=workers, persistent_workers=workers > 0)

    def step():
        for _ in loader:
            pass

    return step


def cases(torch):
    out = []
    for kind, ds in (("io", SlowIO()), ("cpu", SlowCPU())):
        for workers in (0, 2, 4):
            out.append(
                Case(
                    name=f"{kind} {workers} workers",
                    formulation=f"one epoch: {N} samples of {MS:.0f} ms {kind}-bound "
                    f"__getitem__, batch {BATCH}, worker processes",
                    ember=lambda ds=ds, w=workers: _ember_epoch(ds, w),
                    torch=lambda ds=ds, w=workers: _torch_epoch(ds, w, torch),
                )
            )
        out.append(
            Case(
                name=f"{kind} 4 threads (ember)",
                formulation="Ember's thread workers (multiprocessing_context='thread'); torch "
                "column: its 4 worker processes",
                ember=lambda ds=ds: _ember_epoch(ds, 4, "thread"),
                torch=lambda ds=ds: _torch_epoch(ds, 4, torch),
            )
        )
    return out


def main(argv=None) -> None:
    args = base_parser(__doc__).parse_args(argv)
    torch = setup_torch(args.threads)
    results = run_cases(cases(torch), args, "DataLoader: Ember vs PyTorch", torch)
    base = {r.case.name.split()[0]: r.ember_median for r in results if " 0 workers" in r.case.name}
    print("\nEmber speed-up over num_workers=0:")
    for r in results:
        kind = r.case.name.split()[0]
        print(f"  {r.case.name:<24} {base[kind] / r.ember_median:5.2f}x")


if __name__ == "__main__":
    main()
