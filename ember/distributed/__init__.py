"""``ember.distributed``: strategies, and MPI data parallelism (issue 7).

Importing this package is cheap and never imports mpi4py: the MPI pieces load on first use
(``ember.distributed.DistributedDataParallel`` etc. resolve lazily), and mpi4py is imported
only when ``world()`` finds an MPI launcher.
"""

from ember.distributed.strategy import SingleDeviceStrategy, Strategy

__all__ = [
    "Strategy",
    "SingleDeviceStrategy",
    "DDPStrategy",
    "strategy_for",
    "DistributedDataParallel",
    "DistributedSampler",
    "UnpaddedDistributedSampler",
    "SyncBatchNorm",
    "convert_sync_batchnorm",
    "Communicator",
    "LocalCommunicator",
    "world",
    "launched_under_mpi",
    "abort_on_exception",
    "install_excepthook",
]

_LAZY = {
    "DDPStrategy": "ddp_strategy",
    "strategy_for": "ddp_strategy",
    "DistributedDataParallel": "ddp",
    "DistributedSampler": "sampler",
    "UnpaddedDistributedSampler": "sampler",
    "SyncBatchNorm": "sync_batchnorm",
    "convert_sync_batchnorm": "sync_batchnorm",
    "Communicator": "comm",
    "LocalCommunicator": "comm",
    "world": "comm",
    "launched_under_mpi": "comm",
    "abort_on_exception": "failure",
    "install_excepthook": "failure",
}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ember.distributed' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"ember.distributed.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
