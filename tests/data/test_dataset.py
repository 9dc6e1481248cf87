"""Dataset types and random_split (lengths rule checked against torch)."""

from __future__ import annotations

import contextlib
import json
import warnings

import numpy as np
import pytest

import ember
from ember.data import (
    ChainDataset,
    ConcatDataset,
    Dataset,
    IterableDataset,
    Subset,
    TensorDataset,
    random_split,
)


class Squares(Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return i * i


class Stream(IterableDataset):
    def __init__(self, items):
        self.items = list(items)

    def __iter__(self):
        return iter(self.items)

    def __len__(self):
        return len(self.items)


def test_tensor_dataset_items_are_views_of_rows():
    x = ember.tensor(np.arange(12, dtype=np.float32).reshape(4, 3))
    y = ember.tensor([0, 1, 0, 1])
    ds = TensorDataset(x, y)
    assert len(ds) == 4
    xi, yi = ds[2]
    np.testing.assert_array_equal(xi.data, [6, 7, 8])
    assert yi.shape == () and yi.item() == 0 and yi.dtype == ember.int64
    xl, yl = ds[-1]
    np.testing.assert_array_equal(xl.data, [9, 10, 11])
    assert yl.item() == 1
    with pytest.raises(IndexError, match="out of range"):
        ds[4]


def test_tensor_dataset_size_mismatch_names_the_shapes():
    with pytest.raises(ValueError, match=r"Size mismatch.*\(3, 2\), \(4,\)"):
        TensorDataset(ember.zeros(3, 2), ember.zeros(4))


def test_concat_dataset_indexing_and_negative_indices():
    a, b = Squares(3), Squares(2)
    ds = a + b
    assert isinstance(ds, ConcatDataset)
    assert len(ds) == 5 and ds.cumulative_sizes == [3, 5]
    assert [ds[i] for i in range(5)] == [0, 1, 4, 0, 1]
    assert ds[-1] == 1 and ds[-5] == 0
    with pytest.raises(ValueError, match="should not exceed dataset length"):
        ds[-6]
    with pytest.raises(IndexError):
        ds[5]
    with pytest.raises(ValueError, match="empty iterable"):
        ConcatDataset([])
    with pytest.raises(TypeError, match="IterableDataset"):
        ConcatDataset([Stream([1])])


def test_chain_dataset_and_iterable_add():
    ds = Stream([1, 2]) + Stream([3])
    assert isinstance(ds, ChainDataset)
    assert list(ds) == [1, 2, 3] and len(ds) == 3


def test_subset_maps_indices():
    ds = Subset(Squares(10), [9, 2, 5])
    assert len(ds) == 3
    assert [ds[i] for i in range(3)] == [81, 4, 25]
    assert ds.__getitems__([2, 0]) == [25, 81]


@pytest.mark.parametrize(
    "n, fractions",
    [
        (10, [0.5, 0.5]),
        (11, [0.3, 0.3, 0.4]),
        (7, [0.1, 0.9]),
        (100, [0.8, 0.1, 0.1]),
        (5, [1 / 3, 1 / 3, 1 / 3]),
        (3, [0.2, 0.2, 0.2, 0.2, 0.2]),
    ],
)
def test_random_split_fraction_rounding_matches_torch(n, fractions):
    torch = pytest.importorskip("torch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about empty splits too
        expected = [len(s) for s in torch.utils.data.random_split(range(n), fractions)]
    with pytest.warns(UserWarning) if 0 in expected else contextlib.nullcontext():
        got = [len(s) for s in random_split(Squares(n), fractions)]
    assert got == expected


def test_random_split_is_a_seeded_partition():
    ds = Squares(20)
    g = ember.Generator().manual_seed(7)
    parts = random_split(ds, [5, 15], generator=g)
    idx = parts[0].indices + parts[1].indices
    assert sorted(idx) == list(range(20)) and len(parts[0]) == 5
    again = random_split(ds, [5, 15], generator=ember.Generator().manual_seed(7))
    assert again[0].indices == parts[0].indices
    other = random_split(ds, [5, 15], generator=ember.Generator().manual_seed(8))
    assert other[0].indices != parts[0].indices
    ember.manual_seed(3)
    a = random_split(ds, [0.5, 0.5])[0].indices
    ember.manual_seed(3)
    assert random_split(ds, [0.5, 0.5])[0].indices == a
    json.dumps(a)  # plain ints


def test_random_split_errors():
    with pytest.raises(ValueError, match="Sum of input lengths"):
        random_split(Squares(10), [3, 3])
    with pytest.raises(ValueError, match="Fraction at index 1 is not between 0 and 1"):
        random_split(Squares(10), [0.5, 1.5, -1.0])
