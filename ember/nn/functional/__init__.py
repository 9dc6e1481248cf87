"""``ember.nn.functional``: the functional forms of the layers and losses (torch's ``F``).

One module per family; each exports ``__all__``. The ops that already live in ``ember.ops``
(activations, softmax, embedding, pad, one_hot) are re-exported here under torch's names.
"""

from __future__ import annotations

import importlib

FAMILIES = ("activation", "linear", "conv", "pooling", "normalization", "dropout", "loss",
            "attention", "sparse")

__all__: list = []


def _load() -> None:
    for name in FAMILIES:
        try:
            mod = importlib.import_module(f"ember.nn.functional.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"ember.nn.functional.{name}":
                continue  # a family that is not written yet
            raise
        for attr in mod.__all__:
            globals()[attr] = getattr(mod, attr)
            __all__.append(attr)


_load()
