"""Samplers that give each rank its own shard of a dataset.

``DistributedSampler`` (training) is torch's: the epoch's order (a permutation seeded by
``seed`` and the epoch, identical on every rank, or 0..n-1) is padded by repeating its head (or
cut, with ``drop_last``) to a multiple of the world size, and rank r takes positions
r, r + R, r + 2R...: every rank gets the same number of samples, so the ranks stay in step.

``UnpaddedDistributedSampler`` (evaluation) shards the same way without padding: the shards
differ by at most one sample and cover the dataset exactly once, so metrics summed per rank
(and weighted by each rank's count) equal the single-process ones. Ranks may then run a
different number of batches: evaluation must not call collectives per batch.

Both follow ``ember.data``'s sampler protocol: ``set_epoch``, and a JSON ``state_dict`` (base
seed, epoch, indices yielded so far) that resumes mid-epoch. The state also records the world
size and the position in the epoch's order where this pass began; loading it under a different
world size resumes at the same global position (the samples not yet seen by any rank are
re-sharded over the new ranks).
"""

from __future__ import annotations

import math

import numpy as np

from ember.data.sampler import _epoch_generator, _EpochSampler
from ember.tensor.random import rng_of

__all__ = ["DistributedSampler", "UnpaddedDistributedSampler", "fold_loader_state"]


def _world_defaults(num_replicas, rank):
    if num_replicas is None or rank is None:
        from ember.distributed.comm import world

        comm = world()
        num_replicas = comm.size if num_replicas is None else num_replicas
        rank = comm.rank if rank is None else rank
    if isinstance(num_replicas, bool) or not isinstance(num_replicas, int) or num_replicas < 1:
        raise ValueError(
            f"DistributedSampler: num_replicas should be a positive integer, got {num_replicas!r}"
        )
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < num_replicas:
        raise ValueError(
            f"Invalid rank {rank}, rank should be in the interval [0, {num_replicas - 1}]"
        )
    return num_replicas, rank


class DistributedSampler(_EpochSampler):
    """This rank's share of ``dataset`` (torch.utils.data.DistributedSampler)."""

    pad = True

    def __init__(
        self,
        dataset,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        self.dataset = dataset
        self.num_replicas, self.rank = _world_defaults(num_replicas, rank)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.drop_last = drop_last
        self._base_seed = self.seed
        self._offset = 0  # position in the epoch's order where this pass began (resume)
        self._init_epochs()

    # ------------------------------------------------------------------ sizes
    def _sizes(self, n: int) -> tuple:
        """(samples per rank, total taken) for ``n`` remaining items."""
        r = self.num_replicas
        if not self.pad:
            return len(range(self.rank, n, r)), n
        if self.drop_last and n % r:
            per = math.ceil((n - r) / r)
        else:
            per = math.ceil(n / r)
        return per, per * r

    @property
    def num_samples(self) -> int:
        return self._sizes(len(self.dataset) - self._offset)[0]

    @property
    def total_size(self) -> int:
        return self._sizes(len(self.dataset) - self._offset)[1]

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """The order of epoch ``epoch`` for the next iteration (call it on every rank)."""
        super().set_epoch(epoch)
        self._offset = 0

    # ------------------------------------------------------------------ order
    def _epoch_order(self, epoch: int) -> np.ndarray:
        n = len(self.dataset)
        if self.shuffle:
            return rng_of(_epoch_generator(self.seed, epoch)).permutation(n)
        return np.arange(n)

    def _order(self, epoch: int) -> list:
        order = self._epoch_order(epoch)[self._offset :]
        per, total = self._sizes(order.size)
        if self.pad and total > order.size:
            if order.size == 0:
                return []
            reps = math.ceil((total - order.size) / order.size)
            order = np.concatenate([order] + [order] * reps)[:total]
        else:
            order = order[:total]
        return order[self.rank : total : self.num_replicas].tolist()

    def __iter__(self):
        if not self._resume:
            self._offset = 0  # a new epoch starts at the beginning of its order
        return super().__iter__()

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict:
        state = super().state_dict()
        state.update(num_replicas=self.num_replicas, offset=self._offset)
        return state

    def load_state_dict(self, state: dict) -> None:
        """Continue where ``state`` was taken; under another world size, continue at the
        same global position of the epoch's order."""
        old_r = int(state.get("num_replicas", self.num_replicas))
        offset = int(state.get("offset", 0))
        if old_r == self.num_replicas:
            self._offset = offset
            super().load_state_dict(state)
            return
        # every rank had taken ``yielded`` items: the first ``yielded * old_r`` positions of
        # the pass are consumed (positions past the data were padding)
        self._offset = min(len(self.dataset), offset + int(state["yielded"]) * old_r)
        super().load_state_dict(dict(state, yielded=0))


class UnpaddedDistributedSampler(DistributedSampler):
    """Evaluation sharding: every sample exactly once over all ranks, no padding (shards
    differ in length by at most one). ``shuffle`` defaults to False."""

    pad = False

    def __init__(
        self,
        dataset,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(dataset, num_replicas, rank, shuffle, seed, drop_last=False)


def fold_loader_state(state: dict, batch_size: int) -> dict:
    """A DataLoader ``state_dict`` whose consumed batches are moved into its sampler's count
    (``batches_consumed * batch_size`` more items yielded; ``batches_consumed`` 0).

    The loader resumes by skipping batches, which only means the same thing under the same
    world size; the sampler's count is converted by ``DistributedSampler.load_state_dict``.
    Fold a checkpoint's loader state before loading it into a loader with a different number
    of ranks (folding under the same number changes nothing).
    """
    import copy

    out = copy.deepcopy(state)
    consumed = int(out.get("batches_consumed", 0))
    inner = out.get("sampler")
    if isinstance(inner, dict) and "sampler" in inner and "yielded" not in inner:
        inner = inner["sampler"]  # a BatchSampler's state wraps its sampler's
    if not consumed or not isinstance(inner, dict) or "yielded" not in inner:
        return out
    inner["yielded"] = int(inner["yielded"]) + consumed * int(batch_size)
    out["batches_consumed"] = 0
    return out
