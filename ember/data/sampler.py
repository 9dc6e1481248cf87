"""Samplers: which indices a DataLoader visits, and in which order.

Random samplers derive each epoch's order from (base seed, epoch number). The base seed is
drawn once, at the first iteration, from ember's RNG (the ``generator`` passed in, or the
default one that ``ember.manual_seed`` seeds), so a seed and an epoch number fix the order.
Every ``iter()`` starts the next epoch (``set_epoch`` picks one). ``state_dict()`` holds plain
ints (base seed, epoch, indices yielded so far), so it can go into JSON; after
``load_state_dict`` the next ``iter()`` continues that epoch at the next index.
"""

from __future__ import annotations

import itertools

import numpy as np

from ember.tensor.random import Generator, rng_of
from ember.tensor.tensor import Tensor

__all__ = [
    "Sampler",
    "SequentialSampler",
    "RandomSampler",
    "SubsetRandomSampler",
    "WeightedRandomSampler",
    "BatchSampler",
]


class Sampler:
    """Base class: an iterable of dataset indices (or of lists of indices, for batch samplers)."""

    def __init__(self, data_source=None) -> None:
        pass

    def __iter__(self):
        raise NotImplementedError(f"{type(self).__name__} must implement __iter__")


def _epoch_generator(base_seed: int, epoch: int) -> Generator:
    """An ember Generator for one epoch, seeded from (base seed, epoch) by NumPy's SeedSequence."""
    seed = int(np.random.SeedSequence([base_seed, epoch]).generate_state(1, np.uint64)[0])
    return Generator().manual_seed(seed)


class _EpochSampler(Sampler):
    """Epoch bookkeeping shared by the built-in samplers.

    ``_epoch`` is the epoch in progress (or the next one, before the first iteration),
    ``_yielded`` how many of its indices have been handed out, ``_started`` whether an
    iteration of ``_epoch`` has begun, ``_resume`` whether the next iteration continues it.
    """

    _base_seed: int | None = None
    generator = None

    def _init_epochs(self) -> None:
        self._epoch, self._yielded, self._started, self._resume = 0, 0, False, False

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration produce epoch ``epoch``'s order."""
        self._epoch, self._yielded, self._started, self._resume = int(epoch), 0, False, False

    def _order(self, epoch: int):
        raise NotImplementedError

    def __iter__(self):
        # The setup runs now (not at the first next()), so a DataLoader can record the state
        # that reproduces this epoch right after calling iter().
        if self._resume:
            self._resume = False
        elif self._started:
            self._epoch += 1
            self._yielded = 0
        else:
            self._yielded = 0
        self._started = True
        order = self._order(self._epoch)
        return self._emit(order, self._yielded)

    def _emit(self, order, skip: int):
        for i in itertools.islice(order, skip, None):
            self._yielded += 1
            yield i

    def _draw_base_seed(self) -> int:
        if self._base_seed is None:
            self._base_seed = int(rng_of(self.generator).integers(0, 2**63 - 1, dtype=np.int64))
        return self._base_seed

    def state_dict(self) -> dict:
        return {
            "base_seed": self._base_seed,
            "epoch": self._epoch,
            "yielded": self._yielded,
            "started": self._started,
        }

    def load_state_dict(self, state: dict) -> None:
        base = state.get("base_seed")
        self._base_seed = None if base is None else int(base)
        self._epoch = int(state["epoch"])
        self._yielded = int(state["yielded"])
        self._started = bool(state["started"])
        self._resume = self._started and self._yielded < len(self)


class SequentialSampler(_EpochSampler):
    """0, 1, ..., len(data_source) - 1."""

    def __init__(self, data_source) -> None:
        self.data_source = data_source
        self._init_epochs()

    def _order(self, epoch: int):
        return range(len(self.data_source))

    def __len__(self) -> int:
        return len(self.data_source)


def _check_num_samples(num_samples) -> None:
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples <= 0:
        raise ValueError(
            f"num_samples should be a positive integer value, but got num_samples={num_samples}"
        )


def _check_replacement(replacement) -> None:
    if not isinstance(replacement, bool):
        raise TypeError(f"replacement should be a boolean value, but got replacement={replacement}")


