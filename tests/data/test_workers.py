"""DataLoader workers: same batches as num_workers=0, errors, timeouts, cleanup, speed-up."""

from __future__ import annotations

import gc
import json
import os
import pathlib
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import ember
from ember.data import DataLoader, Dataset, IterableDataset, TensorDataset, get_worker_info

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODES = [None, "thread"]  # None: processes (fork on Linux)


class Numbers(Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return np.full(3, i, np.float32), i


class Augmented(Numbers):
    """Random noise drawn in __getitem__ from NumPy's and ember's global RNGs."""

    def __getitem__(self, i):
        return np.float32(i + np.random.rand()), float(ember.rand(1).item())


class Sleepy(Numbers):
    def __getitem__(self, i):
        time.sleep(0.01)
        return np.float32(i)


class Pid(Numbers):
    def __getitem__(self, i):
        return os.getpid()


class BoomError(Exception):
    pass


class Exploding(Numbers):
    def __init__(self, n, bad, exc=ValueError):
        super().__init__(n)
        self.bad, self.exc = bad, exc

    def __getitem__(self, i):
        if i == self.bad:
            raise self.exc(f"boom at {i}")
        return super().__getitem__(i)


class Sharded(IterableDataset):
    def __init__(self, n):
        self.n = n

    def __iter__(self):
        info = get_worker_info()
        start, step = (0, 1) if info is None else (info.id, info.num_workers)
        return iter(range(start, self.n, step))


def batches(loader):
    return [
        [b.data.tolist() if isinstance(b, ember.Tensor) else b for b in batch] for batch in loader
    ]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_workers_give_the_same_batches_in_the_same_order(mode, workers):
    for ds in (Numbers(23), TensorDataset(ember.arange(23.0).reshape(23, 1), ember.arange(23))):
        for shuffle, drop_last in [(False, False), (True, True)]:
            ember.manual_seed(0)
            ref = DataLoader(ds, batch_size=4, shuffle=shuffle, drop_last=drop_last)
            expected = [batches(ref), batches(ref)]
            ember.manual_seed(0)
            dl = DataLoader(
                ds,
                batch_size=4,
                shuffle=shuffle,
                drop_last=drop_last,
                num_workers=workers,
                multiprocessing_context=mode,
            )
            assert [batches(dl), batches(dl)] == expected


def test_workers_with_batch_size_none_and_prefetch():
    ref = batches(DataLoader(Numbers(7), batch_size=None))
    assert batches(DataLoader(Numbers(7), batch_size=None, num_workers=2, prefetch_factor=1)) == ref
    assert batches(
        DataLoader(Numbers(7), batch_size=2, num_workers=2, prefetch_factor=5)
    ) == batches(DataLoader(Numbers(7), batch_size=2))


@pytest.mark.parametrize("mode", MODES)
def test_iterable_dataset_sharded_across_workers(mode):
    dl = DataLoader(Sharded(20), batch_size=3, num_workers=3, multiprocessing_context=mode)
    got = sorted(v for b in dl for v in b.data.tolist())
    assert got == list(range(20))
    assert sorted(
        int(v)
        for v in DataLoader(
            Sharded(5), batch_size=None, num_workers=2, multiprocessing_context=mode
        )
    ) == list(range(5))


@pytest.mark.parametrize("mode", MODES)
def test_worker_exception_propagates_with_the_worker_traceback(mode):
    dl = DataLoader(Exploding(12, bad=5), batch_size=2, num_workers=2, multiprocessing_context=mode)
    it = iter(dl)
    assert next(it)[1].data.tolist() == [0, 1]
    assert next(it)[1].data.tolist() == [2, 3]
    with pytest.raises(ValueError) as info:
        next(it)
    text = str(info.value)
    assert "Caught ValueError in DataLoader worker" in text
    assert "Traceback" in text and "__getitem__" in text and "boom at 5" in text
    assert next(it)[1].data.tolist() == [6, 7]  # and the loader goes on, as torch's does


def test_worker_exception_keeps_its_type_or_falls_back_to_runtime_error():
    dl = DataLoader(Exploding(4, bad=1, exc=BoomError), batch_size=2, num_workers=1)
    with pytest.raises(BoomError, match="boom at 1"):
        list(dl)

    class LocalError(Exception):  # not importable by name: comes back as RuntimeError
        pass

    dl = DataLoader(Exploding(4, bad=1, exc=LocalError), batch_size=2, num_workers=1)
    with pytest.raises(RuntimeError, match="(?s)Caught .*LocalError.*boom at 1"):
        list(dl)
    dl = DataLoader(Exploding(4, bad=0, exc=KeyError), batch_size=2, num_workers=1)
    with pytest.raises(KeyError, match="boom at 0"):
        list(dl)


def test_unpicklable_batch_is_a_clear_error_not_a_hang():
    dl = DataLoader(
        Numbers(4), batch_size=2, num_workers=1, timeout=20, collate_fn=lambda b: lambda: b
    )
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="could not send batch 0"):
        list(dl)
    assert time.monotonic() - start < 10


