"""Samplers: orders, lengths, seeding, epochs, errors and state_dict resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

import ember
from ember.data import (
    BatchSampler,
    RandomSampler,
    SequentialSampler,
    SubsetRandomSampler,
    WeightedRandomSampler,
)

DATA = list(range(10))


def test_sequential():
    s = SequentialSampler(DATA)
    assert list(s) == DATA and len(s) == 10
    assert list(s) == DATA  # every epoch


def test_random_sampler_is_a_permutation_and_new_each_epoch():
    s = RandomSampler(DATA)
    e0, e1 = list(s), list(s)
    assert sorted(e0) == DATA and sorted(e1) == DATA
    assert e0 != e1  # a new order per epoch (10! orders: equal by chance ~3e-7)
    assert all(type(i) is int for i in e0)


def test_random_sampler_seeded_by_manual_seed_and_epoch():
    ember.manual_seed(123)
    a = RandomSampler(DATA)
    orders = [list(a) for _ in range(3)]
    ember.manual_seed(123)
    b = RandomSampler(DATA)
    assert [list(b) for _ in range(3)] == orders
    ember.manual_seed(124)
    assert list(RandomSampler(DATA)) != orders[0]
    # set_epoch picks an epoch's order directly
    b.set_epoch(1)
    assert list(b) == orders[1]
    b.set_epoch(0)
    assert list(b) == orders[0]


def test_random_sampler_generator_argument():
    g1, g2 = ember.Generator().manual_seed(5), ember.Generator().manual_seed(5)
    assert list(RandomSampler(DATA, generator=g1)) == list(RandomSampler(DATA, generator=g2))


def test_random_sampler_num_samples_and_replacement():
    s = RandomSampler(DATA, num_samples=25)
    out = list(s)
    assert len(out) == 25 == len(s)
    assert sorted(out[:10]) == DATA and sorted(out[10:20]) == DATA  # whole permutations first
    assert len(set(out[20:])) == 5
    r = RandomSampler(DATA, replacement=True, num_samples=1000)
    out = list(r)
    assert len(out) == 1000 and set(out) == set(DATA)
    counts = np.bincount(out, minlength=10)
    assert counts.min() > 60  # uniform: 100 expected per value


def test_random_sampler_errors():
    with pytest.raises(
        TypeError, match="replacement should be a boolean value, but got replacement=1"
    ):
        RandomSampler(DATA, replacement=1)
    with pytest.raises(
        ValueError, match="num_samples should be a positive integer value, but got num_samples=0"
    ):
        RandomSampler(DATA, num_samples=0)
    with pytest.raises(ValueError, match="num_samples=0"):
        RandomSampler([])


def test_subset_random_sampler():
    idx = [3, 7, 11, 19]
    s = SubsetRandomSampler(idx)
    out = list(s)
    assert sorted(out) == idx and len(s) == 4
    s2 = SubsetRandomSampler(ember.tensor(idx), generator=ember.Generator().manual_seed(1))
    assert sorted(s2) == idx


def test_weighted_random_sampler_follows_the_weights():
    w = [0.0, 1.0, 3.0]
    s = WeightedRandomSampler(w, num_samples=4000, generator=ember.Generator().manual_seed(0))
    counts = np.bincount(list(s), minlength=3)
    assert counts[0] == 0 and len(s) == 4000
    assert abs(counts[2] / counts[1] - 3.0) < 0.4
    no_rep = list(WeightedRandomSampler([1.0, 1.0, 5.0, 0.0], 3, replacement=False))
    assert sorted(no_rep) == [0, 1, 2]


def test_weighted_random_sampler_errors():
    with pytest.raises(
        ValueError,
        match=r"weights should be a 1d sequence but given weights "
        r"have shape \(2, 2\)",
    ):
        WeightedRandomSampler([[1.0, 2.0], [3.0, 4.0]], 2)
    with pytest.raises(ValueError, match="num_samples should be a positive integer"):
        WeightedRandomSampler([1.0], 0)
    with pytest.raises(TypeError, match="replacement should be a boolean"):
        WeightedRandomSampler([1.0], 1, replacement="yes")
    with pytest.raises(ValueError, match="non-negative"):
        WeightedRandomSampler([1.0, -1.0], 1)
    with pytest.raises(RuntimeError, match="without replacement"):
        WeightedRandomSampler([1.0, 0.0], 2, replacement=False)


@pytest.mark.parametrize(
    "drop_last, expected",
    [
        (False, [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]),
        (True, [[0, 1, 2], [3, 4, 5], [6, 7, 8]]),
    ],
)
def test_batch_sampler(drop_last, expected):
    b = BatchSampler(SequentialSampler(DATA), 3, drop_last)
    assert list(b) == expected and len(b) == len(expected)


def test_batch_sampler_matches_torch():
    torch = pytest.importorskip("torch")
    for n, bs, drop in [(10, 3, False), (10, 3, True), (9, 3, True), (1, 4, False)]:
        mine = list(BatchSampler(range(n), bs, drop))
        ref = list(torch.utils.data.BatchSampler(range(n), bs, drop))
        assert mine == ref
        assert len(BatchSampler(SequentialSampler(range(n)), bs, drop)) == len(
            torch.utils.data.BatchSampler(range(n), bs, drop)
        )


def test_batch_sampler_errors():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(
            ValueError,
            match=f"batch_size should be a positive integer value, but got batch_size={bad}",
        ):
            BatchSampler(DATA, bad, False)
    with pytest.raises(
        ValueError, match="drop_last should be a boolean value, but got drop_last=1"
    ):
        BatchSampler(DATA, 2, 1)


@pytest.mark.parametrize(
    "make",
    [
        lambda: SequentialSampler(DATA),
        lambda: RandomSampler(DATA),
        lambda: RandomSampler(DATA, replacement=True, num_samples=13),
        lambda: SubsetRandomSampler([2, 4, 6, 8, 10, 12]),
        lambda: WeightedRandomSampler([1.0, 2.0, 3.0, 4.0], 9),
    ],
)
def test_sampler_state_dict_resumes_mid_epoch_and_across_epochs(make):
    ember.manual_seed(42)
    ref = make()
    full = [list(ref) for _ in range(3)]

    ember.manual_seed(42)
    s = make()
    assert list(s) == full[0]
    it = iter(s)
    head = [next(it) for _ in range(4)]
    state = json.loads(json.dumps(s.state_dict()))  # JSON round trip: plain ints only

    ember.manual_seed(999)  # the resumed run does not depend on the global RNG
    r = make()
    r.load_state_dict(state)
    assert head + list(r) == full[1]
    assert list(r) == full[2]


def test_sampler_state_after_a_complete_epoch_starts_the_next():
    ember.manual_seed(1)
    ref = RandomSampler(DATA)
    e0, e1 = list(ref), list(ref)
    ember.manual_seed(1)
    s = RandomSampler(DATA)
    assert list(s) == e0
    r = RandomSampler(DATA)
    r.load_state_dict(s.state_dict())
    assert list(r) == e1


def test_batch_sampler_state_dict_resume():
    ember.manual_seed(3)
    ref = BatchSampler(RandomSampler(DATA), 3, False)
    full = list(ref)
    ember.manual_seed(3)
    b = BatchSampler(RandomSampler(DATA), 3, False)
    it = iter(b)
    first = [next(it), next(it)]
    state = json.loads(json.dumps(b.state_dict()))
    r = BatchSampler(RandomSampler(DATA), 3, False)
    r.load_state_dict(state)
    assert first + list(r) == full
