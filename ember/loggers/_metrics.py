"""Metric values for loggers: name prefixes and the one place a value becomes a Python number.

The Trainer hands loggers floats, 0-d ember Tensors (possibly on the GPU) or NumPy scalars;
converting here, at write time, is the only device sync a logged value costs.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ember.tensor.tensor import Tensor

LOGGER_JOIN_CHAR = "-"


def add_prefix(metrics: Mapping, prefix: str, join_char: str = LOGGER_JOIN_CHAR) -> dict:
    """``{"loss": 1}`` with prefix ``"train"`` -> ``{"train-loss": 1}`` (Lightning's rule)."""
    if not prefix:
        return dict(metrics)
    return {f"{prefix}{join_char}{k}": v for k, v in metrics.items()}


def to_scalar(value, key: str, owner: str):
    """A Python int/float from a number, a one-element Tensor/array or a NumPy scalar."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, Tensor):
        shape, size = tuple(value.shape), value.numel()
        if size == 1:
            return value.item()
    elif isinstance(value, (np.ndarray, np.generic)) or (
        hasattr(value, "shape") and hasattr(value, "item")
    ):
        shape, size = tuple(value.shape), int(np.prod(value.shape))
        if size == 1:
            out = value.item()
            return int(out) if isinstance(out, bool) else out
    else:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"{owner}.log_metrics: metric '{key}' must be a number or a one-element "
                f"tensor, got {type(value).__name__}"
            ) from None
    raise ValueError(
        f"{owner}.log_metrics: metric '{key}' must be a scalar, got a tensor of shape {shape}"
    )
