"""``ember.distributed``: strategies (single device now; MPI data parallelism in issue 7)."""

from ember.distributed.strategy import SingleDeviceStrategy, Strategy

__all__ = ["Strategy", "SingleDeviceStrategy"]
