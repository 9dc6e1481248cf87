"""The gpt_shakespeare_baby recipe in Ember and the same training in PyTorch, timed end to end.

    python -m benchmarks.baby_gpt [--steps 2000] [--only ember|torch] [--threads N]

Ember runs the packaged recipe in-process (``experiment=gpt_shakespeare_baby``: 4 layers, 4
heads, 128 dims, block 64, batch 12, AdamW(0.9, 0.99, wd 0.1 on matrices), cosine warm-up
schedule, gradient clipping at 1.0, validation every 250 steps over every non-overlapping
window of the val split). The PyTorch side is the same model (same state-dict keys and init),
data, split, optimizer, schedule, clipping and validation, written as a plain loop. Both report
wall time (training plus the periodic validations) and the best validation loss. Needs
tinyshakespeare under $EMBER_DATA_DIR (or ../shared/data).
"""

from __future__ import annotations

import argparse
import math
import os
import pathlib
import tempfile
import time

import numpy as np

from benchmarks.common import cores, environment, setup_torch

BLOCK, BATCH, LAYERS, HEADS, EMBD = 64, 12, 4, 4, 128
LR, BETAS, WD, WARMUP, MIN_RATIO, CLIP, VAL_EVERY = 1e-3, (0.9, 0.99), 0.1, 100, 0.1, 1.0, 250


def _data_dir() -> None:
    if not os.environ.get("EMBER_DATA_DIR"):
        guess = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
        if guess.exists():
            os.environ["EMBER_DATA_DIR"] = str(guess)


def run_ember(steps: int) -> dict:
    from hydra import compose, initialize_config_module

    from ember.recipes.runner import run

    out = tempfile.mkdtemp(prefix="baby_gpt_")
    overrides = [
        "experiment=gpt_shakespeare_baby",
        f"trainer.max_steps={steps}",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "callbacks.text_samples=null",
        "logger=none",
        f"output_dir={out}",
    ]
    with initialize_config_module("ember.recipes.configs", version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    summary = run(cfg)
    return {
        "seconds": summary["seconds"],
        "best_val": summary["best_score"],
        "last_val": summary["metrics"].get("val_loss"),
    }


def torch_gpt(torch, vocab: int):
    """benchmarks.models' GPT at the baby sizes, with nanoGPT's init (as ember.recipes' GPT)."""
    from benchmarks import models

    nn = torch.nn
    net = models.gpt(
        nn, nn.functional, vocab=vocab, block=BLOCK, layers=LAYERS, heads=HEADS, embd=EMBD
    )
    for name, m in net.named_modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            std = 0.02 / math.sqrt(2 * LAYERS) if name.endswith("c_proj") else 0.02
            nn.init.normal_(m.weight, 0.0, std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
    return lambda idx: net(idx, torch.arange(idx.shape[1])), net


def run_torch(steps: int, threads: int) -> dict:
    torch = setup_torch(threads)
    from ember.data.datasets import TinyShakespeare
    from ember.recipes.schedulers import cosine_warmup_factor

    train = TinyShakespeare(BLOCK, "train")
    val = TinyShakespeare(BLOCK, "val").data
    data = torch.from_numpy(train.data.astype(np.int64))
    starts = np.arange(0, len(val) - BLOCK, BLOCK)  # the recipe's validation windows
    vx = torch.from_numpy(np.stack([val[s : s + BLOCK] for s in starts]).astype(np.int64))
    vy = torch.from_numpy(np.stack([val[s + 1 : s + BLOCK + 1] for s in starts]).astype(np.int64))
    torch.manual_seed(1337)
    model, net = torch_gpt(torch, train.vocab_size)
    decay = [p for p in net.parameters() if p.dim() >= 2]
    rest = [p for p in net.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay}, {"params": rest, "weight_decay": 0.0}],
        lr=LR,
        betas=BETAS,
        weight_decay=WD,
    )
    warm = min(WARMUP, steps - 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: cosine_warmup_factor(s, steps, warm, MIN_RATIO)
    )
    rng = np.random.default_rng(1337)
    vals = []

    def validate():
        net.eval()
        with torch.no_grad():
            losses = [
                torch.nn.functional.cross_entropy(
                    model(vx[i : i + 2 * BATCH]).flatten(0, 1), vy[i : i + 2 * BATCH].flatten()
                ).item()
                * len(vx[i : i + 2 * BATCH])
                for i in range(0, len(vx), 2 * BATCH)
            ]
        net.train()
        vals.append(sum(losses) / len(vx))

    start = time.perf_counter()
    for step in range(1, steps + 1):
        idx = torch.from_numpy(rng.integers(0, len(data) - BLOCK, BATCH))
        win = data[idx[:, None] + torch.arange(BLOCK + 1)]
        loss = torch.nn.functional.cross_entropy(
            model(win[:, :-1]).flatten(0, 1), win[:, 1:].flatten()
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), CLIP)
        opt.step()
        sched.step()
        if step % VAL_EVERY == 0 or step == steps:
            validate()
    return {"seconds": time.perf_counter() - start, "best_val": min(vals), "last_val": vals[-1]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--only", choices=("ember", "torch"))
    parser.add_argument("--threads", type=int, default=cores())
    args = parser.parse_args(argv)
    _data_dir()
    results = {}
    if args.only != "torch":
        results["ember"] = run_ember(args.steps)
    if args.only != "ember":
        results["pytorch"] = run_torch(args.steps, args.threads)
    torch = setup_torch(args.threads) if "pytorch" in results else None
    print(f"\ngpt_shakespeare_baby, {args.steps} steps ({environment(torch)})")
    print(f"{'framework':10s} {'wall s':>8s} {'ms/step':>8s} {'best val':>9s} {'last val':>9s}")
    for name, r in results.items():
        print(
            f"{name:10s} {r['seconds']:8.1f} {1000 * r['seconds'] / args.steps:8.1f} "
            f"{r['best_val']:9.4f} {r['last_val']:9.4f}"
        )


if __name__ == "__main__":
    main()
