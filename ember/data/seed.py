"""seed_everything: one call that seeds Python's ``random``, NumPy's global RNG and every
Ember generator. Kept in its own tiny module so ``import ember`` can export it without
importing the rest of ``ember.data``."""

from __future__ import annotations

import os
import random

import numpy as np

from ember.tensor.random import manual_seed

__all__ = ["seed_everything"]

_MAX_SEED = 2**32 - 1  # NumPy's legacy global RNG takes 32-bit seeds


def seed_everything(seed: int | None = None) -> int:
    """Seed everything and return the seed. ``None`` reads ``$EMBER_GLOBAL_SEED`` (else 0).

    The seed is also stored in ``$EMBER_GLOBAL_SEED``, so processes started later (spawned
    workers, MPI ranks launched from this one) can pick it up.
    """
    if seed is None:
        env = os.environ.get("EMBER_GLOBAL_SEED")
        seed = int(env) if env else 0
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed_everything: seed must be an int, got {type(seed).__name__}")
    seed = int(seed)
    if not 0 <= seed <= _MAX_SEED:
        raise ValueError(
            f"seed_everything: seed must be in [0, {_MAX_SEED}] (NumPy's range), got {seed}"
        )
    random.seed(seed)
    np.random.seed(seed)
    manual_seed(seed)
    os.environ["EMBER_GLOBAL_SEED"] = str(seed)
    return seed
