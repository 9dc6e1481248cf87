"""The strategy seam: what the Trainer asks about processes, devices and collectives.

A Strategy owns rank, world size, reductions, barrier, broadcast, model wrapping and which rank
writes. ``SingleDeviceStrategy`` is the one-process case; the MPI data-parallel strategy
(issue 7) implements the same interface, so the Trainer never branches on world size.
"""

from __future__ import annotations

from typing import Any


class Strategy:
    """One process, or one rank of many. Subclasses override the collectives."""

    def __init__(self, device="cpu"):
        from ember.tensor.device import to_device

        self.root_device = to_device(device)

    # ---- who am I
    @property
    def global_rank(self) -> int:
        return 0

    @property
    def local_rank(self) -> int:
        return 0

    @property
    def world_size(self) -> int:
        return 1

    @property
    def is_global_zero(self) -> bool:
        return self.global_rank == 0

    # ---- collectives (every rank calls them, or none)
    def barrier(self, name: str | None = None) -> None:
        """Wait until every rank arrives."""

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        """The value of ``obj`` on rank ``src``, on every rank."""
        return obj

    def reduce(self, values, op: str = "mean"):
        """Reduce a NumPy array (or a float) across ranks: 'mean', 'sum', 'max' or 'min'."""
        return values

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        """True when every rank (``all``) or any rank decided True."""
        return bool(decision)

    # ---- model and data
    def setup_module(self, module):
        """Wrap the module for this strategy (DDP wraps it; one process returns it)."""
        return module

    def process_dataloader(self, dataloader, stage: str):
        """Adapt a dataloader to this strategy (DDP shards it with a DistributedSampler)."""
        return dataloader

    def batch_to_device(self, batch, device=None):
        """Move every tensor in a (nested) batch to the strategy's device."""
        from ember.tensor.tensor import Tensor

        device = device or self.root_device

        def move(x):
            if isinstance(x, Tensor):  # a pinned batch uploads asynchronously (side stream)
                return x.to(device, non_blocking=True)
            if isinstance(x, dict):
                return {k: move(v) for k, v in x.items()}
            if isinstance(x, tuple) and hasattr(x, "_fields"):
                return type(x)(*(move(v) for v in x))
            if isinstance(x, (list, tuple)):
                return type(x)(move(v) for v in x)
            return x

        return move(batch)

    def teardown(self) -> None:
        """Release what the strategy holds (communicators, threads)."""


class SingleDeviceStrategy(Strategy):
    """Training in one process on one device."""
