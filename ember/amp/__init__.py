"""Mixed precision: ``autocast`` (the listed ops in float16/bfloat16) and ``GradScaler``
(dynamic loss scaling for float16 gradients), with torch.amp's names and semantics."""

from __future__ import annotations

from ember.amp.autocast import (
    autocast,
    clear_autocast_cache,
    get_autocast_dtype,
    is_autocast_enabled,
)
from ember.amp.grad_scaler import GradScaler, OptState

__all__ = [
    "autocast",
    "GradScaler",
    "OptState",
    "is_autocast_enabled",
    "get_autocast_dtype",
    "clear_autocast_cache",
]
