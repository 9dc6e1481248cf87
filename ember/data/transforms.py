"""Image transforms, vectorised over a batch.

Every transform takes one image (C, H, W) or a batch (N, C, H, W), as an ember Tensor or a
NumPy/CuPy array, and returns the same kind. On a batch the random transforms draw one set
of parameters per sample (the same distribution as applying them image by image) in a few
array operations. Randomness comes from ember's RNG: ``generator=`` or the default one that
``ember.manual_seed`` seeds.
"""

from __future__ import annotations

import numbers

import numpy as np

from ember.tensor.backend import get_array_module
from ember.tensor.random import rng_of
from ember.tensor.tensor import Tensor, write_into

__all__ = ["Compose", "ToTensor", "Normalize", "RandomCrop", "RandomHorizontalFlip", "Lambda"]


def _unwrap(x, who: str):
    arr = x.data if isinstance(x, Tensor) else x
    if not hasattr(arr, "ndim") or arr.ndim not in (3, 4):
        shape = getattr(arr, "shape", None)
        raise ValueError(
            f"{who}: expected an image (C, H, W) or a batch (N, C, H, W), got "
            f"{'shape ' + str(tuple(shape)) if shape is not None else type(x)}"
        )
    return arr


def _wrap(like, arr):
    return Tensor(arr) if isinstance(like, Tensor) else arr


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms) -> None:
        self.transforms = list(transforms)

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x

    def __repr__(self) -> str:
        inner = "".join(f"\n    {t}" for t in self.transforms)
        return f"{type(self).__name__}({inner}\n)"


class Lambda:
    """Wrap a function as a transform."""

    def __init__(self, fn) -> None:
        if not callable(fn):
            raise TypeError(f"Lambda: argument should be callable, got {type(fn).__name__}")
        self.fn = fn

    def __call__(self, x):
        return self.fn(x)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ToTensor:
    """HWC (or HW) uint8 images in [0, 255] to CHW float32 tensors in [0, 1]; NHWC batches to
    NCHW. Float arrays keep their values (moved to CHW); a Tensor that is already floating
    point passes through unchanged."""

    def __call__(self, pic):
        if isinstance(pic, Tensor) and pic.is_floating_point():
            return pic
        arr = pic.data if isinstance(pic, Tensor) else pic
        if not hasattr(arr, "ndim") or arr.ndim not in (2, 3, 4):
            raise TypeError(
                f"ToTensor: pic should be an ndarray or Tensor of 2, 3 or 4 "
                f"dimensions (HW, HWC or NHWC), got {type(pic).__name__}"
                + (f" of shape {tuple(arr.shape)}" if hasattr(arr, "shape") else "")
            )
        xp = get_array_module(arr)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        arr = xp.moveaxis(arr, -1, -3)
        if arr.dtype == np.uint8:
            out = arr.astype(np.float32) / np.float32(255)
        elif arr.dtype.kind == "f":
            out = xp.ascontiguousarray(arr)
        else:
            out = arr.astype(np.float32)
        return Tensor(xp.ascontiguousarray(out))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Normalize:
    """``(x - mean[c]) / std[c]`` per channel, computed in the input's float dtype."""

    def __init__(self, mean, std, inplace: bool = False) -> None:
        self.mean = tuple(float(m) for m in np.atleast_1d(mean))
        self.std = tuple(float(s) for s in np.atleast_1d(std))
        self.inplace = inplace
        if any(s == 0 for s in self.std):
            raise ValueError(
                f"Normalize: std evaluated to zero, leading to division by zero (std={self.std})"
            )

    def __call__(self, x):
        arr = _unwrap(x, "Normalize")
        if arr.dtype.kind != "f":
            raise TypeError(f"Normalize: input tensor should be a float tensor, got {arr.dtype}")
        channels = arr.shape[-3]
        for name, vals in (("mean", self.mean), ("std", self.std)):
            if len(vals) not in (1, channels):
                raise ValueError(
                    f"Normalize: {name} has {len(vals)} values for an input with "
                    f"{channels} channels (shape {tuple(arr.shape)})"
                )
        xp = get_array_module(arr)
        mean = xp.asarray(self.mean, dtype=arr.dtype).reshape(-1, 1, 1)
        std = xp.asarray(self.std, dtype=arr.dtype).reshape(-1, 1, 1)
        out = (arr - mean) / std
        if self.inplace:
            if isinstance(x, Tensor):
                write_into(x, out, "Normalize")
            else:
                arr[...] = out
            return x
        return _wrap(x, out)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mean={list(self.mean)}, std={list(self.std)})"


