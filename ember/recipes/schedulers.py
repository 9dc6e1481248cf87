"""Learning-rate schedules the configs name that ``ember.optim.lr_scheduler`` has no single class
for. Each takes ``(optimizer, total_steps=N)``, the call ``RecipeModule`` makes."""

from __future__ import annotations

import math

from ember.optim.lr_scheduler import LambdaLR


def cosine_warmup(
    optimizer, total_steps: int, warmup_steps: int = 100, min_lr_ratio: float = 0.1
) -> LambdaLR:
    """nanoGPT's schedule: linear warm-up over ``warmup_steps``, then a cosine decay to
    ``min_lr_ratio`` times the base learning rate at ``total_steps`` (held there after)."""
    if warmup_steps < 0 or not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(
            f"cosine_warmup: need warmup_steps >= 0 and 0 <= min_lr_ratio <= 1, got "
            f"warmup_steps={warmup_steps}, min_lr_ratio={min_lr_ratio}"
        )
    warmup = min(int(warmup_steps), max(int(total_steps) - 1, 0))
    return LambdaLR(
        optimizer, lambda step: cosine_warmup_factor(step, total_steps, warmup, min_lr_ratio)
    )


def cosine_warmup_factor(step: int, total_steps: int, warmup: int, min_lr_ratio: float) -> float:
    """The learning-rate multiplier of ``cosine_warmup`` at ``step`` (also used by the PyTorch
    side of ``benchmarks/baby_gpt.py``, so both follow the same schedule)."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    span = max(total_steps - warmup, 1)
    progress = min((step - warmup) / span, 1.0)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
