"""DataLoader in the main process: batching, order, errors, and mid-epoch resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

import ember
from ember.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
    TensorDataset,
    default_collate,
)


class Numbers(Dataset):
    """Sample i is (float32 vector [i, i], int i): goes through the per-sample path."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return np.full(2, i, np.float32), i


class Stream(IterableDataset):
    def __init__(self, n):
        self.n = n

    def __iter__(self):
        return iter(range(self.n))

    def __len__(self):
        return self.n


def ids(loader):
    return [b[1].data.tolist() for b in loader]


def tensor_ds(n=10):
    return TensorDataset(
        ember.tensor(np.arange(2 * n, dtype=np.float32).reshape(n, 2)), ember.arange(n)
    )


def test_batches_and_last_partial_batch():
    dl = DataLoader(Numbers(10), batch_size=4)
    batches = list(dl)
    assert len(dl) == 3 and len(batches) == 3
    assert [b[1].data.tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    x, y = batches[0]
    assert x.shape == (4, 2) and x.dtype == ember.float32 and y.dtype == ember.int64


def test_drop_last():
    dl = DataLoader(Numbers(10), batch_size=4, drop_last=True)
    assert len(dl) == 2 and ids(dl) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert ids(DataLoader(Numbers(8), batch_size=4, drop_last=True)) == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_batched_fast_path_equals_per_sample_path():
    ds = tensor_ds(11)
    fast = list(DataLoader(ds, batch_size=4))
    slow = list(DataLoader(ds, batch_size=4, collate_fn=lambda s: default_collate(s)))
    for (fx, fy), (sx, sy) in zip(fast, slow):
        np.testing.assert_array_equal(fx.data, sx.data)
        np.testing.assert_array_equal(fy.data, sy.data)
        assert fx.dtype == sx.dtype and fy.dtype == sy.dtype


def test_shuffle_is_deterministic_for_a_seed_and_covers_everything():
    ember.manual_seed(0)
    a = DataLoader(tensor_ds(), batch_size=3, shuffle=True)
    e0, e1 = ids(a), ids(a)
    assert sorted(sum(e0, [])) == list(range(10)) and e0 != e1
    ember.manual_seed(0)
    b = DataLoader(tensor_ds(), batch_size=3, shuffle=True)
    assert ids(b) == e0 and ids(b) == e1
    g = ember.Generator().manual_seed(5)
    c1 = ids(DataLoader(tensor_ds(), batch_size=3, shuffle=True, generator=g))
    g = ember.Generator().manual_seed(5)
    assert ids(DataLoader(tensor_ds(), batch_size=3, shuffle=True, generator=g)) == c1


def test_batch_size_none_and_custom_collate_and_samplers():
    dl = DataLoader(Numbers(3), batch_size=None)
    items = list(dl)
    assert len(dl) == 3 and isinstance(items[0][0], ember.Tensor) and items[2][1] == 2
    dl = DataLoader(Numbers(5), batch_size=2, collate_fn=lambda b: [s[1] for s in b])
    assert list(dl) == [[0, 1], [2, 3], [4]]
    dl = DataLoader(Numbers(6), batch_sampler=BatchSampler(SequentialSampler(range(6)), 4, False))
    assert ids(dl) == [[0, 1, 2, 3], [4, 5]] and len(dl) == 2
    dl = DataLoader(Numbers(6), batch_size=2, sampler=[5, 4, 3, 2, 1, 0])
    assert ids(dl) == [[5, 4], [3, 2], [1, 0]]


def test_iterable_dataset():
    dl = DataLoader(Stream(7), batch_size=3)
    assert [b.data.tolist() for b in dl] == [[0, 1, 2], [3, 4, 5], [6]] and len(dl) == 3
    dl = DataLoader(Stream(7), batch_size=3, drop_last=True)
    assert [b.data.tolist() for b in dl] == [[0, 1, 2], [3, 4, 5]] and len(dl) == 2
    assert [int(b) for b in DataLoader(Stream(3), batch_size=None)] == [0, 1, 2]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            dict(batch_size=0),
            "DataLoader: batch_size should be a positive integer value, but got batch_size=0",
        ),
        (dict(batch_size=-2), "batch_size=-2"),
        (dict(batch_size=2.5), "batch_size=2.5"),
        (dict(shuffle=True, sampler=[0, 1]), "sampler option is mutually exclusive with shuffle"),
        (dict(batch_sampler=[[0]], batch_size=2), "batch_sampler option is mutually exclusive"),
        (dict(batch_sampler=[[0]], drop_last=True), "batch_sampler option is mutually exclusive"),
        (dict(batch_size=None, drop_last=True), "mutually exclusive with drop_last"),
        (dict(num_workers=-1), "num_workers option should be non-negative"),
        (dict(timeout=-1), "timeout option should be non-negative"),
        (dict(prefetch_factor=2), "prefetch_factor option could only be specified"),
        (dict(persistent_workers=True), "persistent_workers option needs num_workers > 0"),
    ],
)
def test_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DataLoader(Numbers(4), **kwargs)


def test_empty_dataset_error():
    with pytest.raises(ValueError, match="DataLoader: the dataset is empty"):
        DataLoader(Numbers(0))
    with pytest.raises(ValueError, match="DataLoader: the dataset is empty"):
        DataLoader(Numbers(0), shuffle=True)