def test_worker_init_error_is_reported():
    def init(worker_id):
        raise OSError(f"cannot init {worker_id}")

    dl = DataLoader(Numbers(4), batch_size=2, num_workers=1, worker_init_fn=init)
    with pytest.raises(OSError, match="cannot init 0"):
        list(dl)


def test_dead_worker_is_detected():
    class Dies(Numbers):
        def __getitem__(self, i):
            os._exit(3)

    dl = DataLoader(Dies(4), batch_size=2, num_workers=1)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"exited unexpectedly with exit code 3"):
        list(dl)
    assert time.monotonic() - start < 10


@pytest.mark.parametrize("mode", MODES)
def test_timeout(mode):
    class Stuck(Numbers):
        def __getitem__(self, i):
            time.sleep(1.5)
            return i

    dl = DataLoader(
        Stuck(2), batch_size=1, num_workers=1, timeout=0.2, multiprocessing_context=mode
    )
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="DataLoader timed out after 0.2 seconds"):
        next(iter(dl))
    assert time.monotonic() - start < 5


def test_worker_info_and_init_fn():
    assert get_worker_info() is None

    class Info(Numbers):
        def __getitem__(self, i):
            info = get_worker_info()
            return info.id, info.num_workers, os.environ.get("EMBER_TEST_INIT")

    def init(worker_id):
        os.environ["EMBER_TEST_INIT"] = f"w{worker_id}"

    out = [
        tuple(x)
        for b in DataLoader(Info(6), batch_size=None, num_workers=2, worker_init_fn=init)
        for x in [b]
    ]
    assert sorted(set(out)) == [(0, 2, "w0"), (1, 2, "w1")]
    assert "EMBER_TEST_INIT" not in os.environ  # ran in the workers, not here


def test_random_augmentation_in_workers_is_seeded_and_survives_resume():
    def run(seed):
        ember.manual_seed(seed)
        return batches(DataLoader(Augmented(10), batch_size=2, num_workers=2))

    a = run(1)
    assert a == run(1) and a != run(2)

    ember.manual_seed(7)
    full = batches(DataLoader(Augmented(10), batch_size=2, num_workers=2, shuffle=True))
    ember.manual_seed(7)
    dl = DataLoader(Augmented(10), batch_size=2, num_workers=2, shuffle=True)
    it = iter(dl)
    head = [batches([next(it)])[0] for _ in range(2)]
    state = json.loads(json.dumps(dl.state_dict()))
    del it
    r = DataLoader(Augmented(10), batch_size=2, num_workers=3, shuffle=True)
    r.load_state_dict(state)
    assert head + batches(r) == full  # other worker count, same batches


def test_resume_mid_epoch_with_persistent_workers():
    def make():
        return DataLoader(
            Numbers(17), batch_size=3, shuffle=True, num_workers=2, persistent_workers=True
        )

    ember.manual_seed(4)
    ref = make()
    full = [batches(ref), batches(ref)]
    ember.manual_seed(4)
    dl = make()
    it = iter(dl)
    head = [batches([next(it)])[0] for _ in range(4)]
    state = json.loads(json.dumps(dl.state_dict()))
    r = make()
    r.load_state_dict(state)
    assert head + batches(r) == full[0] and batches(r) == full[1]


