"""2x2 stride-2 max pooling on NumPy arrays, in blocks of planes on the CPU threads.

Why: the generic offset loop in ``_pooling`` reads the four window elements through stride-2
views of the (P, H, W) input (NumPy runs those at a third of its contiguous speed, and the
cnn's max-pools read 8 and 4 MB) and makes fifteen passes over the output, on one core. Here
each row's (left, right) float32 pairs are split into two contiguous arrays through a uint64
view (a cast keeps the low halves, a shift then a cast the high ones), the four elements are
compared as two pairs and the pair winners against each other on whole planes (torch's
first-max rule: within a row the left one wins a tie, and the top row wins over the bottom
one), and the backward writes its four strided quarters per block; blocks of planes are
independent, so ``ember.ops.parallel.run_blocks`` spreads them over the threads.

The offsets kept for the backward are the generic kernel's (0..3, row-major in the window),
so its scatter, gather and ``flat_indices`` read them unchanged.
"""

from __future__ import annotations

import sys

import numpy as np

from ember.nn.functional._winograd import _buffer
from ember.ops.parallel import get_num_threads, run_blocks

BLOCK_BYTES = 1 << 20  # of input per block of planes
MIN_ELEMENTS = 1 << 14  # smaller inputs keep the generic kernel
FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def usable(x, geo, windows: int) -> bool:
    """2x2 windows, stride 2, no padding or dilation, even sizes, on a NumPy float32/float64
    array (the input, or the output gradient) with at least MIN_ELEMENTS / 4 ``windows``."""
    return (
        type(x) is np.ndarray
        and x.dtype in FLOATS
        and windows * 4 >= MIN_ELEMENTS
        and tuple(geo.kernel) == (2, 2)
        and tuple(geo.stride) == (2, 2)
        and tuple(geo.dilation) == (1, 1)
        and not any(geo.pad)
        and tuple(geo.padded) == tuple(geo.in_sp)
        and geo.in_sp[0] % 2 == 0
        and geo.in_sp[1] % 2 == 0
    )


def _planes_per_block(planes: int, plane_bytes: int) -> int:
    b = max(1, BLOCK_BYTES // max(1, plane_bytes))
    threads = get_num_threads()
    if threads > 1:
        b = min(b, max(1, -(-planes // (4 * threads))))
    b = min(b, planes)
    return -(-planes // -(-planes // b))


def forward(x):
    """(max over each window, offset 0..3 of its first max as uint8), or None when the
    input holds a NaN (the caller's exact path then applies torch's NaN rule).

    float64 inputs (and big-endian machines) read the pairs through stride-2 views instead.
    """
    h, w = x.shape[-2:]
    lead = x.shape[:-2]
    planes = x.size // (h * w)
    ho, wo = h // 2, w // 2
    x3 = np.ascontiguousarray(x).reshape(planes, h, w)
    best = np.empty((planes, ho, wo), x.dtype)
    idx = np.empty((planes, ho, wo), np.uint8)
    nan = []
    split = _split_u64 if x.dtype == np.float32 and _LITTLE else _split_strided

    def kernel(lo, hi):
        left, right = split(x3[lo:hi], hi - lo, ho, wo)
        v0, v2 = left[:, 0], left[:, 1]  # top-left, bottom-left
        v1, v3 = right[:, 0], right[:, 1]  # top-right, bottom-right
        top = np.maximum(v0, v1)
        r = np.greater(v1, v0).view(np.uint8)  # the top pair's winner is v1
        bot = np.maximum(v2, v3)
        br = np.greater(v3, v2).view(np.uint8)
        b = np.maximum(top, bot, out=best[lo:hi])
        low = np.greater(bot, top).view(np.uint8)  # the bottom pair wins (a tie stays on top)
        o = np.bitwise_xor(r, br, out=idx[lo:hi])  # offset = (low ? br : r) + 2 * low
        o &= low
        o ^= r
        o += low
        o += low
        if np.isnan(b.max()):
            nan.append(True)

    run_blocks(kernel, planes, _planes_per_block(planes, h * w * x.itemsize))
    if nan:
        return None
    return best.reshape(lead + (ho, wo)), idx.reshape(lead + (ho, wo))


_LITTLE = sys.byteorder == "little"


def _split_u64(xb, b: int, ho: int, wo: int):
    """(left, right) column values of a float32 (b, 2 * ho, 2 * wo) block, each
    (b, 2, ho, wo) (top rows, then bottom rows) and contiguous: the low and high halves of
    each uint64 pair. The compares then run on whole planes, not 16-value rows."""
    u = xb.view(np.uint64).reshape(b, ho, 2, wo)
    left = _buffer("mp_left", (b, 2, ho, wo), np.uint32)
    np.copyto(left.transpose(0, 2, 1, 3), u, casting="unsafe")  # keeps the low 32 bits
    hi = np.right_shift(u, np.uint64(32), out=_buffer("mp_hi", u.shape, np.uint64))
    right = _buffer("mp_right", (b, 2, ho, wo), np.uint32)
    np.copyto(right.transpose(0, 2, 1, 3), hi, casting="unsafe")
    return left.view(np.float32), right.view(np.float32)


def _split_strided(xb, b: int, ho: int, wo: int):
    v = xb.reshape(b, ho, 2, wo, 2).transpose(0, 2, 1, 3, 4)
    return v[..., 0], v[..., 1]


def scatter(g, idx):
    """The gradient of ``forward``: g sent to each window's winner (a non-finite g is
    sent only there too: each element is written once, from g or as zero)."""
    ho, wo = g.shape[-2:]
    lead = g.shape[:-2]
    planes = g.size // (ho * wo) if ho * wo else 0
    gx = np.empty(lead + (2 * ho, 2 * wo), g.dtype)
    gx5 = gx.reshape(planes, ho, 2, wo, 2)
    g3, i3 = np.ascontiguousarray(g).reshape(planes, ho, wo), idx.reshape(planes, ho, wo)
    zero = g.dtype.type(0)

    def kernel(lo, hi):
        gb, ib, ob = g3[lo:hi], i3[lo:hi], gx5[lo:hi]
        finite = bool(np.isfinite(gb.sum()))
        for k in range(4):
            hit = ib == k
            dst = ob[:, :, k >> 1, :, k & 1]
            if finite:
                np.multiply(gb, hit, out=dst)
            else:
                dst[...] = np.where(hit, gb, zero)

    run_blocks(kernel, planes, _planes_per_block(planes, 4 * ho * wo * g.itemsize))
    return gx
