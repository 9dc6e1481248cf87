"""ember.ops.index_kernels.add_rows, the scatter-add under index_add, gather/scatter and
indexing backward: repeated indices accumulate as np.add.at does."""

from __future__ import annotations

import numpy as np
import pytest

from ember.ops.index_kernels import _OCCURRENCE_PASSES, add_rows


@pytest.mark.parametrize("seed", range(40))
def test_add_rows_matches_add_at(seed):
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(1, 9)), int(rng.integers(1, 40))
    trailing = [(), (3,), (2, 5)][seed % 3]
    idx = rng.integers(0, n, k)
    src = rng.standard_normal((k, *trailing)).astype(np.float32)
    out = rng.standard_normal((n, *trailing)).astype(np.float32)
    ref = out.copy()
    np.add.at(ref, idx, src)
    add_rows(out, idx, src)
    if np.bincount(idx).max() <= _OCCURRENCE_PASSES or not trailing:
        np.testing.assert_array_equal(out, ref)  # the same additions in the same order
    else:
        np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)  # segment sums first


def test_add_rows_wide_rows_with_few_repeats():
    """The upsampling adjoint's pattern: every row hit twice, rows of 65536."""
    rng = np.random.default_rng(0)
    idx = np.repeat(np.arange(64), 2)
    src = rng.standard_normal((128, 65536)).astype(np.float32)
    out = np.zeros((64, 65536), np.float32)
    add_rows(out, idx, src)
    np.testing.assert_array_equal(out, src[0::2] + src[1::2])


@pytest.mark.parametrize(
    "name, n, counts, cols",
    [
        ("padding index", 400, [512] + [1, 2, 3] * 40, 512),  # one long run, few short ones
        ("small vocabulary", 65, [30, 31, 40, 9] * 16 + [33], 512),  # few segments, all long
        ("many heavy runs", 300, [9, 10, 12] * 100, 256),  # more segments than the longest
        ("narrow rows", 65, [30, 35] * 32 + [40], 64),  # np.add.reduceat's case
    ],
)
def test_add_rows_heavy_repeats(name, n, counts, cols):
    """Indices repeated more than _OCCURRENCE_PASSES times: each long run is summed in order
    (one reduction per run, or one pass per rank, whichever is fewer steps), so into a zero
    target the result is np.add.at's bit for bit; np.add.reduceat keeps narrow rows."""
    rng = np.random.default_rng(len(counts))
    idx = rng.permutation(np.repeat(rng.permutation(n)[: len(counts)], counts))
    src = rng.standard_normal((idx.size, cols)).astype(np.float32)
    ref = np.zeros((n, cols), np.float32)
    np.add.at(ref, idx, src)
    out = np.zeros_like(ref)
    add_rows(out, idx, src)
    if cols > 192:
        np.testing.assert_array_equal(out, ref)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    base = rng.standard_normal((n, cols)).astype(np.float32)  # into a non-zero target
    ref2, out2 = base.copy(), base.copy()
    np.add.at(ref2, idx, src)
    add_rows(out2, idx, src)
    np.testing.assert_allclose(out2, ref2, rtol=1e-5, atol=1e-5)
