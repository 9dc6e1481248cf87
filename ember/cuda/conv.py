"""Launchers for conv.cu: 2-D im2col and col2im around the cuBLAS GEMM (``cupy.matmul``).

The layout is ember.nn.functional._im2col's: cols (C * kh * kw, N * OH * OW) ordered
(C, kh, kw, N, OH, OW). Oracles: ``_im2col.im2col`` and ``_im2col.col2im`` (plus the crop
and transpose ``conv_grad_input`` applies after it).
"""

from __future__ import annotations

import numpy as np

from ember.cuda import compile as C

SOURCE = "conv.cu"
_TYPES = ("float", "__half", "__nv_bfloat16")
NAMES = tuple(f"{k}<{t}>" for k in ("im2col2d", "col2im2d") for t in _TYPES)
_THREADS = 256


def supports(x, kernel: tuple) -> bool:
    """2-D convolution of a 4-D array of a kernel dtype with int32-addressable sizes."""
    return len(kernel) == 2 and x.ndim == 4 and C.ctype(x.dtype) is not None and x.size < 2**31


def _geo(n, c, in_sp, kernel, stride, pads_lo, dilation, out_sp) -> tuple:
    return tuple(
        np.int32(v) for v in (n, c, *in_sp, *kernel, *stride, *pads_lo, *dilation, *out_sp)
    )


def im2col2d(x, kernel, stride, pads_lo, dilation, out_sp):
    """cols (C * kh * kw, N * OH * OW) of x (N, C, H, W); ``pads_lo``: (top, left) padding."""
    cp = C.cupy_module()
    x = C.contiguous(x)
    n, c, h, w = x.shape
    rows = c * kernel[0] * kernel[1]
    cols = cp.empty((rows, n * out_sp[0] * out_sp[1]), dtype=x.dtype)
    if cols.size:
        fn = C.function(SOURCE, NAMES, f"im2col2d<{C.ctype(x.dtype)}>")
        geo = _geo(n, c, (h, w), kernel, stride, pads_lo, dilation, out_sp)
        fn((C.blocks_for(cols.size, _THREADS * 4),), (_THREADS,), (x, cols, *geo))
    return cols


def col2im2d(gcols, shape, kernel, stride, pads_lo, dilation, out_sp):
    """The adjoint of im2col2d: gx of ``shape`` (N, C, H, W) summing every column entry that
    read each pixel (deterministic: a gather, no atomics)."""
    cp = C.cupy_module()
    gcols = C.contiguous(gcols)
    n, c, h, w = shape
    gx = cp.empty(shape, dtype=gcols.dtype)
    if gx.size:
        fn = C.function(SOURCE, NAMES, f"col2im2d<{C.ctype(gcols.dtype)}>")
        geo = _geo(n, c, (h, w), kernel, stride, pads_lo, dilation, out_sp)
        fn((C.blocks_for(gx.size, _THREADS * 4),), (_THREADS,), (gcols, gx, *geo))
    return gx
