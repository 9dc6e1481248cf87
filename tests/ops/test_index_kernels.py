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
