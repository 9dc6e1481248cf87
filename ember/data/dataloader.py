"""DataLoader: batches from a dataset, in order, optionally loaded by worker processes.

Resume: the loader records, for the epoch in progress, the sampler state that reproduces the
epoch (taken right after ``iter(sampler)``), the worker seed and how many batches were handed
out. ``load_state_dict`` restores the sampler and the next ``iter()`` skips those batches'
indices without loading them, so it yields exactly the batches an uninterrupted run would
have yielded next. The state is plain ints, lists and dicts (JSON), no pickle.
"""

from __future__ import annotations

import copy
import itertools
import multiprocessing
import sys
import time
import weakref

import numpy as np

from ember.data.collate import default_collate, default_convert
from ember.data.dataset import IterableDataset
from ember.data.fetch import make_fetcher
from ember.data.pinned import pin_memory, pinning_enabled
from ember.data.sampler import BatchSampler, RandomSampler, Sampler, SequentialSampler
from ember.data.workers import (
    POLL_S,
    ProcessPool,
    ThreadPool,
    WorkerDiedError,
    batch_seed,
    raise_worker_error,
)
from ember.tensor.random import rng_of

__all__ = ["DataLoader"]

_STATE_VERSION = 1


class _InfiniteConstantSampler(Sampler):
    """The index stream of an iterable dataset: one ``None`` per batch, forever."""

    def __iter__(self):
        return itertools.repeat(None)


class _Progress:
    """Where the current epoch stands; the loader keeps it, iterators update it."""

    __slots__ = ("sampler", "consumed", "worker_seed", "finished")

    def __init__(self, sampler, consumed: int, worker_seed: int) -> None:
        self.sampler = sampler
        self.consumed = consumed
        self.worker_seed = worker_seed
        self.finished = False


def _state_of(sampler):
    fn = getattr(sampler, "state_dict", None)
    return fn() if fn is not None else None


def _mp_context(spec):
    if spec == "thread":
        return "thread"
    if spec is None:
        fork = "fork" in multiprocessing.get_all_start_methods() and sys.platform == "linux"
        return multiprocessing.get_context("fork" if fork else None)
    if isinstance(spec, str):
        return multiprocessing.get_context(spec)
    return spec