def test_persistent_workers_are_reused_and_survive_an_abandoned_epoch():
    dl = DataLoader(Pid(8), batch_size=2, num_workers=2, persistent_workers=True)
    pids1 = {p for b in dl for p in b.data.tolist()}
    it = iter(dl)
    next(it)  # abandon this epoch mid-way
    pids2 = {p for b in dl for p in b.data.tolist()}
    assert pids1 == pids2 and len(pids1) == 2 and os.getpid() not in pids1
    assert len(list(dl)) == 4


def test_abandoned_iterator_shuts_its_workers_down():
    dl = DataLoader(Numbers(40), batch_size=2, num_workers=2)
    it = iter(dl)
    next(it)
    procs = list(it._pool.procs)
    assert all(p.is_alive() for p in procs)
    del it
    gc.collect()
    deadline = time.monotonic() + 10
    while any(p.is_alive() for p in procs) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(p.is_alive() for p in procs)


class Interval(Dataset):
    """Each item sleeps 50 ms and returns when it started and ended (wall clock)."""

    def __len__(self):
        return 8

    def __getitem__(self, i):
        start = time.time()
        time.sleep(0.05)
        return np.array([start, time.time()])


def test_workers_load_batches_concurrently():
    """Workers overlap: while one sleeps in __getitem__ another is already loading (the speed
    itself is measured by the data benchmark, not here)."""
    for mode in (None, "thread"):
        kw = {} if mode is None else {"multiprocessing_context": mode}
        spans = [
            row
            for b in DataLoader(Interval(), batch_size=2, num_workers=4, **kw)
            for row in b.numpy().tolist()
        ]
        assert len(spans) == 8
        overlaps = sum(
            1
            for i, (s0, e0) in enumerate(spans)
            for s1, e1 in spans[i + 1 :]
            if s1 < e0 and s0 < e1
        )
        assert overlaps >= 1, (mode, spans)


SCRIPT = textwrap.dedent("""
    import sys, numpy as np
    from ember.data import DataLoader, Dataset

    class D(Dataset):
        def __len__(self):
            return 1000
        def __getitem__(self, i):
            return np.float32(i)

    it = iter(DataLoader(D(), batch_size=4, num_workers=2, {extra}))
    next(it)
    if sys.argv[1] == "raise":
        raise SystemExit("leaving with live workers")
    print("done")
""")


@pytest.mark.parametrize("how", ["exit", "raise"])
@pytest.mark.parametrize(
    "extra", ["", "persistent_workers=True", "multiprocessing_context='thread'"]
)
def test_no_hang_at_interpreter_exit(how, extra):
    res = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(extra=extra), how],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if how == "exit":
        assert res.returncode == 0 and res.stdout.strip() == "done", res.stderr
    else:
        assert res.returncode == 1 and "leaving with live workers" in res.stderr


@pytest.mark.parametrize("mode", MODES)
def test_iterable_dataset_whose_iter_fails_reports_the_error(mode):
    class Broken(IterableDataset):
        def __iter__(self):
            raise OSError("stream unavailable")

    dl = DataLoader(Broken(), batch_size=2, num_workers=2, multiprocessing_context=mode, timeout=20)
    with pytest.raises(OSError, match="stream unavailable"):
        next(iter(dl))


def test_resume_iterable_dataset_with_workers():
    full = batches(DataLoader(Sharded(20), batch_size=3, num_workers=2))
    dl = DataLoader(Sharded(20), batch_size=3, num_workers=2)
    it = iter(dl)
    head = [batches([next(it)])[0] for _ in range(3)]
    state = json.loads(json.dumps(dl.state_dict()))
    del it
    r = DataLoader(Sharded(20), batch_size=3, num_workers=2)
    r.load_state_dict(state)
    assert head + batches(r) == full
