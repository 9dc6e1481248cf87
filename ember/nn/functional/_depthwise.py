"""Depthwise 2-D convolution on NumPy arrays (groups = in channels = out channels): forward,
input gradient and weight gradient without im2col.

Why: im2col writes kH * kW copies of the input, and a depthwise conv then multiplies each
group's single row of weights into them: 64 thin products, 14 ms forward at (32, 64, 32, 32)
against torch's 2. Here each image's padded planes are kept flat (rows of Wp values, a few
zeros past the end), so the input under kernel offset (i, j) is one contiguous slice starting
at i * d * Wp + j * d, and the output (with Wp - Wo junk columns per row, cropped at the end)
is the sum over offsets of that slice times the channel's weight: kH * kW contiguous passes
per block of images, in cache, over the CPU threads. The input gradient is the adjoint (each
weighted gradient added back into its slice), the weight gradient the per-channel dot product
of the gradient with each slice. These passes cover stride 1.

With the CPU kernels on (ember/cpu/depthwise.py), float32/float64 convs run as numba loops
instead, over blocks of (image, channel) planes on the CPU threads: each output row is
accumulated in place offset by offset, the padding is a bounds test per row and a column range
per offset (no padded copy, no junk columns), and stride is index arithmetic, so strided
depthwise convs take this path too (the NumPy passes above do not cover them: with the kernels
off those stay on im2col). Forward and input gradient add in the NumPy passes' order (same
bits); the weight gradient sums fixed blocks of images (``WEIGHT_IMAGES``) and then the blocks
in order, so its bits do not depend on the thread count either.
"""

from __future__ import annotations

import numpy as np

from ember.cpu import depthwise as cpu_depthwise
from ember.ops.parallel import run_blocks

_IMAGES_PER_BLOCK = 2  # ~0.6 MB of planes per block: the passes stay in cache
PLANE_BYTES = 1 << 18  # the loops: planes per block (one thread's share of the input, in L2)
WEIGHT_IMAGES = 8  # the loops' weight gradient: images per partial sum (fixed, for the bits)


def supported(x, wshape, geo) -> bool:
    """A NumPy float (N, C, H, W) array convolved depthwise (weight (C, 1, kH, kW)) at
    stride 1, or at any stride while the CPU kernels are on. ``x`` is the conv's input, or
    the output gradient for the input gradient."""
    return (
        type(x) is np.ndarray
        and x.ndim == 4
        and x.dtype in (np.float32, np.float64)
        and len(wshape) == 4
        and geo.groups == x.shape[1] == wshape[0]
        and wshape[1] == 1
        and x.shape[0] > 0
        and (tuple(geo.stride) == (1, 1) or _fused(x) is not None)
    )


def _fused(*arrays):
    """The numba loops (forward, grad_input, grad_weight) for these arrays, or None."""
    return cpu_depthwise.conv_kernels() if cpu_depthwise.supports(*arrays) else None


def _geometry(geo) -> tuple:
    """The loops' trailing arguments: top, left, stride and dilation."""
    (top, _), (left, _) = geo.pads
    return (top, left, *geo.stride, *geo.dilation)