class DataLoader:
    """Iterate over ``dataset`` in batches (torch.utils.data.DataLoader's arguments).

    ``num_workers > 0`` loads batches in worker processes (fork where available; pass
    ``multiprocessing_context="thread"`` for threads). ``pin_memory`` copies each batch into
    page-locked host memory (in this process, after the workers), so ``to("cuda",
    non_blocking=True)`` uploads it asynchronously; without CUDA it is inert (see pinned.py).
    """

    def __init__(
        self,
        dataset,
        batch_size: int | None = 1,
        shuffle: bool | None = None,
        sampler=None,
        batch_sampler=None,
        num_workers: int = 0,
        collate_fn=None,
        pin_memory: bool = False,
        drop_last: bool = False,
        timeout: float = 0,
        worker_init_fn=None,
        multiprocessing_context=None,
        generator=None,
        *,
        prefetch_factor: int | None = None,
        persistent_workers: bool = False,
        pin_memory_device: str = "",
    ) -> None:
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(
                "num_workers option should be non-negative; use num_workers=0 to "
                "disable multiprocessing."
            )
        if timeout < 0:
            raise ValueError("timeout option should be non-negative")
        if num_workers == 0 and prefetch_factor is not None:
            raise ValueError(
                "prefetch_factor option could only be specified in "
                "multiprocessing. let num_workers > 0 to enable multiprocessing, "
                "otherwise set prefetch_factor to None."
            )
        if num_workers > 0 and prefetch_factor is None:
            prefetch_factor = 2
        if prefetch_factor is not None and prefetch_factor <= 0:
            raise ValueError(f"prefetch_factor should be a positive integer, got {prefetch_factor}")
        if persistent_workers and num_workers == 0:
            raise ValueError("persistent_workers option needs num_workers > 0")
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0
        ):
            raise ValueError(
                f"DataLoader: batch_size should be a positive integer value, but "
                f"got batch_size={batch_size}"
            )
        iterable = isinstance(dataset, IterableDataset)
        if iterable:
            if shuffle not in (False, None):
                raise ValueError(
                    f"DataLoader with IterableDataset: expected unspecified "
                    f"shuffle option, but got shuffle={shuffle}"
                )
            if sampler is not None:
                raise ValueError(
                    f"DataLoader with IterableDataset: expected unspecified "
                    f"sampler option, but got sampler={sampler}"
                )
            if batch_sampler is not None:
                raise ValueError(
                    f"DataLoader with IterableDataset: expected unspecified "
                    f"batch_sampler option, but got batch_sampler={batch_sampler}"
                )
        elif hasattr(dataset, "__len__") and len(dataset) == 0:
            raise ValueError("DataLoader: the dataset is empty")
        if sampler is not None and shuffle:
            raise ValueError("sampler option is mutually exclusive with shuffle")
        if batch_sampler is not None:
            if batch_size != 1 or shuffle or sampler is not None or drop_last:
                raise ValueError(
                    "batch_sampler option is mutually exclusive with batch_size, "
                    "shuffle, sampler, and drop_last"
                )
            batch_size, drop_last = None, False
        elif batch_size is None and drop_last:
            raise ValueError(
                "batch_size=None option disables auto-batching and is mutually "
                "exclusive with drop_last"
            )
        if sampler is None:
            if iterable:
                sampler = _InfiniteConstantSampler()
            elif shuffle:
                sampler = RandomSampler(dataset, generator=generator)
            else:
                sampler = SequentialSampler(dataset)
        if batch_size is not None and batch_sampler is None:
            batch_sampler = BatchSampler(sampler, batch_size, drop_last)

        self.dataset = dataset
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.sampler = sampler
        self.batch_sampler = batch_sampler
        self.num_workers = num_workers
        self.collate_fn = (
            collate_fn
            if collate_fn is not None
            else (default_collate if batch_sampler is not None else default_convert)
        )
        self.pin_memory = pin_memory
        self.pin_memory_device = pin_memory_device
        self.timeout = timeout
        self.worker_init_fn = worker_init_fn
        self.multiprocessing_context = multiprocessing_context
        self.generator = generator
        self.prefetch_factor = prefetch_factor
        self.persistent_workers = persistent_workers
        self._iterable = iterable
        self._progress: _Progress | None = None
        self._pending: dict | None = None
        self._pool = None
        self._epochs = itertools.count()

    @property
    def _auto_collation(self) -> bool:
        return self.batch_sampler is not None

    @property
    def _index_sampler(self):
        return self.batch_sampler if self._auto_collation else self.sampler

    def __len__(self) -> int:
        if self._iterable:
            n = len(self.dataset)  # TypeError when the stream has no length, as in torch
            if self.batch_size is not None:
                n = n // self.batch_size if self.drop_last else -(-n // self.batch_size)
            return n
        return len(self._index_sampler)

    def __iter__(self):
        if self.num_workers == 0:
            return _SingleProcessIter(self)
        return _MultiWorkerIter(self)

    def _get_pool(self, seed: int):
        """The persistent pool, or a new one (workers get ``seed + worker id``)."""
        pool = self._pool
        if pool is not None and not pool.closed:
            return pool
        spec = (
            self._iterable,
            self._auto_collation,
            self.collate_fn,
            self.drop_last,
            self.batch_size,
        )
        seed = seed % (2**63 - self.num_workers)
        ctx = _mp_context(self.multiprocessing_context)
        if ctx == "thread":
            pool = ThreadPool(self.num_workers, self.dataset, spec, seed, self.worker_init_fn)
        else:
            pool = ProcessPool(ctx, self.num_workers, self.dataset, spec, seed, self.worker_init_fn)
        if self.persistent_workers:
            self._pool = pool
            weakref.finalize(self, pool.shutdown)
        return pool

    # ----------------------------------------------------------------- resume
    def state_dict(self) -> dict:
        """Where iteration stands: JSON-compatible (ints, lists, dicts, None)."""
        if self._pending is not None:
            return copy.deepcopy(self._pending)
        p = self._progress
        if p is None or p.finished:
            return {
                "version": _STATE_VERSION,
                "sampler": _state_of(self._index_sampler),
                "batches_consumed": 0,
                "worker_seed": None,
            }
        return {
            "version": _STATE_VERSION,
            "sampler": copy.deepcopy(p.sampler),
            "batches_consumed": p.consumed,
            "worker_seed": p.worker_seed,
        }

    def load_state_dict(self, state: dict) -> None:
        """Make the next ``iter()`` continue exactly where ``state`` was taken."""
        if state.get("version", _STATE_VERSION) != _STATE_VERSION:
            raise ValueError(
                f"DataLoader.load_state_dict: unknown state version {state.get('version')}"
            )
        sampler_state = state.get("sampler")
        consumed = int(state.get("batches_consumed", 0))
        loader_sampler = self._index_sampler
        if sampler_state is not None and hasattr(loader_sampler, "load_state_dict"):
            loader_sampler.load_state_dict(copy.deepcopy(sampler_state))
        self._progress = None
        self._pending = None
        if consumed and not self._iterable and consumed >= len(self):
            for _ in iter(loader_sampler):  # the epoch was complete: the next iter() is the
                pass  # next epoch, so run this one's indices out (no data is loaded)
            return
        if consumed or state.get("worker_seed") is not None:
            self._pending = {
                "version": _STATE_VERSION,
                "sampler": sampler_state,
                "batches_consumed": consumed,
                "worker_seed": state.get("worker_seed"),
            }


