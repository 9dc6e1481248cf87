"""Raw-array kernels shared by indexing, gather/scatter and embedding.

Scatter-adding with repeated indices is the heart of every indexing backward. ``np.add.at``
on a 2-D array is slow (it goes element by element), so the common case, whole rows gathered
by one integer array, sorts the indices once, adds rarely repeated rows one occurrence at a
time and sums each long run of equal rows in order. CuPy gets ``add.at`` (atomic adds on the
GPU), which is already fast.
"""

from __future__ import annotations

import numpy as np

from ember.cpu import index as cpu_index
from ember.tensor.backend import get_array_module

# ``add_at`` builds an int64 map of the target's positions when the target is at most this
# big, or not much bigger than the values added (otherwise the map costs more than it saves).
_LINEAR_TRICK_MAX = 1 << 16


def _gpu_add_at(xp, out, key, src) -> None:
    at = getattr(xp.add, "at", None)
    if at is not None:
        at(out, key, src)
        return
    import cupyx  # older CuPy: no ufunc.at

    cupyx.scatter_add(out, key, src)


_OCCURRENCE_PASSES = 8  # up to this many repeats of one index: a pass per occurrence
# np.add.reduceat sums runs of rows well while the rows are narrow: 65 indices over 2048 rows
# of 128 in 0.27 ms (0.40 in the passes below), but of 512 in 4.3 ms (0.78 below)
_REDUCEAT_MAX_COLS = 192
_REDUCEAT_MIN_MEAN = 16  # rows per distinct index


