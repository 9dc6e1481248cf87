"""The op library: one module per family, each a set of Functions plus the public functions.

Every family module exports ``FUNCTIONS`` (names added to ``ember``) and ``METHODS`` (names
installed on ``Tensor``); it may also export ``PROPERTIES`` and ``INPLACE`` (names that get a
trailing-underscore in-place method). Installing methods from here is what lets the tensor
layer stay free of imports from the layers above it.
"""

from __future__ import annotations

import importlib

from ember.ops.inplace import make_inplace
from ember.tensor.tensor import Tensor

FAMILIES = (
    "conversion",
    "inplace",
    "elementwise",
    "unary",
    "comparison",
    "reduction",
    "reduction_minmax",
    "reduction_prod",
    "reduction_stats",
    "linalg",
    "shape",
    "join",
    "indexing",
    "nn_ops",
)

FUNCTIONS: dict = {}


def _install() -> None:
    for name in FAMILIES:
        mod = importlib.import_module(f"ember.ops.{name}")
        FUNCTIONS.update(getattr(mod, "FUNCTIONS", {}))
        methods = getattr(mod, "METHODS", {})
        for meth, fn in methods.items():
            setattr(Tensor, meth, fn)
        for prop, fn in getattr(mod, "PROPERTIES", {}).items():
            setattr(Tensor, prop, property(fn))
        for op in getattr(mod, "INPLACE", ()):
            setattr(Tensor, op + "_", make_inplace(methods[op], op + "_"))


_install()
globals().update(FUNCTIONS)