class _BaseIter:
    def __init__(self, loader: DataLoader) -> None:
        self._loader = loader
        self._pin = None  # decided at the first batch
        pending, loader._pending = loader._pending, None
        seed = pending.get("worker_seed") if pending else None
        if seed is None:  # drawn every epoch (as torch), workers or not
            seed = int(rng_of(loader.generator).integers(0, 2**63 - 1, dtype=np.int64))
        index_sampler = loader._index_sampler
        self._index_iter = iter(index_sampler)
        self._progress = _Progress(_state_of(index_sampler), 0, seed)
        loader._progress = self._progress
        self._discard = 0
        skip = pending["batches_consumed"] if pending else 0
        if skip and loader._iterable:
            self._discard = skip  # a stream cannot be skipped: fetch and drop
        elif skip:
            for _ in itertools.islice(self._index_iter, skip):
                pass
            self._progress.consumed = skip

    @property
    def worker_seed(self) -> int:
        return self._progress.worker_seed

    def _deliver(self, batch):
        if self._pin is None:
            self._pin = pinning_enabled(self._loader)
        return pin_memory(batch) if self._pin else batch

    def __iter__(self):
        return self

    def __len__(self) -> int:
        return len(self._loader)


class _SingleProcessIter(_BaseIter):
    def __init__(self, loader: DataLoader) -> None:
        super().__init__(loader)
        self._fetcher = make_fetcher(
            loader.dataset,
            loader._iterable,
            loader._auto_collation,
            loader.collate_fn,
            loader.drop_last,
            loader.batch_size,
        )

    def __next__(self):
        progress = self._progress
        while True:
            if progress.finished:
                raise StopIteration
            try:
                indices = next(self._index_iter)
                data = self._fetcher.fetch(indices)
            except StopIteration:
                progress.finished = True
                raise
            except BaseException:
                progress.consumed += 1  # the sampler moved past this batch
                raise
            progress.consumed += 1
            if self._discard:
                self._discard -= 1
                continue
            return self._deliver(data)


class _MultiWorkerIter(_BaseIter):
    def __init__(self, loader: DataLoader) -> None:
        super().__init__(loader)
        self._pool = pool = loader._get_pool(self.worker_seed)
        self._token = next(loader._epochs)
        self._active = [True] * loader.num_workers
        self._next_worker = 0
        self._send_idx = self._rcvd_idx = self._progress.consumed
        self._buffer: dict = {}
        self._index_done = False
        if not loader.persistent_workers:
            self._finalizer = weakref.finalize(self, pool.shutdown)
        for _ in range(loader.prefetch_factor * loader.num_workers):
            if not self._try_put():
                break

    def _try_put(self) -> bool:
        if self._index_done or not any(self._active):
            return False
        try:
            indices = next(self._index_iter)
        except StopIteration:
            self._index_done = True
            return False
        n = len(self._active)
        while not self._active[self._next_worker]:
            self._next_worker = (self._next_worker + 1) % n
        wid, self._next_worker = self._next_worker, (self._next_worker + 1) % n
        idx = self._send_idx
        self._pool.put(wid, (self._token, idx, indices, batch_seed(self.worker_seed, idx)))
        self._send_idx += 1
        return True

    def __next__(self):
        progress = self._progress
        while True:
            if progress.finished:
                raise StopIteration
            if self._rcvd_idx < self._send_idx:
                idx = self._rcvd_idx
                if idx not in self._buffer:
                    self._receive()
                    continue
                kind, payload = self._buffer.pop(idx)
                self._rcvd_idx += 1
                self._try_put()
                if kind == "stop":  # that worker's stream has ended
                    continue
                progress.consumed += 1
                if kind == "error":
                    raise_worker_error(payload, self._pool.mode)
                if self._discard:
                    self._discard -= 1
                    continue
                return self._deliver(payload)
            if not self._try_put():
                self._end()
                raise StopIteration

    def _receive(self) -> None:
        timeout = self._loader.timeout
        start = time.monotonic()
        while True:
            wait = (
                POLL_S
                if timeout <= 0
                else max(0.0, min(POLL_S, timeout - (time.monotonic() - start)))
            )
            try:
                messages = self._pool.poll(wait)
            except WorkerDiedError:
                self._progress.finished = True
                raise
            got = False
            for wid, (kind, token, idx, payload) in messages:
                if token != self._token:
                    continue  # a result for an earlier, abandoned epoch (persistent workers)
                if kind == "stop":
                    self._active[wid] = False
                self._buffer[idx] = (kind, payload)
                got = True
            if got:
                return
            if timeout > 0 and time.monotonic() - start >= timeout:
                self._end(grace=0.2)
                raise RuntimeError(f"DataLoader timed out after {timeout} seconds")

    def _end(self, grace: float | None = None) -> None:
        self._progress.finished = True
        if not self._loader.persistent_workers:
            self._pool.shutdown() if grace is None else self._pool.shutdown(grace)
