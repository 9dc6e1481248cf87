"""GPU benchmarks (issue 10): a training step in Ember (CuPy + Ember's kernels) and in PyTorch
CUDA eager, timed in one process on the same GPU.

    python -m benchmarks.gpu [--only gpt|gpt2-small|cnn] [--quick] [--json PATH] [--profile]

Workloads (the models of ``benchmarks/models.py`` and the steps of ``benchmarks/workloads.py``,
resized for a GPU):

- ``gpt``: nanoGPT's shakespeare-char model, 6 layers, 6 heads, n_embd 384, block 256, batch 64,
  AdamW, float32 (strict float32 in both: TF32 off in torch, as CuPy's cuBLAS default);
- ``gpt2-small``: 12 layers, 12 heads, n_embd 768, block 1024, batch 8, vocab 50257, AdamW,
  bfloat16 mixed precision (``ember.amp.autocast`` / ``torch.autocast``);
- ``cnn``: the reference cnn workload with batch 512, SGD with momentum.

Each step ends with a device synchronisation in both frameworks, so wall-clock times are GPU
times. Reported: time per step (median, interleaved samples: ``benchmarks.common.measure``),
tokens/s and MFU for the GPT workloads (FLOPs per token 6N + 12 L T C, against the card's dense
bf16 peak: 989 TFLOP/s for an H100/H200 SXM), the Ember/PyTorch ratio against the targets
(0.8x PyTorch's tokens/s on GPT, 0.7x on the CNN) and, with ``--profile``, Ember's step time
on the device (cupyx.profiler.benchmark) and its top kernels by GPU time (torch.profiler's
CUPTI trace sees CuPy's kernels too).

Without CuPy or a GPU it stops with a clear message and exit status 2.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time

from benchmarks import models
from benchmarks.common import Case, base_parser, measure, print_table
from benchmarks.workloads import WORKLOADS

# dense bf16 tensor-core peak (TFLOP/s) by a substring of the device name; SXM parts
PEAKS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("A100", 312.0), ("L4", 121.0))
TARGETS = {"gpt": 0.8, "gpt2-small": 0.8, "cnn": 0.7}  # Ember tokens/s over PyTorch's, at least

CONFIGS = {
    "gpt": {
        "GPT_LAYERS": 6,
        "GPT_HEADS": 6,
        "GPT_EMBD": 384,
        "GPT_BLOCK": 256,
        "GPT_BATCH": 64,
        "GPT_VOCAB": 65,
    },
    "gpt2-small": {
        "GPT_LAYERS": 12,
        "GPT_HEADS": 12,
        "GPT_EMBD": 768,
        "GPT_BLOCK": 1024,
        "GPT_BATCH": 8,
        "GPT_VOCAB": 50257,
    },
    "cnn": {"CNN_INPUT": (512, 3, 32, 32)},
}
MIXED = {"gpt2-small": "bfloat16"}


class NoGPUError(RuntimeError):
    """CuPy or a CUDA device (or PyTorch's CUDA build) is missing."""


def peak_tflops(name: str) -> float | None:
    for key, peak in PEAKS:
        if key.lower() in name.lower():
            return peak
    return None


def gpt_flops_per_token(n_params: int, cfg: dict) -> float:
    """Training FLOPs per token (forward + backward), as nanoGPT's MFU estimate counts them."""
    return 6.0 * n_params + 12.0 * cfg["GPT_LAYERS"] * cfg["GPT_EMBD"] * cfg["GPT_BLOCK"]


@contextlib.contextmanager
def sized(name: str):
    """Resize ``benchmarks.models`` for one workload (its builders read these globals)."""
    cfg = CONFIGS[name]
    saved = {k: getattr(models, k) for k in cfg}
    for k, v in cfg.items():
        setattr(models, k, v)
    try:
        yield cfg
    finally:
        for k, v in saved.items():
            setattr(models, k, v)


def require_gpu():
    """(cupy, torch) on a CUDA machine, or NoGPUError saying what is missing."""
    import ember

    if not ember.cuda_is_available():
        from ember.tensor.backend import cupy_module

        try:
            cupy_module()
            why = "CuPy imports but sees no CUDA device"
        except RuntimeError as exc:
            why = str(exc)
        raise NoGPUError(f"an NVIDIA GPU is needed: {why}")
    try:
        import torch
    except ImportError as exc:
        raise NoGPUError(f"PyTorch is needed as the baseline: {exc}") from None
    if not torch.cuda.is_available():
        raise NoGPUError("the baseline is PyTorch CUDA eager, but torch.cuda is unavailable")
    from ember.tensor.backend import cupy_module

    return cupy_module(), torch


def device_name(cp) -> str:
    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    name = props["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def _workload(name: str):
    base = "gpt" if name.startswith("gpt") else name
    return next(w for w in WORKLOADS if w.name == base)


def _batch(lib, name: str, device):
    """The workload's batch on the device (int64 tokens, float32 images)."""
    w = _workload(name)
    return tuple(t.to(device) for t in w.data(lib))


def build(name: str, torch):
    """(torch_state, ember_state) on the GPU; Ember starts from torch's initial weights."""
    import ember
    import ember.nn as enn
    import ember.nn.functional as eF
    import ember.optim as eoptim

    w = _workload(name)
    torch.manual_seed(0)
    tmodel = w.build(torch.nn, torch.nn.functional)
    emodel = w.build(enn, eF)
    models.copy_weights(tmodel, emodel)
    tmodel.cuda().train()
    emodel.to("cuda").train()
    t = (tmodel, w.optimizer(torch.optim, tmodel.parameters()), _batch(torch, name, "cuda"))
    e = (emodel, w.optimizer(eoptim, emodel.parameters()), _batch(ember, name, "cuda"))
    return t, e


def make_step(state, name: str, lib, nnf, sync):
    """One full training step ending in a device sync (so wall time is GPU time)."""
    model, opt, batch = state
    w = _workload(name)
    mixed = MIXED.get(name)
    if mixed is None:
        region = contextlib.nullcontext
    elif lib.__name__ == "torch":

        def region():
            return lib.autocast("cuda", dtype=getattr(lib, mixed))
    else:
        from ember.amp import autocast

        def region():
            return autocast("cuda", dtype=getattr(lib, mixed))

    def step():
        opt.zero_grad()
        with region():
            loss = w.forward(lib, nnf, model, batch)
        loss.backward()
        opt.step()
        sync()
        return loss

    return step


def case(name: str, cp, torch) -> tuple[Case, dict]:
    import ember
    import ember.nn.functional as eF

    pair: dict = {}

    def get(i):
        if not pair:
            pair["p"] = build(name, torch)
        lib, nnf = (torch, torch.nn.functional) if i == 0 else (ember, eF)
        sync = torch.cuda.synchronize if i == 0 else cp.cuda.Device().synchronize
        return make_step(pair["p"][i], name, lib, nnf, sync)

    formulation = _workload(name).formulation + f"; sized {CONFIGS[name]}"
    if name in MIXED:
        formulation += f"; {MIXED[name]} autocast"
    c = Case(name, formulation, lambda: get(1), lambda: get(0), 1.0 / TARGETS[name])
    return c, pair


def throughput(name: str, res, pair: dict, peak: float | None) -> dict:
    """Tokens (or images) per second for both frameworks and MFU for the GPT workloads."""
    cfg = CONFIGS[name]
    out = {"ember_step_ms": res.ember_median * 1e3, "torch_step_ms": res.torch_median * 1e3}
    if name.startswith("gpt"):
        tokens = cfg["GPT_BATCH"] * cfg["GPT_BLOCK"]
        n_params = sum(p.numel() for p in pair["p"][0][0].parameters())
        flops = gpt_flops_per_token(n_params, cfg)
        for fw, t in (("ember", res.ember_median), ("torch", res.torch_median)):
            out[f"{fw}_tokens_per_s"] = tokens / t
            if peak:
                out[f"{fw}_mfu"] = flops * tokens / t / (peak * 1e12)
        out["params"] = n_params
    else:
        n = cfg["CNN_INPUT"][0]
        out["ember_images_per_s"] = n / res.ember_median
        out["torch_images_per_s"] = n / res.torch_median
    out["speed_vs_torch"] = res.torch_median / res.ember_median
    out["target"] = TARGETS[name]
    out["meets_target"] = out["speed_vs_torch"] >= TARGETS[name]
    return out


def top_kernels(step, torch, steps: int = 3, rows: int = 15) -> str:
    """Ember's kernels by total GPU time over a few steps. cupyx.profiler times the step on
    the device (CUDA events); its kernel-level table comes from torch.profiler, whose CUPTI
    trace sees every kernel of the process, CuPy's and Ember's RawModule kernels included
    (cupyx.profiler itself has no per-kernel table: that is nsys/ncu's job)."""
    from cupyx.profiler import benchmark
    from torch.profiler import ProfilerActivity, profile

    timing = str(benchmark(step, n_repeat=steps, n_warmup=1))
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
    return timing + "\n" + prof.key_averages().table(sort_by="cuda_time_total", row_limit=rows)


def parser():
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--json", default=None, help="write the results as JSON to this path")
    p.add_argument("--profile", action="store_true", help="print Ember's top kernels per workload")
    p.add_argument("--no-check", action="store_true", help="skip the first-step loss check")
    return p


def check_first_loss(name: str, cp, torch) -> dict:
    """Identical weights and batch: the first losses agree (bf16 workloads loosely)."""
    c, pair = case(name, cp, torch)
    e_loss = float(c.ember()().item())
    t_loss = float(c.torch()().item())
    tol = 5e-2 if name in MIXED else 1e-3
    ok = abs(e_loss - t_loss) <= tol * max(1.0, abs(t_loss))
    print(
        f"  {name}: first loss ember {e_loss:.5f} / torch {t_loss:.5f}  "
        f"{'ok' if ok else 'MISMATCH'}"
    )
    return {"ember_loss": e_loss, "torch_loss": t_loss, "ok": ok}


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        cp, torch = require_gpu()
    except NoGPUError as exc:
        print(f"benchmarks.gpu: {exc}", file=sys.stderr)
        return 2
    # the same arithmetic on both sides: CuPy's float32 matmuls do not use TF32 by default
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    name = device_name(cp)
    peak = peak_tflops(name)
    repeat = args.repeat if args.repeat is not None else (5 if args.quick else 15)
    sample_s = (args.sample_ms if args.sample_ms is not None else 1.0) / 1e3
    chosen = [n for n in CONFIGS if args.only is None or args.only in n]
    report = {"device": name, "peak_bf16_tflops": peak, "workloads": {}}
    print(
        f"device: {name}; bf16 peak {peak or 'unknown'} TFLOP/s; torch {torch.__version__}, "
        f"cupy {cp.__version__}"
    )
    results = []
    t0 = time.perf_counter()
    for wname in chosen:
        with sized(wname):
            entry = {}
            try:
                if not args.no_check:
                    entry["check"] = check_first_loss(wname, cp, torch)
                c, pair = case(wname, cp, torch)
                res = measure(c, repeat, sample_s, warmup=2)
                results.append(res)
                entry.update(throughput(wname, res, pair, peak))
                if args.profile:
                    entry["top_kernels"] = top_kernels(c.ember(), torch)
                    print(f"\nEmber's top kernels, {wname}:\n{entry['top_kernels']}")
            except Exception as exc:  # one workload failing must not hide the others
                entry["error"] = f"{type(exc).__name__}: {exc}"
                print(f"  {wname}: FAILED {entry['error']}")
            finally:
                pair = None
                cp.get_default_memory_pool().free_all_blocks()
                torch.cuda.empty_cache()
            report["workloads"][wname] = entry
    print(f"\nEmber vs PyTorch CUDA eager, one training step; {time.perf_counter() - t0:.0f} s")
    if results:
        print_table(results)
    for wname, e in report["workloads"].items():
        if "speed_vs_torch" in e:
            unit = "tokens" if wname.startswith("gpt") else "images"
            mfu = (
                f", MFU ember {e['ember_mfu']:.1%} / torch {e['torch_mfu']:.1%}"
                if "ember_mfu" in e
                else ""
            )
            print(
                f"{wname}: ember {e[f'ember_{unit}_per_s']:,.0f} {unit}/s, torch "
                f"{e[f'torch_{unit}_per_s']:,.0f} ({e['speed_vs_torch']:.2f}x of torch, target "
                f">= {e['target']}x: {'ok' if e['meets_target'] else 'MISS'}){mfu}"
            )
    path = args.json or (
        os.path.join(os.environ["OUT"], "gpu_bench.json") if os.environ.get("OUT") else None
    )
    if path:
        with open(path, "w") as f:
            json.dump(report, f, indent=2, default=str)
        print(f"results: {path}")
    return 0 if all("error" not in e for e in report["workloads"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