def add_rows(out, idx, src) -> None:
    """``out[idx[k]] += src[k]`` for every k, repeated indices accumulating.

    ``out`` is a C-contiguous array of shape (N, ...); ``idx`` is 1-D, non-negative and in
    range; ``src`` has shape (len(idx), ...) matching ``out``'s trailing shape. Float32/64 NumPy
    arrays with int32/64 indices take the CPU kernel (``ember.cpu.index``: every row added in
    index order, np.add.at's bits into any target); the rest, and kernels off, the paths below.
    """
    k = idx.size
    if k == 0:
        return
    xp = get_array_module(out)
    if xp is not np:
        _gpu_add_at(xp, out, idx, src)
        return
    if cpu_index.supports(out, idx, src) and cpu_index.add_rows(out, idx, src):
        return  # ember/cpu/_index_kernels.py: one in-order loop, np.add.at's bits
    if not out.flags.c_contiguous:
        np.add.at(out, idx, src)
        return
    rows = out.reshape(out.shape[0], -1)
    vals = src.reshape(k, -1)
    if rows.shape[1] == 1:  # one number per row: the 1-D add.at loop is fast
        np.add.at(rows.reshape(-1), idx, vals.reshape(-1))
        return
    order = np.argsort(idx, kind="stable")
    srt = idx[order]
    first = np.empty(k, dtype=bool)
    first[0] = True
    np.not_equal(srt[1:], srt[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    if starts.size == k:  # no repeats: a plain fancy-index add is exact
        rows[idx] += vals
        return
    counts = np.diff(starts, append=k)
    if rows.shape[1] <= _REDUCEAT_MAX_COLS and k >= _REDUCEAT_MIN_MEAN * starts.size:
        # narrow rows in long runs (a small vocabulary): np.add.reduceat is fastest there
        rows[srt[starts]] += np.add.reduceat(vals[order], starts, axis=0)
        return
    light = counts <= _OCCURRENCE_PASSES
    # Indices seen up to _OCCURRENCE_PASSES times: one fancy-index add per occurrence number
    # (the j-th time an index appears); within one pass every index is unique, so each row
    # gets its additions in input order, as np.add.at would. np.add.reduceat along axis 0 of
    # wide rows is pathologically slow (its segments walk the columns): (128, 65536) in pairs
    # 65 ms, this 13 ms.
    rank = np.arange(k) - np.repeat(starts, counts)
    if not light.all():
        rank[np.repeat(~light, counts)] = _OCCURRENCE_PASSES  # left to the heavy sums below
    for j in range(int(counts[light].max(initial=0))):
        sel = order[rank == j]
        rows[idx[sel]] += vals[sel]
    if not light.all():
        heavy = np.flatnonzero(~light)
        rows[srt[starts[heavy]]] += _segment_sums(vals, order, starts[heavy], counts[heavy])


def _segment_sums(vals, order, starts, counts):
    """For each segment ``order[s : s + c]`` of the sorted positions, the sum of its rows of
    ``vals`` in order (each row added in turn, as np.add.at adds them). A few long segments
    (a padding index, a small vocabulary) are one reduction each, many segments one pass per
    rank: whichever takes fewer Python steps. Both beat np.add.reduceat 1.4-6x on rows of 512
    (embedding gradients with 512 padding repeats: 16.6 -> ~4 ms; 65 tokens: 13.2 -> ~2)."""
    longest = int(counts.max())
    if starts.size <= longest:
        return np.stack([vals[order[s : s + c]].sum(axis=0) for s, c in zip(starts, counts)])
    acc = vals[order[starts]]
    for j in range(1, longest):
        live = np.flatnonzero(counts > j)
        acc[live] += vals[order[starts[live] + j]]
    return acc


def add_at(out, key, src) -> None:
    """``out[key] += src`` with repeats accumulating, for any NumPy/CuPy index ``key``."""
    xp = get_array_module(out)
    if xp is not np:
        _gpu_add_at(xp, out, key, src)
        return
    if out.flags.c_contiguous and out.size <= max(_LINEAR_TRICK_MAX, 4 * np.size(src)):
        # The linear position of every selected element, then the fast 1-D add.at loop.
        lin = np.arange(out.size).reshape(out.shape)[key]
        np.add.at(out.reshape(-1), lin.reshape(-1), np.broadcast_to(src, lin.shape).reshape(-1))
        return
    np.add.at(out, key, src)


def add_coords(out, coords: tuple, src) -> None:
    """``out[coords] += src`` where ``coords`` are broadcastable per-dim integer arrays
    (non-negative, in range), e.g. from :func:`dim_coords`; repeats accumulate."""
    xp = get_array_module(out)
    if xp is not np or not out.flags.c_contiguous:
        add_at(out, coords, src)
        return
    lin = None
    stride = 1
    for d in range(out.ndim - 1, -1, -1):
        term = coords[d] * stride if stride != 1 else coords[d]
        lin = term if lin is None else lin + term
        stride *= out.shape[d]
    if lin is None:  # 0-d
        out += src
        return
    lin = np.broadcast_to(lin, src.shape)
    np.add.at(out.reshape(-1), lin.reshape(-1), src.reshape(-1))


def dim_coords(idx, dim: int) -> tuple:
    """Per-dim index arrays selecting ``[i0, .., idx[i], .., in]``: what gather and scatter
    address, as an open (broadcastable) grid with ``idx`` at ``dim``."""
    xp = get_array_module(idx)
    nd = idx.ndim
    coords = []
    for d, s in enumerate(idx.shape):
        if d == dim:
            coords.append(idx)
        else:
            shape = [1] * nd
            shape[d] = s
            coords.append(xp.arange(s).reshape(shape))
    return tuple(coords)


def bounds(idx) -> tuple:
    """(min, max) of an integer array as Python ints (one device sync on the GPU)."""
    if idx.size == 0:
        return 0, 0
    if idx.size <= 64 and type(idx) is np.ndarray:  # cheaper than two tiny reductions
        vals = idx.ravel().tolist()
        return min(vals), max(vals)
    return int(idx.min()), int(idx.max())


def check_bounds(
    idx, size: int, dim: int, *, negative: bool, exc=IndexError, prefix: str = ""
) -> None:
    """Raise ``index 7 is out of bounds for dimension 1 with size 4`` (PyTorch's wording)."""
    lo, hi = bounds(idx)
    bad = None
    if hi >= size:
        bad = hi
    elif lo < (-size if negative else 0):
        bad = lo
    if bad is not None:
        raise exc(f"{prefix}index {bad} is out of bounds for dimension {dim} with size {size}")


def wrap_negative(idx, size: int):
    """Python-style negative indices made non-negative (no copy when there are none)."""
    if idx.size and int(idx.min()) < 0:
        xp = get_array_module(idx)
        return xp.where(idx < 0, idx + size, idx)
    return idx