def test_iterable_dataset_argument_errors():
    with pytest.raises(ValueError, match="expected unspecified shuffle option"):
        DataLoader(Stream(3), shuffle=True)
    with pytest.raises(ValueError, match="expected unspecified sampler option"):
        DataLoader(Stream(3), sampler=[0])
    with pytest.raises(ValueError, match="expected unspecified batch_sampler option"):
        DataLoader(Stream(3), batch_sampler=[[0]])


def test_collate_error_in_the_loader_names_the_shapes():
    class Ragged(Numbers):
        def __getitem__(self, i):
            return np.zeros(i + 1, np.float32)

    with pytest.raises(RuntimeError, match=r"\(1,\) at entry 0 and \(2,\) at entry 1"):
        next(iter(DataLoader(Ragged(4), batch_size=2)))


def test_getitem_error_propagates_and_iteration_can_continue():
    class Flaky(Numbers):
        def __getitem__(self, i):
            if i == 2:
                raise KeyError("bad sample 2")
            return super().__getitem__(i)

    it = iter(DataLoader(Flaky(6), batch_size=2))
    assert next(it)[1].data.tolist() == [0, 1]
    with pytest.raises(KeyError, match="bad sample 2"):
        next(it)
    assert next(it)[1].data.tolist() == [4, 5]


# ------------------------------------------------------------------- resume
def _loader(shuffle, drop_last=False, n=23, bs=4):
    return DataLoader(tensor_ds(n), batch_size=bs, shuffle=shuffle, drop_last=drop_last)


def _run(loader, epochs):
    return [ids(loader) for _ in range(epochs)]


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("stop_at", [0, 1, 3, 4])
def test_resume_mid_epoch_yields_exactly_the_remaining_batches(shuffle, drop_last, stop_at):
    ember.manual_seed(11)
    full = _run(_loader(shuffle, drop_last), 3)

    ember.manual_seed(11)
    dl = _loader(shuffle, drop_last)
    first = ids(dl)
    assert first == full[0]
    it = iter(dl)
    head = [next(it)[1].data.tolist() for _ in range(stop_at)]
    state = json.loads(json.dumps(dl.state_dict()))
    assert state["batches_consumed"] == stop_at

    ember.manual_seed(12345)  # the resumed process has its own global RNG state
    resumed = _loader(shuffle, drop_last)
    resumed.load_state_dict(state)
    assert resumed.state_dict() == state
    assert head + ids(resumed) == full[1]
    assert ids(resumed) == full[2]  # and the next epoch too


@pytest.mark.parametrize("shuffle", [False, True])
def test_resume_at_an_epoch_boundary(shuffle):
    ember.manual_seed(5)
    full = _run(_loader(shuffle), 3)
    ember.manual_seed(5)
    dl = _loader(shuffle)
    assert ids(dl) == full[0]
    state = json.loads(json.dumps(dl.state_dict()))  # after StopIteration
    r = _loader(shuffle)
    r.load_state_dict(state)
    assert ids(r) == full[1] and ids(r) == full[2]

    # consumed every batch but never hit StopIteration (a trainer counting len(loader))
    ember.manual_seed(5)
    dl = _loader(shuffle)
    it = iter(dl)
    for _ in range(len(dl)):
        next(it)
    state = json.loads(json.dumps(dl.state_dict()))
    r = _loader(shuffle)
    r.load_state_dict(state)
    assert ids(r) == full[1] and ids(r) == full[2]


def test_state_dict_before_any_iteration_round_trips():
    ember.manual_seed(2)
    ref = _run(_loader(True), 2)
    ember.manual_seed(2)
    dl = _loader(True)
    state = json.loads(json.dumps(dl.state_dict()))
    r = _loader(True)
    ember.manual_seed(2)
    r.load_state_dict(state)
    assert _run(r, 2) == ref


def test_resume_iterable_dataset_skips_consumed_batches():
    dl = DataLoader(Stream(10), batch_size=3)
    it = iter(dl)
    next(it)
    next(it)
    state = json.loads(json.dumps(dl.state_dict()))
    r = DataLoader(Stream(10), batch_size=3)
    r.load_state_dict(state)
    assert [b.data.tolist() for b in r] == [[6, 7, 8], [9]]


def test_resume_with_a_custom_sampler_without_state():
    order = [4, 3, 2, 1, 0, 9, 8, 7, 6, 5]
    dl = DataLoader(tensor_ds(), batch_size=3, sampler=order)
    it = iter(dl)
    next(it)
    state = dl.state_dict()
    assert state["sampler"] == {"sampler": None}
    r = DataLoader(tensor_ds(), batch_size=3, sampler=order)
    r.load_state_dict(state)
    assert ids(r) == [[1, 0, 9], [8, 7, 6], [5]]


def test_random_sampler_with_replacement_resume():
    def make():
        ds = tensor_ds()
        return DataLoader(ds, batch_size=4, sampler=RandomSampler(ds, True, 17))

    ember.manual_seed(8)
    full = _run(make(), 2)
    ember.manual_seed(8)
    dl = make()
    ids(dl)
    it = iter(dl)
    head = [next(it)[1].data.tolist() for _ in range(2)]
    r = make()
    r.load_state_dict(json.loads(json.dumps(dl.state_dict())))
    assert head + ids(r) == full[1]
