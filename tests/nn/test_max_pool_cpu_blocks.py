"""The NumPy kernel of 2x2 stride-2 max pooling (``_max_pool_cpu``), made to run on small
inputs in many uneven blocks (odd channel counts, one plane per block), on one and on two
threads, against torch: forward, the gradient, indices, every tie pattern; and the cases it
hands back to the generic kernel (NaN inputs) or treats apart (non-finite gradients)."""

import importlib

import numpy as np
import pytest

import ember
import ember.nn.functional as F
from ember.ops import parallel
from tests.oracle import check_op, torch
from tests.oracle import rand as _rand

MP = importlib.import_module("ember.nn.functional._max_pool_cpu")
TF = torch.nn.functional


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def small_blocks(request, monkeypatch):
    before = parallel.get_num_threads()
    parallel.set_num_threads(request.param)
    monkeypatch.setattr(MP, "MIN_ELEMENTS", 1)
    monkeypatch.setattr(MP, "BLOCK_BYTES", 1)  # one plane per block
    yield request.param
    parallel.set_num_threads(before)


# ------------------------------------------------------------------------- max pool
@pytest.mark.parametrize("shape", [(3, 5, 6, 8), (7, 4, 2), (5, 6, 10)])
def test_max_pool_blocks_match_torch(small_blocks, shape):
    x = np.asarray(_rand(*shape, seed=20))
    check_op(
        lambda t, lib=F: lib.max_pool2d(t, 2, return_indices=True),
        [x],
        torch_fn=lambda t: TF.max_pool2d(t, 2, return_indices=True),
    )


def test_max_pool_blocks_ties_go_to_the_first_maximum(small_blocks):
    """Integer-valued inputs: every tie pattern in a 2x2 window (row-major first max)."""
    combos = np.array(np.meshgrid(*[[0.0, 1.0, 2.0]] * 4, indexing="ij")).reshape(4, -1).T
    planes = combos.reshape(-1, 3, 2, 2).transpose(0, 2, 1, 3)  # 27 planes of 2x6
    x = np.ascontiguousarray(planes.reshape(27, 1, 2, 6)).astype(np.float32)
    check_op(
        lambda t, lib=F: lib.max_pool2d(t, 2, return_indices=True),
        [x],
        torch_fn=lambda t: TF.max_pool2d(t, 2, return_indices=True),
    )
    ey, ei = F.max_pool2d(ember.tensor(x), 2, return_indices=True)
    ty, ti = TF.max_pool2d(torch.tensor(x), 2, return_indices=True)
    np.testing.assert_array_equal(ei.numpy(), ti.numpy())


def test_max_pool_blocks_nan_and_non_finite_gradients(small_blocks):
    x = np.asarray(_rand(3, 5, 4, 6, seed=21))
    x[1, 2, 0, 3] = np.nan
    ey, ei = F.max_pool2d(ember.tensor(x), 2, return_indices=True)
    ty, ti = TF.max_pool2d(torch.tensor(x), 2, return_indices=True)
    np.testing.assert_array_equal(ey.numpy(), ty.numpy())
    np.testing.assert_array_equal(ei.numpy(), ti.numpy())
    x = np.asarray(_rand(3, 5, 4, 6, seed=22))
    g = np.asarray(_rand(3, 5, 2, 3, seed=23))
    g[0, 1, 1, 2], g[2, 4, 0, 0] = np.inf, np.nan
    xe, xt = ember.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    F.max_pool2d(xe, 2).backward(ember.tensor(g))
    TF.max_pool2d(xt, 2).backward(torch.tensor(g))
    np.testing.assert_array_equal(xe.grad.numpy(), xt.grad.numpy())


def test_max_pool_blocks_float64_double_backward_and_noncontiguous(small_blocks):
    x = np.asarray(_rand(2, 3, 4, 6, seed=24, dtype=np.float64))
    xe = ember.tensor(x, requires_grad=True)
    assert ember.autograd.gradgradcheck(lambda t: F.max_pool2d(t, 2), (xe,))
    check_op(
        lambda t: F.max_pool2d(t, 2),
        [np.asarray(_rand(4, 5, 6, 8, seed=25))],
        torch_fn=lambda t: TF.max_pool2d(t, 2),
        noncontiguous=True,
    )


def test_max_pool_blocks_only_take_2x2_stride_2():
    from ember.nn.functional._pooling import PoolGeometry

    def geo(k, s, p, d, size):
        out = tuple(
            (n + 2 * q - e * (a - 1) - 1) // b + 1 for n, a, b, q, e in zip(size, k, s, p, d)
        )
        return PoolGeometry(k, s, p, d, size, out)

    x = np.zeros((64, 8, 16, 16), np.float32)
    assert MP.usable(x, geo((2, 2), (2, 2), (0, 0), (1, 1), (16, 16)), x.size // 4)
    assert not MP.usable(x, geo((3, 3), (2, 2), (0, 0), (1, 1), (16, 16)), x.size // 4)
    assert not MP.usable(x, geo((2, 2), (1, 1), (0, 0), (1, 1), (16, 16)), x.size // 4)
    assert not MP.usable(x, geo((2, 2), (2, 2), (1, 1), (1, 1), (16, 16)), x.size // 4)
    assert not MP.usable(x.astype(np.int32), geo((2, 2), (2, 2), (0, 0), (1, 1), (16, 16)), 1 << 20)
    odd = np.zeros((64, 8, 15, 16), np.float32)
    assert not MP.usable(odd, geo((2, 2), (2, 2), (0, 0), (1, 1), (15, 16)), odd.size // 4)
