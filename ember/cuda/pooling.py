"""Launchers for pooling.cu: 2-D max and average pooling, forward and backward, over arrays
(..., H, W) (every leading dim is a plane).

Oracles: ember.nn.functional._pooling's max_pool_forward / max_pool_scatter /
avg_pool_forward / avg_pool_adjoint with a PoolGeometry.
"""

from __future__ import annotations

import numpy as np

from ember.cuda import compile as C

SOURCE = "pooling.cu"
_TYPES = ("float", "__half", "__nv_bfloat16")
NAMES = tuple(
    f"{k}<{t}>"
    for k in (
        "max_pool2d_forward",
        "max_pool2d_backward",
        "avg_pool2d_forward",
        "avg_pool2d_backward",
    )
    for t in _TYPES
)
_THREADS = 256


def supports(x, kernel: tuple) -> bool:
    return len(kernel) == 2 and x.ndim >= 2 and C.ctype(x.dtype) is not None and x.size < 2**31


def _geo(planes, in_sp, kernel, stride, pad, dilation, out_sp) -> tuple:
    return tuple(np.int32(v) for v in (planes, *in_sp, *kernel, *stride, *pad, *dilation, *out_sp))


def _planes(shape) -> int:
    p = 1
    for s in shape[:-2]:
        p *= s
    return p


def max_pool2d_forward(x, kernel, stride, pad, dilation, out_sp):
    """(y, idx): the window maxima and the int32 offset of each winner in its window."""
    cp = C.cupy_module()
    x = C.contiguous(x)
    lead = x.shape[:-2]
    y = cp.empty(lead + tuple(out_sp), dtype=x.dtype)
    idx = cp.empty(y.shape, dtype=np.int32)
    if y.size:
        fn = C.function(SOURCE, NAMES, f"max_pool2d_forward<{C.ctype(x.dtype)}>")
        geo = _geo(_planes(x.shape), x.shape[-2:], kernel, stride, pad, dilation, out_sp)
        fn((C.blocks_for(y.size, _THREADS * 4),), (_THREADS,), (x, y, idx, *geo))
    return y, idx


def max_pool2d_backward(g, idx, in_sp, kernel, stride, pad, dilation):
    """The input gradient: each output's gradient sent to its window's winner."""
    cp = C.cupy_module()
    g = C.contiguous(g)
    idx = C.contiguous(idx.astype(np.int32, copy=False))
    gx = cp.empty(g.shape[:-2] + tuple(in_sp), dtype=g.dtype)
    if gx.size:
        fn = C.function(SOURCE, NAMES, f"max_pool2d_backward<{C.ctype(g.dtype)}>")
        geo = _geo(_planes(g.shape), in_sp, kernel, stride, pad, dilation, g.shape[-2:])
        fn((C.blocks_for(gx.size, _THREADS * 4),), (_THREADS,), (g, idx, gx, *geo))
    return gx


def _mode(count_include_pad: bool, divisor_override) -> tuple:
    if divisor_override is not None:
        return np.int32(2), np.float32(divisor_override)
    return np.int32(0 if count_include_pad else 1), np.float32(1.0)


def avg_pool2d_forward(
    x, kernel, stride, pad, out_sp, count_include_pad=True, divisor_override=None
):
    cp = C.cupy_module()
    x = C.contiguous(x)
    y = cp.empty(x.shape[:-2] + tuple(out_sp), dtype=x.dtype)
    if y.size:
        fn = C.function(SOURCE, NAMES, f"avg_pool2d_forward<{C.ctype(x.dtype)}>")
        geo = _geo(_planes(x.shape), x.shape[-2:], kernel, stride, pad, (1, 1), out_sp)
        mode = _mode(count_include_pad, divisor_override)
        fn((C.blocks_for(y.size, _THREADS * 4),), (_THREADS,), (x, y, *mode, *geo))
    return y


def avg_pool2d_backward(
    g, in_sp, kernel, stride, pad, count_include_pad=True, divisor_override=None
):
    cp = C.cupy_module()
    g = C.contiguous(g)
    gx = cp.empty(g.shape[:-2] + tuple(in_sp), dtype=g.dtype)
    if gx.size:
        fn = C.function(SOURCE, NAMES, f"avg_pool2d_backward<{C.ctype(g.dtype)}>")
        geo = _geo(_planes(g.shape), in_sp, kernel, stride, pad, (1, 1), g.shape[-2:])
        mode = _mode(count_include_pad, divisor_override)
        fn((C.blocks_for(gx.size, _THREADS * 4),), (_THREADS,), (g, gx, *mode, *geo))
    return gx
