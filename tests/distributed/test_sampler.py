"""DistributedSampler / UnpaddedDistributedSampler: shards, padding, epochs, resume (no MPI:
every rank's sampler is built in this process with explicit num_replicas and rank)."""

from __future__ import annotations

import json
import math

import pytest

import ember
from ember.data.dataloader import DataLoader
from ember.data.dataset import TensorDataset
from ember.distributed.sampler import (
    DistributedSampler,
    UnpaddedDistributedSampler,
    fold_loader_state,
)


def shards(n, replicas, **kw):
    ds = list(range(n))
    return [list(DistributedSampler(ds, replicas, r, **kw)) for r in range(replicas)]


@pytest.mark.parametrize("n", [1, 7, 10, 12])
@pytest.mark.parametrize("replicas", [1, 2, 3, 4])
@pytest.mark.parametrize("shuffle", [False, True])
def test_padded_shards_cover_the_dataset(n, replicas, shuffle):
    got = shards(n, replicas, shuffle=shuffle)
    per = math.ceil(n / replicas)
    assert [len(s) for s in got] == [per] * replicas
    assert set().union(*map(set, got)) == set(range(n))
    flat = sum(got, [])
    assert len(flat) - len(set(flat)) == per * replicas - n  # exactly the padding repeats


def test_padding_repeats_the_head_as_torch():
    assert shards(10, 3, shuffle=False) == [[0, 3, 6, 9], [1, 4, 7, 0], [2, 5, 8, 1]]
    # more padding than data: the order repeats (torch's ceil(padding / n) copies)
    assert shards(2, 5, shuffle=False) == [[0], [1], [0], [1], [0]]


def test_drop_last_cuts_the_tail():
    got = shards(10, 4, shuffle=False, drop_last=True)
    assert got == [[0, 4], [1, 5], [2, 6], [3, 7]]
    assert len(DistributedSampler(list(range(10)), 4, 0, drop_last=True)) == 2
    assert shards(8, 4, shuffle=False, drop_last=True) == [[0, 4], [1, 5], [2, 6], [3, 7]]


def test_epoch_order_is_shared_deterministic_and_changes():
    ds = list(range(20))
    a = [DistributedSampler(ds, 2, r, seed=5) for r in range(2)]
    b = [DistributedSampler(ds, 2, r, seed=5) for r in range(2)]
    for s in a + b:
        s.set_epoch(3)
    e3 = [list(s) for s in a]
    assert e3 == [list(s) for s in b]  # same seed and epoch: same shards
    assert sorted(e3[0] + e3[1]) == ds  # the ranks share one permutation
    for s in a:
        s.set_epoch(4)
    assert [list(s) for s in a] != e3
    for s in a:
        s.set_epoch(3)
    assert [list(s) for s in a] == e3
    other = DistributedSampler(ds, 2, 0, seed=6)
    other.set_epoch(3)
    assert list(other) != e3[0]


def test_each_iteration_starts_the_next_epoch_like_ember_data():
    s = DistributedSampler(list(range(10)), 2, 0, seed=1)
    first, second = list(s), list(s)
    s.set_epoch(1)
    assert list(s) == second and first != second


def test_unpadded_shards_for_evaluation():
    ds = list(range(10))
    got = [list(UnpaddedDistributedSampler(ds, 4, r)) for r in range(4)]
    assert got == [[0, 4, 8], [1, 5, 9], [2, 6], [3, 7]]
    assert [len(UnpaddedDistributedSampler(ds, 4, r)) for r in range(4)] == [3, 3, 2, 2]
    assert [list(UnpaddedDistributedSampler(list(range(2)), 4, r)) for r in range(4)] == [
        [0],
        [1],
        [],
        [],
    ]


def test_bad_rank_and_replicas():
    with pytest.raises(ValueError, match=r"Invalid rank 2, rank should be in the interval"):
        DistributedSampler([1, 2], 2, 2)
    with pytest.raises(ValueError, match="num_replicas should be a positive integer"):
        DistributedSampler([1, 2], 0, 0)


def test_defaults_from_the_world_communicator():
    s = DistributedSampler(list(range(5)))
    assert (s.num_replicas, s.rank) == (1, 0)
    assert sorted(s) == list(range(5))


# ------------------------------------------------------------------ resume
def _take(sampler, k):
    it = iter(sampler)
    return [next(it) for _ in range(k)]


def test_state_dict_resumes_mid_epoch_same_world_size():
    ds = list(range(17))
    full = [list(DistributedSampler(ds, 2, r, seed=9)) for r in range(2)]
    states = []
    for r in range(2):
        s = DistributedSampler(ds, 2, r, seed=9)
        _take(s, 4)
        states.append(json.loads(json.dumps(s.state_dict())))  # JSON round trip
    for r in range(2):
        s = DistributedSampler(ds, 2, r, seed=9)
        s.load_state_dict(states[r])
        assert list(s) == full[r][4:]


@pytest.mark.parametrize("old,new", [(4, 2), (2, 4), (4, 1), (3, 2)])
def test_resume_under_another_world_size_continues_the_global_order(old, new):
    ds = list(range(23))
    perm = list(DistributedSampler(ds, 1, 0, seed=2))  # the epoch's global order
    k = 2  # every old rank had taken 2 samples
    states = []
    for r in range(old):
        s = DistributedSampler(ds, old, r, seed=2)
        _take(s, k)
        states.append(s.state_dict())
    rest = []
    for r in range(new):
        s = DistributedSampler(ds, new, r, seed=2)
        s.load_state_dict(states[0])
        rest.append(list(s))
        assert len(s) == len(rest[-1])
    seen = set(sum(rest, []))
    assert seen == set(perm[k * old :])  # exactly what no old rank had consumed
    # the next epoch is whole again
    s = DistributedSampler(ds, new, 0, seed=2)
    s.load_state_dict(states[0])
    list(s)
    assert len(list(s)) == math.ceil(23 / new)


def test_fold_loader_state_moves_batches_into_the_sampler():
    ds = TensorDataset(ember.arange(20, dtype=ember.float32))
    loaders = [
        DataLoader(ds, batch_size=2, sampler=DistributedSampler(ds, 4, r, seed=1)) for r in range(4)
    ]
    its = [iter(dl) for dl in loaders]
    for it in its:
        next(it)  # one batch of 2 on each of the 4 ranks: 8 samples consumed
    state = loaders[0].state_dict()
    assert state["batches_consumed"] == 1
    folded = fold_loader_state(state, batch_size=2)
    assert folded["batches_consumed"] == 0
    assert folded["sampler"]["sampler"]["yielded"] == 2
    assert state["batches_consumed"] == 1  # the input is not modified
    consumed = {int(v) for it_dl in loaders for v in _first_batch(it_dl)}
    rest = set()
    for r in range(2):
        dl = DataLoader(ds, batch_size=2, sampler=DistributedSampler(ds, 2, r, seed=1))
        dl.load_state_dict(folded)
        rest |= {int(v) for (b,) in dl for v in b.tolist()}
    assert rest == set(range(20)) - consumed


def _first_batch(loader):
    fresh = DataLoader(
        loader.dataset,
        batch_size=2,
        sampler=DistributedSampler(loader.dataset, 4, loader.sampler.rank, seed=1),
    )
    (b,) = next(iter(fresh))
    return b.tolist()