def _plane_block(*planes, itemsize: int) -> int:
    """Planes per block: about PLANE_BYTES of the larger of the planes read and written."""
    return max(1, PLANE_BYTES // (max(h * w for h, w in planes) * itemsize))


class _Layout:
    """The flat padded planes of one conv: sizes and the start of each kernel offset."""

    def __init__(self, channels: int, in_spatial, kernel, pads, dilation):
        (self.top, bottom), (self.left, right) = pads
        dh, dw = dilation
        kh, kw = kernel
        self.c = channels
        self.h, self.w = in_spatial
        self.hp, self.wp = self.h + self.top + bottom, self.w + self.left + right
        self.ho, self.wo = self.hp - dh * (kh - 1), self.wp - dw * (kw - 1)
        self.run = self.ho * self.wp  # output values per plane, junk columns included
        self.flat = self.hp * self.wp + dw * (kw - 1)  # the last slice reads past the planes
        self.offsets = [i * dh * self.wp + j * dw for i in range(kh) for j in range(kw)]

    def weights(self, w):
        """Each offset's weights as a (1, C, 1) column, to broadcast along the planes."""
        taps = w.reshape(self.c, -1)
        return [
            np.ascontiguousarray(taps[:, k]).reshape(1, self.c, 1) for k in range(taps.shape[1])
        ]

    def planes(self, x):
        """Zero-padded flat planes (b, C, flat) of a block of images."""
        b = x.shape[0]
        out = np.zeros((b, self.c, self.flat), x.dtype)
        grid = out[:, :, : self.hp * self.wp].reshape(b, self.c, self.hp, self.wp)
        grid[:, :, self.top : self.top + self.h, self.left : self.left + self.w] = x
        return out

    def crop(self, planes):
        b = planes.shape[0]
        grid = planes[:, :, : self.hp * self.wp].reshape(b, self.c, self.hp, self.wp)
        return grid[:, :, self.top : self.top + self.h, self.left : self.left + self.w]

    def spread(self, g):
        """A block of output gradients as flat rows of Wp with zero junk columns."""
        b = g.shape[0]
        out = np.zeros((b, self.c, self.ho, self.wp), g.dtype)
        out[..., : self.wo] = g
        return out.reshape(b, self.c, self.run)

    def slice(self, planes, k: int):
        return planes[:, :, self.offsets[k] : self.offsets[k] + self.run]


def out_spatial(in_spatial, wshape, geo) -> tuple:
    return tuple(
        (n + lo + hi - d * (k - 1) - 1) // s + 1
        for n, k, s, (lo, hi), d in zip(in_spatial, wshape[2:], geo.stride, geo.pads, geo.dilation)
    )


def forward(x, w, geo):
    fused = _fused(x, w)
    if fused is not None:
        return _fused_forward(fused[0], x, w, geo)
    lay = _Layout(x.shape[1], x.shape[2:], w.shape[2:], geo.pads, geo.dilation)
    taps = lay.weights(w)
    y = np.empty((x.shape[0], lay.c, lay.ho, lay.wo), x.dtype)

    def block(lo, hi):
        planes = lay.planes(x[lo:hi])
        acc = np.multiply(lay.slice(planes, 0), taps[0])
        tmp = np.empty_like(acc)
        for k in range(1, len(taps)):
            np.multiply(lay.slice(planes, k), taps[k], out=tmp)
            acc += tmp
        y[lo:hi] = acc.reshape(hi - lo, lay.c, lay.ho, lay.wp)[..., : lay.wo]

    run_blocks(block, x.shape[0], _IMAGES_PER_BLOCK)
    return y


def grad_input(g, w, geo, in_spatial):
    fused = _fused(g, w)
    if fused is not None:
        return _fused_grad_input(fused[1], g, w, geo, in_spatial)
    lay = _Layout(g.shape[1], in_spatial, w.shape[2:], geo.pads, geo.dilation)
    taps = lay.weights(w)
    gx = np.empty(g.shape[:2] + tuple(in_spatial), g.dtype)

    def block(lo, hi):
        rows = lay.spread(g[lo:hi])
        acc = np.zeros((hi - lo, lay.c, lay.flat), g.dtype)
        tmp = np.empty_like(rows)
        for k in range(len(taps)):
            np.multiply(rows, taps[k], out=tmp)
            lay.slice(acc, k)[...] += tmp
        gx[lo:hi] = lay.crop(acc)

    run_blocks(block, g.shape[0], _IMAGES_PER_BLOCK)
    return gx


def grad_weight(x, g, wshape, geo):
    fused = _fused(x, g)
    if fused is not None:
        return _fused_grad_weight(fused[2], x, g, wshape, geo)
    lay = _Layout(x.shape[1], x.shape[2:], wshape[2:], geo.pads, geo.dilation)
    n, taps = x.shape[0], len(lay.offsets)
    parts = np.empty((-(-n // _IMAGES_PER_BLOCK), taps, lay.c), x.dtype)

    def block(lo, hi):
        planes, rows = lay.planes(x[lo:hi]), lay.spread(g[lo:hi])
        grid = (hi - lo, lay.c, lay.ho, lay.wp)
        rows = rows.reshape(grid)[..., : lay.wo]  # without the junk columns: 0 * inf is NaN
        for k in range(taps):
            cols = lay.slice(planes, k).reshape(grid)[..., : lay.wo]
            parts[lo // _IMAGES_PER_BLOCK, k] = np.einsum("bcij,bcij->c", rows, cols)

    run_blocks(block, n, _IMAGES_PER_BLOCK)
    with np.errstate(invalid="ignore"):  # inf + -inf is NaN, quietly (as torch)
        total = parts.sum(axis=0)  # blocks in order: the same sum whichever thread ran them
    return np.ascontiguousarray(total.T).reshape(wshape)


# ------------------------------------------------------------------ the numba loops
def _fused_forward(kernel, x, w, geo):
    x, w = np.ascontiguousarray(x), np.ascontiguousarray(w)
    n, c, h, wd = x.shape
    ho, wo = out_spatial((h, wd), w.shape, geo)
    y = np.empty((n, c, ho, wo), x.dtype)
    args = _geometry(geo)
    run_blocks(
        lambda lo, hi: kernel(x, w, y, lo, hi, *args),
        n * c,
        _plane_block((h, wd), (ho, wo), itemsize=x.itemsize),
    )
    return y


def _fused_grad_input(kernel, g, w, geo, in_spatial):
    g, w = np.ascontiguousarray(g), np.ascontiguousarray(w)
    n, c, ho, wo = g.shape
    gx = np.empty((n, c) + tuple(in_spatial), g.dtype)
    args = _geometry(geo)
    run_blocks(
        lambda lo, hi: kernel(g, w, gx, lo, hi, *args),
        n * c,
        _plane_block(tuple(in_spatial), (ho, wo), itemsize=g.itemsize),
    )
    return gx


def _fused_grad_weight(kernel, x, g, wshape, geo):
    """Blocks of WEIGHT_IMAGES images times blocks of channels; each writes its own
    partial sums, and the image blocks are added in order (the same bits on any threads)."""
    x, g = np.ascontiguousarray(x), np.ascontiguousarray(g)
    n, c, h, wd = x.shape
    kh, kw = wshape[2], wshape[3]
    images = min(n, WEIGHT_IMAGES)
    parts = np.empty((-(-n // images), c, kh * kw), x.dtype)
    channels = _plane_block((h, wd), g.shape[2:], itemsize=x.itemsize) // images
    channels = min(c, max(1, channels))
    per_part = -(-c // channels)
    args = _geometry(geo)

    def block(lo, hi):
        for k in range(lo, hi):
            part, cb = divmod(k, per_part)
            i0, c0 = part * images, cb * channels
            kernel(x, g, parts, part, i0, min(n, i0 + images), c0, min(c, c0 + channels), kw, *args)

    run_blocks(block, parts.shape[0] * per_part, 1)
    with np.errstate(invalid="ignore"):
        return parts.sum(axis=0).reshape(wshape)
