"""ember.data: datasets, samplers, DataLoader, collate, transforms and dataset downloads.

Names load on first use (PEP 562), so ``import ember`` (which needs only ``seed_everything``)
does not pay for multiprocessing, tarfile or urllib.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Dataset": "dataset",
    "IterableDataset": "dataset",
    "TensorDataset": "dataset",
    "ConcatDataset": "dataset",
    "ChainDataset": "dataset",
    "Subset": "dataset",
    "random_split": "dataset",
    "Sampler": "sampler",
    "SequentialSampler": "sampler",
    "RandomSampler": "sampler",
    "SubsetRandomSampler": "sampler",
    "WeightedRandomSampler": "sampler",
    "BatchSampler": "sampler",
    "DataLoader": "dataloader",
    "default_collate": "collate",
    "default_convert": "collate",
    "get_worker_info": "workers",
    "WorkerInfo": "workers",
    "seed_everything": "seed",
}
_SUBMODULES = ("datasets", "transforms")

__all__ = sorted(_EXPORTS) + list(_SUBMODULES)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"ember.data.{_EXPORTS[name]}"), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"ember.data.{name}")
    else:
        raise AttributeError(f"module 'ember.data' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(__all__))
