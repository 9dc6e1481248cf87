"""Launchers for embedding.cu: the embedding weight gradient (a scatter-add of output rows
into weight rows), atomic or deterministic.

Oracle: ember.ops.nn_ops' EmbeddingBackward (``index_kernels.add_rows``, xp-generic).
"""

from __future__ import annotations

import os

import numpy as np

from ember.cuda import compile as C

SOURCE = "embedding.cu"
_TYPES = ("float", "__half", "__nv_bfloat16")
NAMES = tuple(f"embedding_backward_{k}<{t}>" for k in ("atomic", "sorted") for t in _TYPES)
_MAX_GRID = 65535 * 4
_deterministic = os.environ.get("EMBER_DETERMINISTIC", "0") == "1"


def set_deterministic(flag: bool) -> None:
    """Choose the sorted (run-to-run identical) kernel over the atomic one from now on
    (what ``Trainer(deterministic=True)`` asks for; also ``EMBER_DETERMINISTIC=1``)."""
    global _deterministic
    _deterministic = bool(flag)


def deterministic() -> bool:
    return _deterministic


def supports(g) -> bool:
    return C.ctype(g.dtype) is not None and g.ndim >= 1


def embedding_backward(idx, g, num: int, deterministic: bool = False):
    """dweight (num, *tail) from lookups ``idx`` (any shape, int) and the output gradient
    ``g`` (idx.shape + tail), in g's dtype, accumulated in fp32."""
    cp = C.cupy_module()
    flat = C.contiguous(cp.asarray(idx, dtype=np.int64).reshape(-1))
    lookups = flat.size
    tail = g.shape[idx.ndim :]
    dim = 1
    for s in tail:
        dim *= s
    g2 = C.contiguous(g.reshape(lookups, dim))
    out = cp.zeros((num, dim), dtype=np.float32)
    t = C.ctype(g.dtype)
    threads = C.row_threads(dim, 1, 256)
    if lookups and dim:
        if deterministic:
            order = C.contiguous(cp.argsort(flat, kind="stable"))
            ordered = flat[order]
            bounds = cp.flatnonzero(ordered[1:] != ordered[:-1]) + 1
            # CuPy concatenates only device arrays (a Python list raises TypeError)
            last = cp.full(1, lookups, dtype=np.int64)
            starts = cp.concatenate(
                (cp.zeros(1, np.int64), bounds.astype(np.int64, copy=False), last)
            )
            rows = C.contiguous(ordered[starts[:-1]])
            segments = rows.size
            kernel = C.function(SOURCE, NAMES, f"embedding_backward_sorted<{t}>")
            args = (order, starts, rows, g2, out, np.int64(segments), np.int32(dim))
            kernel((min(segments, _MAX_GRID),), (threads,), args)
        else:
            kernel = C.function(SOURCE, NAMES, f"embedding_backward_atomic<{t}>")
            args = (flat, g2, out, np.int64(lookups), np.int32(dim))
            kernel((min(lookups, _MAX_GRID),), (threads,), args)
    return C.from_f32(out, g.dtype).reshape((num,) + tail)
