"""Dataset types: map-style, iterable, tensors, concatenation, subsets, random_split.

Map-style datasets may offer ``_batched_getitems(indices)``: the already collated batch that
``default_collate([ds[i] for i in indices])`` would give, built with one fancy-indexing call.
The DataLoader uses it only with the default collate, so a whole batch costs a few array ops
instead of one Python call and one tensor per sample.
"""

from __future__ import annotations

import bisect
import itertools
import math
import warnings

import numpy as np

from ember.tensor.random import rng_of
from ember.tensor.tensor import Tensor

__all__ = [
    "Dataset",
    "IterableDataset",
    "TensorDataset",
    "ConcatDataset",
    "ChainDataset",
    "Subset",
    "random_split",
]


class Dataset:
    """A map from indices to samples: subclasses define ``__getitem__`` (and ``__len__``)."""

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} must implement __getitem__")

    def __add__(self, other: Dataset) -> ConcatDataset:
        return ConcatDataset([self, other])


class IterableDataset(Dataset):
    """A stream of samples: subclasses define ``__iter__``. With workers, each worker iterates
    its own copy; use ``ember.data.get_worker_info()`` to split the stream between them."""

    def __iter__(self):
        raise NotImplementedError(f"{type(self).__name__} must implement __iter__")

    def __add__(self, other: Dataset) -> ChainDataset:
        return ChainDataset([self, other])


def _index(i, n: int, who: str) -> int:
    i = int(i)
    if i < 0:
        if -i > n:
            raise ValueError("absolute value of index should not exceed dataset length")
        i += n
    if i >= n:
        raise IndexError(f"{who}: index {i} is out of range for a dataset of size {n}")
    return i


class TensorDataset(Dataset):
    """Samples are ``tuple(t[i] for t in tensors)``; every tensor shares its first dimension."""

    def __init__(self, *tensors: Tensor) -> None:
        if not tensors:
            raise ValueError("TensorDataset: expected at least one tensor")
        n = tensors[0].shape[0] if tensors[0].ndim else None
        if any(t.ndim == 0 or t.shape[0] != n for t in tensors):
            shapes = ", ".join(str(tuple(t.shape)) for t in tensors)
            raise ValueError(
                f"Size mismatch between tensors: TensorDataset needs the same first "
                f"dimension in every tensor, got shapes {shapes}"
            )
        self.tensors = tensors

    def __len__(self) -> int:
        return self.tensors[0].shape[0]

    def __getitem__(self, index):
        i = _index(index, len(self), "TensorDataset")
        # views, as torch's t[i]; a 1-D tensor gives a 0-d view (an array, not a NumPy scalar)
        return tuple(
            Tensor(t.data[i] if t.data.ndim > 1 else t.data[i : i + 1].reshape(()))
            for t in self.tensors
        )

    def _batched_getitems(self, indices) -> list:
        idx = np.asarray(indices, dtype=np.int64)
        return [Tensor(t.data[idx]) for t in self.tensors]


class ConcatDataset(Dataset):
    """Several map-style datasets end to end."""

    def __init__(self, datasets) -> None:
        self.datasets = list(datasets)
        if not self.datasets:
            raise ValueError("ConcatDataset: datasets should not be an empty iterable")
        for d in self.datasets:
            if isinstance(d, IterableDataset):
                raise TypeError("ConcatDataset does not support IterableDataset")
        self.cumulative_sizes = list(itertools.accumulate(len(d) for d in self.datasets))

    def __len__(self) -> int:
        return self.cumulative_sizes[-1]

    def __getitem__(self, index):
        i = _index(index, len(self), "ConcatDataset")
        k = bisect.bisect_right(self.cumulative_sizes, i)
        start = self.cumulative_sizes[k - 1] if k else 0
        return self.datasets[k][i - start]


class ChainDataset(IterableDataset):
    """Several iterable datasets one after the other."""

    def __init__(self, datasets) -> None:
        self.datasets = list(datasets)

    def __iter__(self):
        for d in self.datasets:
            if not isinstance(d, IterableDataset):
                raise TypeError("ChainDataset only supports IterableDataset")
            yield from d

    def __len__(self) -> int:
        return sum(len(d) for d in self.datasets)


class Subset(Dataset):
    """The samples of ``dataset`` at ``indices``, in that order."""

    def __init__(self, dataset: Dataset, indices) -> None:
        self.dataset = dataset
        self.indices = indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index):
        if isinstance(index, list):
            return self.dataset[[self.indices[i] for i in index]]
        return self.dataset[self.indices[index]]

    def __getitems__(self, indices: list) -> list:
        inner = getattr(self.dataset, "__getitems__", None)
        mapped = [self.indices[i] for i in indices]
        if inner is not None:
            return inner(mapped)
        return [self.dataset[i] for i in mapped]

    @property
    def _batched_getitems(self):
        inner = getattr(self.dataset, "_batched_getitems", None)
        if inner is None:
            return None
        return lambda indices: inner([self.indices[i] for i in indices])


def random_split(dataset: Dataset, lengths, generator=None) -> list[Subset]:
    """Split into non-overlapping random subsets of the given lengths (or fractions summing
    to 1, rounded down, the remainder dealt one by one from the first split, as in torch)."""
    lengths = list(lengths)
    n = len(dataset)
    if math.isclose(sum(lengths), 1) and sum(lengths) <= 1:
        sizes = []
        for i, frac in enumerate(lengths):
            if frac < 0 or frac > 1:
                raise ValueError(f"Fraction at index {i} is not between 0 and 1")
            sizes.append(int(math.floor(n * frac)))
        for i in range(n - sum(sizes)):
            sizes[i % len(sizes)] += 1
        lengths = sizes
        for i, length in enumerate(lengths):
            if length == 0:
                warnings.warn(
                    f"Length of split at index {i} is 0. This might result in an empty dataset.",
                    stacklevel=2,
                )
    if any(int(x) != x or x < 0 for x in lengths):
        raise ValueError(
            f"random_split: lengths must be non-negative integers or fractions "
            f"summing to 1, got {lengths}"
        )
    if sum(lengths) != n:
        raise ValueError("Sum of input lengths does not equal the length of the input dataset!")
    perm = rng_of(generator).permutation(n).tolist()
    out, offset = [], 0
    for length in lengths:
        out.append(Subset(dataset, perm[offset : offset + int(length)]))
        offset += int(length)
    return out
