"""Devices: ``ember.device("cpu")``, ``"cuda"`` and ``"cuda:N"``."""

from __future__ import annotations


class device:  # noqa: N801 - mirrors torch.device
    __slots__ = ("type", "index")

    def __init__(self, spec="cpu", index: int | None = None):
        if isinstance(spec, device):
            self.type, self.index = spec.type, spec.index
            return
        if not isinstance(spec, str):
            raise TypeError(f"device: expected a string like 'cpu' or 'cuda:0', got {spec!r}")
        kind, _, num = spec.partition(":")
        if kind not in ("cpu", "cuda"):
            raise RuntimeError(f"device: unknown device type {kind!r} (expected 'cpu' or 'cuda')")
        if num:
            if not num.isdigit():
                raise RuntimeError(f"device: invalid device string {spec!r}")
            if index is not None:
                raise RuntimeError(f"device: index given twice in {spec!r} and index={index}")
            index = int(num)
        if kind == "cpu" and index not in (None, 0):
            raise RuntimeError(f"device: cpu has no index {index}")
        self.type = kind
        self.index = None if kind == "cpu" else index

    def __eq__(self, other) -> bool:
        if isinstance(other, str):
            other = device(other)
        if not isinstance(other, device):
            return NotImplemented
        return self.type == other.type and self.index == other.index

    def __hash__(self) -> int:
        return hash((self.type, self.index))

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __repr__(self) -> str:
        if self.index is None:
            return f"device(type='{self.type}')"
        return f"device(type='{self.type}', index={self.index})"


CPU = device("cpu")


def to_device(spec) -> device:
    if spec is None:
        return CPU
    if isinstance(spec, device):
        return spec
    if isinstance(spec, int):
        return device("cuda", spec)
    return device(spec)


_default: list = [None]  # set_default_device's device (None: CPU)


def set_default_device(dev) -> None:
    """The device creation functions use when no ``device=`` is given (``torch.set_default_
    device``): ``ember.set_default_device("cuda")``; None or "cpu" restores the CPU."""
    _default[0] = None if dev is None else to_device(dev)
    if _default[0] == CPU:
        _default[0] = None


def get_default_device() -> device:
    return _default[0] or CPU


def default_or(dev):
    """``dev``, or the default device when it is None (None again while that is the CPU)."""
    return _default[0] if dev is None else dev
