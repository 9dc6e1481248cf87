"""The layer modules, one file per family (each exports ``__all__``)."""

from __future__ import annotations

import importlib

FAMILIES = ("activation", "linear", "conv", "pooling", "normalization", "dropout", "sparse",
            "loss", "attention", "transformer")

__all__: list = []


def _load() -> None:
    for name in FAMILIES:
        try:
            mod = importlib.import_module(f"ember.nn.layers.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"ember.nn.layers.{name}":
                continue  # a family that is not written yet
            raise
        for attr in mod.__all__:
            globals()[attr] = getattr(mod, attr)
            __all__.append(attr)


_load()
