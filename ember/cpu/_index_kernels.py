"""Row scatter-add: ``out[idx[k]] += src[k]`` for k in order, one row at a time.

The additions happen in index order, each row of ``src`` added element by element into its
destination row, exactly the float operations (and their order) of ``np.add.at(out, idx, src)``,
so the result is np.add.at's bit for bit, whatever ``out`` holds. Negative indices wrap as
NumPy's do; a pre-pass checks every index before anything is written (``boundscheck`` is off).
"""

from __future__ import annotations

from ember.cpu.compile import JIT_OPTIONS, jit

_SIGNATURES = [
    f"int64({f}[:, ::1], {i}[::1], {f}[:, ::1])"
    for f in ("float32", "float64")
    for i in ("int64", "int32")
]


@jit(_SIGNATURES, **JIT_OPTIONS)
def add_rows(out, idx, src):
    """``out[idx[k]] += src[k]`` for every k in order; returns -1, or the position of the
    first index outside ``[-n, n)`` (then nothing is written)."""
    n = out.shape[0]
    for k in range(idx.size):
        i = idx[k]
        if i < -n or i >= n:
            return k
    cols = out.shape[1]
    for k in range(idx.size):
        i = idx[k]
        if i < 0:
            i += n
        row = out[i]
        val = src[k]
        for j in range(cols):
            row[j] += val[j]
    return -1
