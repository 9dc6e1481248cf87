"""Fetchers: turn one task (a list of indices, or "the next batch") into a batch.

The same code runs in the main process (num_workers=0) and in every worker.
"""

from __future__ import annotations

import itertools

from ember.data.collate import default_collate


class MapFetcher:
    """Batches of a map-style dataset: ``collate_fn([dataset[i] for i in indices])``."""

    def __init__(self, dataset, auto_collation: bool, collate_fn) -> None:
        self.dataset = dataset
        self.auto_collation = auto_collation
        self.collate_fn = collate_fn

    def fetch(self, indices):
        if not self.auto_collation:
            return self.collate_fn(self.dataset[indices])
        if self.collate_fn is default_collate:
            batched = getattr(self.dataset, "_batched_getitems", None)
            if batched is not None:
                return batched(indices)
        many = getattr(self.dataset, "__getitems__", None)
        samples = many(indices) if many is not None else [self.dataset[i] for i in indices]
        return self.collate_fn(samples)


class IterableFetcher:
    """Batches of an iterable dataset; StopIteration when the stream (or a full batch) ends."""

    def __init__(
        self, dataset, auto_collation: bool, collate_fn, drop_last: bool, batch_size: int | None
    ) -> None:
        self.iterator = iter(dataset)
        self.auto_collation = auto_collation
        self.collate_fn = collate_fn
        self.drop_last = drop_last
        self.batch_size = batch_size
        self.ended = False

    def fetch(self, _task=None):
        if self.ended:
            raise StopIteration
        if not self.auto_collation:
            try:
                return self.collate_fn(next(self.iterator))
            except StopIteration:
                self.ended = True
                raise
        batch = list(itertools.islice(self.iterator, self.batch_size))
        if len(batch) < self.batch_size:
            self.ended = True
        if not batch or (self.drop_last and len(batch) < self.batch_size):
            raise StopIteration
        return self.collate_fn(batch)


def make_fetcher(
    dataset, iterable: bool, auto_collation: bool, collate_fn, drop_last: bool, batch_size
):
    if iterable:
        return IterableFetcher(dataset, auto_collation, collate_fn, drop_last, batch_size)
    return MapFetcher(dataset, auto_collation, collate_fn)
