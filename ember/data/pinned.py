"""``DataLoader(pin_memory=True)``: batches in page-locked host memory.

A pinned batch uploads with ``tensor.to("cuda", non_blocking=True)`` as an asynchronous copy on
the device's side stream (``ember.tensor.backend.to_backend``), so the next batch travels while
the current step computes. The Trainer's ``transfer_batch_to_device`` asks for exactly that.
Without CUDA there is no pinned memory: pinning is inert and the loader says so once.
"""

from __future__ import annotations

import warnings

import numpy as np

from ember.tensor.backend import cuda_is_available, pin_array
from ember.tensor.tensor import Tensor


def pin_memory(batch):
    """The (nested) batch with every CPU Tensor and NumPy array copied into pinned memory."""
    if isinstance(batch, Tensor):
        return batch.pin_memory() if batch.device.type == "cpu" else batch
    if type(batch) is np.ndarray:
        return pin_array(batch)
    if isinstance(batch, dict):
        return type(batch)({k: pin_memory(v) for k, v in batch.items()})
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(pin_memory(v) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(pin_memory(v) for v in batch)
    fn = getattr(batch, "pin_memory", None)  # custom batch types, as in torch
    return fn() if callable(fn) else batch


def pinning_enabled(loader) -> bool:
    """Whether this loader pins: asked for, and a CUDA device to pin for (else warn once)."""
    if not loader.pin_memory:
        return False
    if cuda_is_available():
        return True
    if not getattr(loader, "_warned_pin", False):
        loader._warned_pin = True
        warnings.warn(
            "DataLoader(pin_memory=True) but CUDA is not available: pinned memory is not used",
            UserWarning,
            stacklevel=3,
        )
    return False
