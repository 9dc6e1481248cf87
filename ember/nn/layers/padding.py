"""Padding layers over ``F.pad``: Zero/Constant/Reflection/Replication/CircularPad1d/2d/3d.

``padding`` is stored as torch stores it (an int becomes 2 * nd copies, a sequence is kept
as a tuple), so reprs and state match; the padding itself is the one ``pad`` op.
"""

from __future__ import annotations

from ember.nn.layers.conv import _tuple
from ember.nn.module import Module
from ember.ops.join import pad

__all__ = [
    "ZeroPad1d",
    "ZeroPad2d",
    "ZeroPad3d",
    "ConstantPad1d",
    "ConstantPad2d",
    "ConstantPad3d",
    "ReflectionPad1d",
    "ReflectionPad2d",
    "ReflectionPad3d",
    "ReplicationPad1d",
    "ReplicationPad2d",
    "ReplicationPad3d",
    "CircularPad1d",
    "CircularPad2d",
    "CircularPad3d",
]


class _PadNd(Module):
    """One padding layer: ``_mode`` is F.pad's mode, ``_nd`` the number of padded dims."""

    _mode = "reflect"
    _nd = 1

    def __init__(self, padding):
        super().__init__()
        self.padding = _tuple(padding, 2 * self._nd)

    def forward(self, input):
        return pad(input, self.padding, self._mode)

    def extra_repr(self) -> str:
        return f"{self.padding}"


class _ConstantPadNd(_PadNd):
    _mode = "constant"

    def __init__(self, padding, value: float):
        super().__init__(padding)
        self.value = value

    def forward(self, input):
        return pad(input, self.padding, "constant", self.value)

    def extra_repr(self) -> str:
        return f"padding={self.padding}, value={self.value}"


class ConstantPad1d(_ConstantPadNd):
    _nd = 1


class ConstantPad2d(_ConstantPadNd):
    _nd = 2


class ConstantPad3d(_ConstantPadNd):
    _nd = 3


class _ZeroPadNd:
    """ConstantPadNd with value 0.0, and torch's shorter repr (the padding alone)."""

    def __init__(self, padding):
        super().__init__(padding, 0.0)

    extra_repr = _PadNd.extra_repr


class ZeroPad1d(_ZeroPadNd, ConstantPad1d):
    pass


class ZeroPad2d(_ZeroPadNd, ConstantPad2d):
    pass


class ZeroPad3d(_ZeroPadNd, ConstantPad3d):
    pass


class ReflectionPad1d(_PadNd):
    _nd = 1


class ReflectionPad2d(_PadNd):
    _nd = 2


class ReflectionPad3d(_PadNd):
    _nd = 3


class ReplicationPad1d(_PadNd):
    _mode, _nd = "replicate", 1


class ReplicationPad2d(_PadNd):
    _mode, _nd = "replicate", 2


class ReplicationPad3d(_PadNd):
    _mode, _nd = "replicate", 3


class _CircularPadNd(_PadNd):
    """torch checks the input rank here (F.pad alone would wrap any trailing dims)."""

    _mode = "circular"

    def forward(self, input):
        nd = input.data.ndim
        if nd not in (self._nd + 1, self._nd + 2):
            raise ValueError(
                f"{type(self).__name__}: expected {self._nd + 1}D or {self._nd + 2}D input "
                f"(got {nd}D input of shape {tuple(input.shape)})"
            )
        return pad(input, self.padding, "circular")


class CircularPad1d(_CircularPadNd):
    _nd = 1


class CircularPad2d(_CircularPadNd):
    _nd = 2


class CircularPad3d(_CircularPadNd):
    _nd = 3