class RandomSampler(_EpochSampler):
    """A random permutation per epoch (repeated to reach ``num_samples``), or, with
    ``replacement=True``, ``num_samples`` uniform draws."""

    def __init__(
        self, data_source, replacement: bool = False, num_samples: int | None = None, generator=None
    ) -> None:
        self.data_source = data_source
        self.replacement = replacement
        self._num_samples = num_samples
        self.generator = generator
        _check_replacement(replacement)
        _check_num_samples(self.num_samples)
        self._init_epochs()

    @property
    def num_samples(self) -> int:
        return len(self.data_source) if self._num_samples is None else self._num_samples

    def __iter__(self):
        self._draw_base_seed()
        return super().__iter__()

    def _order(self, epoch: int) -> list:
        rng = rng_of(_epoch_generator(self._base_seed, epoch))
        n, k = len(self.data_source), self.num_samples
        if self.replacement:
            return rng.integers(0, n, size=k, dtype=np.int64).tolist()
        parts = [rng.permutation(n) for _ in range(k // n)]
        if k % n:
            parts.append(rng.permutation(n)[: k % n])
        return np.concatenate(parts).tolist()

    def __len__(self) -> int:
        return self.num_samples


class SubsetRandomSampler(_EpochSampler):
    """The given indices, in a random order each epoch."""

    def __init__(self, indices, generator=None) -> None:
        self.indices = indices
        self.generator = generator
        self._indices = np.asarray(
            indices.data if isinstance(indices, Tensor) else indices, dtype=np.int64
        ).reshape(-1)
        self._init_epochs()

    def __iter__(self):
        self._draw_base_seed()
        return super().__iter__()

    def _order(self, epoch: int) -> list:
        rng = rng_of(_epoch_generator(self._base_seed, epoch))
        return self._indices[rng.permutation(self._indices.size)].tolist()

    def __len__(self) -> int:
        return int(self._indices.size)


class WeightedRandomSampler(_EpochSampler):
    """``num_samples`` indices drawn with probability proportional to ``weights``."""

    def __init__(self, weights, num_samples: int, replacement: bool = True, generator=None) -> None:
        _check_num_samples(num_samples)
        _check_replacement(replacement)
        w = np.asarray(weights.data if isinstance(weights, Tensor) else weights, dtype=np.float64)
        if w.ndim != 1:
            raise ValueError(
                f"weights should be a 1d sequence but given weights have shape {tuple(w.shape)}"
            )
        if w.size == 0 or (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
            raise ValueError(
                "WeightedRandomSampler: weights must be finite and non-negative, "
                "with a positive sum"
            )
        if not replacement and num_samples > np.count_nonzero(w):
            raise RuntimeError(
                f"WeightedRandomSampler: cannot sample n_sample={num_samples} > "
                f"{np.count_nonzero(w)} non-zero weights without replacement"
            )
        self.weights = w
        self.num_samples = num_samples
        self.replacement = replacement
        self.generator = generator
        self._init_epochs()

    def __iter__(self):
        self._draw_base_seed()
        return super().__iter__()

    def _order(self, epoch: int) -> list:
        rng = rng_of(_epoch_generator(self._base_seed, epoch))
        p = self.weights / self.weights.sum()
        return rng.choice(p.size, size=self.num_samples, replace=self.replacement, p=p).tolist()

    def __len__(self) -> int:
        return self.num_samples


class BatchSampler(Sampler):
    """Groups another sampler's indices into lists of ``batch_size``."""

    def __init__(self, sampler, batch_size: int, drop_last: bool) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(
                f"batch_size should be a positive integer value, but got batch_size={batch_size}"
            )
        if not isinstance(drop_last, bool):
            raise ValueError(f"drop_last should be a boolean value, but got drop_last={drop_last}")
        self.sampler = sampler
        self.batch_size = batch_size
        self.drop_last = drop_last

    def __iter__(self):
        return self._batches(iter(self.sampler))  # iter() now: the inner sampler starts its epoch

    def _batches(self, it):
        size = self.batch_size
        while True:
            batch = list(itertools.islice(it, size))
            if not batch or (self.drop_last and len(batch) < size):
                return
            yield batch

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def state_dict(self) -> dict:
        inner = getattr(self.sampler, "state_dict", None)
        return {"sampler": inner() if inner is not None else None}

    def load_state_dict(self, state: dict) -> None:
        if state.get("sampler") is not None and hasattr(self.sampler, "load_state_dict"):
            self.sampler.load_state_dict(state["sampler"])
