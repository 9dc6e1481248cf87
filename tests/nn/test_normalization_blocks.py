"""The NumPy layer-norm kernel over several row blocks on two threads (small _LN_BLOCK): the
per-block partial sums of dw and db, the last short block, with and without affine."""

import numpy as np
import pytest

import ember.nn.functional as F
from ember.nn.functional import _layer_norm as N
from ember.ops import parallel
from tests.oracle import check_op, torch
from tests.oracle import rand as _rand

TF = torch.nn.functional


@pytest.fixture(autouse=True)
def numpy_path(monkeypatch):
    """These tests are about the NumPy layer-norm blocks: ember/cpu's fused loop stays off (it is
    tested against these blocks in tests/cpu)."""
    monkeypatch.setenv("EMBER_CPU_KERNELS", "0")


@pytest.fixture
def two_threads(monkeypatch):
    before = parallel.get_num_threads()
    parallel.set_num_threads(2)
    monkeypatch.setattr(N, "_LN_BLOCK", 28 * 16)  # many small blocks
    yield
    parallel.set_num_threads(before)


@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_in_row_blocks_matches_torch(two_threads, affine):
    x = np.asarray(_rand(3, 37, 16, seed=1))  # 111 rows: 4 blocks of 28, the last one short
    assert -(-111 // N._ln_rows(111, 16)) > 2
    if affine:
        w, b = np.asarray(_rand(16, seed=2)), np.asarray(_rand(16, seed=3))
        check_op(
            lambda t, u, v: F.layer_norm(t, (16,), u, v),
            [x, w, b],
            torch_fn=lambda t, u, v: TF.layer_norm(t, (16,), u, v),
            atol=1e-5,
            rtol=1e-4,
        )
    else:
        check_op(
            lambda t: F.layer_norm(t, (16,)),
            [x],
            torch_fn=lambda t: TF.layer_norm(t, (16,)),
            atol=1e-5,
            rtol=1e-4,
        )


@pytest.mark.parametrize("shape", [(2048, 128), (2049, 128), (7, 5), (1, 1), (96, 3000), (0, 4)])
def test_col_op_equals_the_plain_broadcast(shape):
    from ember.nn.functional._norm_common import col_op

    rng = np.random.default_rng(0)
    a = rng.standard_normal(shape).astype(np.float32)
    v = rng.standard_normal(shape[1]).astype(np.float32)
    for ufunc in (np.multiply, np.add):
        out = np.empty_like(a)
        col_op(ufunc, a, v, out)
        np.testing.assert_array_equal(out, ufunc(a, v))
        inplace = a.copy()
        col_op(ufunc, inplace, v, inplace)
        np.testing.assert_array_equal(inplace, ufunc(a, v))
    strided = np.asfortranarray(a)  # not C-contiguous: the plain broadcast
    out = np.empty_like(a)
    col_op(np.multiply, strided, v, out)
    np.testing.assert_array_equal(out, a * v)
