"""Ember: a deep-learning framework on NumPy (and CuPy), with PyTorch's names and semantics."""

from __future__ import annotations

from ember import autograd as autograd
from ember import ops as _ops
from ember.autograd import (
    enable_grad,
    inference_mode,
    is_grad_enabled,
    no_grad,
    set_grad_enabled,
)
from ember.data.seed import seed_everything
from ember.tensor import *  # noqa: F403
from ember.tensor import __all__ as _tensor_all
from ember.tensor import random as _random
from ember.tensor.serialization import load, save
from ember.tensor.tensor import Tensor

__version__ = "0.1.0"

globals().update(_ops.FUNCTIONS)

_RANDOM_METHODS = ("normal_", "uniform_", "random_", "bernoulli_", "exponential_")
for _name in _RANDOM_METHODS:
    setattr(Tensor, _name, getattr(_random, _name))


def is_tensor(obj) -> bool:
    return isinstance(obj, Tensor)


def numel(t: Tensor) -> int:
    return t.numel()


__all__ = (
    list(_tensor_all)
    + sorted(_ops.FUNCTIONS)
    + [
        "autograd",
        "no_grad",
        "enable_grad",
        "inference_mode",
        "set_grad_enabled",
        "is_grad_enabled",
        "is_tensor",
        "numel",
        "save",
        "load",
        "__version__",
        "seed_everything",
    ]
)


_LAZY_SUBMODULES = (
    "nn",
    "optim",
    "amp",
    "data",
    "trainer",
    "callbacks",
    "loggers",
    "distributed",
)


def __getattr__(name: str):
    """``ember.nn``, ``ember.optim``... without importing them (and their costs) up front."""
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"ember.{name}")
    if name == "autocast":  # torch.autocast's spelling, without importing ember.amp up front
        from ember.amp.autocast import autocast

        return autocast
    raise AttributeError(f"module 'ember' has no attribute {name!r}")