def _pair(size, who: str) -> tuple:
    if isinstance(size, numbers.Integral):
        return int(size), int(size)
    size = tuple(int(s) for s in size)
    if len(size) == 1:
        return size[0], size[0]
    if len(size) != 2:
        raise ValueError(f"{who}: size should be an int or a sequence of 1 or 2 ints, got {size}")
    return size


def _padding(padding, who: str) -> tuple:
    """torch's padding forms to (left, top, right, bottom)."""
    if isinstance(padding, numbers.Integral):
        p = int(padding)
        return p, p, p, p
    padding = tuple(int(p) for p in padding)
    if len(padding) == 1:
        return padding * 4
    if len(padding) == 2:
        return padding[0], padding[1], padding[0], padding[1]
    if len(padding) == 4:
        return padding
    raise ValueError(
        f"{who}: padding must be an int or a 1, 2 or 4 element sequence, got {padding}"
    )


_PAD_MODES = {
    "constant": "constant",
    "edge": "edge",
    "reflect": "reflect",
    "symmetric": "symmetric",
}


class RandomCrop:
    """Crop a random ``size`` window, after optional padding (torch's ``padding`` forms and
    ``padding_mode``); each image of a batch gets its own window."""

    def __init__(
        self,
        size,
        padding=None,
        pad_if_needed: bool = False,
        fill=0,
        padding_mode: str = "constant",
        generator=None,
    ) -> None:
        self.size = _pair(size, "RandomCrop")
        self.padding = None if padding is None else _padding(padding, "RandomCrop")
        self.pad_if_needed = pad_if_needed
        self.fill = fill
        if padding_mode not in _PAD_MODES:
            raise ValueError(
                f"RandomCrop: padding_mode must be one of {sorted(_PAD_MODES)}, "
                f"got {padding_mode!r}"
            )
        self.padding_mode = padding_mode
        self.generator = generator

    def _pad(self, arr, left: int, top: int, right: int, bottom: int):
        if not (left or top or right or bottom):
            return arr
        xp = get_array_module(arr)
        widths = [(0, 0)] * (arr.ndim - 2) + [(top, bottom), (left, right)]
        if self.padding_mode == "constant":
            return xp.pad(arr, widths, mode="constant", constant_values=self.fill)
        return xp.pad(arr, widths, mode=_PAD_MODES[self.padding_mode])

    def __call__(self, x):
        arr = _unwrap(x, "RandomCrop")
        if self.padding is not None:
            arr = self._pad(arr, *self.padding)
        th, tw = self.size
        h, w = arr.shape[-2:]
        if self.pad_if_needed and (h < th or w < tw):
            dh, dw = max(th - h, 0), max(tw - w, 0)
            arr = self._pad(arr, dw, dh, dw, dh)
            h, w = arr.shape[-2:]
        if h < th or w < tw:
            raise ValueError(
                f"RandomCrop: required crop size {(th, tw)} is larger than the "
                f"(padded) input image size {(h, w)}"
            )
        rng = rng_of(self.generator)
        xp = get_array_module(arr)
        if arr.ndim == 3:
            i = int(rng.integers(0, h - th + 1))
            j = int(rng.integers(0, w - tw + 1))
            return _wrap(x, xp.ascontiguousarray(arr[:, i : i + th, j : j + tw]))
        n = arr.shape[0]
        tops = xp.asarray(rng.integers(0, h - th + 1, size=n))
        lefts = xp.asarray(rng.integers(0, w - tw + 1, size=n))
        rows = (tops[:, None] + xp.arange(th))[:, None, :, None]
        cols = (lefts[:, None] + xp.arange(tw))[:, None, None, :]
        out = arr[
            xp.arange(n)[:, None, None, None],
            xp.arange(arr.shape[1])[None, :, None, None],
            rows,
            cols,
        ]
        return _wrap(x, out)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, padding={self.padding})"


class RandomHorizontalFlip:
    """Mirror left-right with probability ``p`` (per image of a batch)."""

    def __init__(self, p: float = 0.5, generator=None) -> None:
        self.p = p
        self.generator = generator

    def __call__(self, x):
        arr = _unwrap(x, "RandomHorizontalFlip")
        rng = rng_of(self.generator)
        xp = get_array_module(arr)
        if arr.ndim == 3:
            if rng.random() < self.p:
                return _wrap(x, xp.ascontiguousarray(arr[..., ::-1]))
            return x
        flip = xp.asarray(rng.random(arr.shape[0]) < self.p)
        out = xp.where(flip[:, None, None, None], arr[..., ::-1], arr)
        return _wrap(x, out)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"
