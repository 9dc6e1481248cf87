"""pixel_shuffle / pixel_unshuffle and their modules against torch: forward and input gradient
for batched, unbatched, extra-batch-dim, empty and non-contiguous inputs; round trips; float64
gradcheck; reprs; error messages."""

from __future__ import annotations

import numpy as np
import pytest

import ember
import ember.nn as enn
import ember.nn.functional as F
from tests.oracle import check_op, gradcheck_op, rand, torch

tnn = torch.nn
TF = torch.nn.functional


def lib(t):
    return F if isinstance(t, ember.Tensor) else TF


@pytest.mark.parametrize(
    "shape,r",
    [
        ((2, 8, 3, 4), 2),
        ((18, 2, 3), 3),
        ((2, 1, 4, 2, 2), 2),
        ((2, 3, 2, 5), 1),
        ((0, 4, 2, 2), 2),
    ],
)
def test_pixel_shuffle_matches_torch(shape, r):
    # (torch's own backward fails on an empty batch: forward only there)
    check_op(lambda t: lib(t).pixel_shuffle(t, r), [rand(*shape, seed=1)], grad=0 not in shape)


@pytest.mark.parametrize(
    "shape,r",
    [((2, 2, 6, 4), 2), ((2, 6, 9), 3), ((2, 1, 3, 4, 2), 2), ((2, 3, 2, 5), 1)],
)
def test_pixel_unshuffle_matches_torch(shape, r):
    check_op(lambda t: lib(t).pixel_unshuffle(t, r), [rand(*shape, seed=2)])


def test_pixel_unshuffle_of_an_empty_batch():
    """torch 2.13 returns an empty batch unchanged in shape ((0, 1, 2, 2) for r=2, which its
    own backward then rejects); Ember gives the shape the formula says."""
    x = ember.zeros(0, 1, 2, 2, requires_grad=True)
    y = F.pixel_unshuffle(x, 2)
    assert tuple(y.shape) == (0, 4, 1, 1)
    y.sum().backward()
    assert tuple(x.grad.shape) == (0, 1, 2, 2)


def test_noncontiguous_round_trip_modules_and_gradcheck():
    check_op(lambda t: lib(t).pixel_shuffle(t, 2), [rand(4, 8, 3, 5, seed=3)], noncontiguous=True)
    check_op(lambda t: lib(t).pixel_unshuffle(t, 2), [rand(4, 2, 6, 4)], noncontiguous=True)
    x = ember.randn(2, 12, 3, 4)
    back = F.pixel_unshuffle(F.pixel_shuffle(x, 2), 2)
    np.testing.assert_array_equal(back.numpy(), x.numpy())
    em, tm = enn.PixelShuffle(3), tnn.PixelShuffle(3)
    check_op(lambda t: (em if isinstance(t, ember.Tensor) else tm)(t), [rand(1, 9, 2, 3)])
    em, tm = enn.PixelUnshuffle(2), tnn.PixelUnshuffle(2)
    check_op(lambda t: (em if isinstance(t, ember.Tensor) else tm)(t), [rand(1, 3, 4, 6)])
    assert repr(enn.PixelShuffle(2)) == repr(tnn.PixelShuffle(2))
    assert repr(enn.PixelUnshuffle(3)) == repr(tnn.PixelUnshuffle(3))
    gradcheck_op(lambda t: F.pixel_shuffle(t, 2), [rand(1, 4, 2, 3)])
    gradcheck_op(lambda t: F.pixel_unshuffle(t, 2), [rand(1, 2, 4, 2)])


def test_pixel_shuffle_errors():
    with pytest.raises(RuntimeError, match="pixel_shuffle expects input to have at least 3 dim"):
        F.pixel_shuffle(ember.randn(2, 3), 2)
    with pytest.raises(RuntimeError, match=r"input.size\(-3\)=3 is not divisible by 4"):
        F.pixel_shuffle(ember.randn(1, 3, 2, 2), 2)
    with pytest.raises(RuntimeError, match="pixel_shuffle expects a positive upscale_factor"):
        F.pixel_shuffle(ember.randn(1, 4, 2, 2), 0)
    with pytest.raises(RuntimeError, match=r"height to be divisible .*input.size\(-2\)=3"):
        F.pixel_unshuffle(ember.randn(1, 4, 3, 2), 2)
    with pytest.raises(RuntimeError, match=r"width to be divisible .*input.size\(-1\)=3"):
        F.pixel_unshuffle(ember.randn(1, 4, 2, 3), 2)
    with pytest.raises(RuntimeError, match="pixel_unshuffle expects a positive downscale_factor"):
        F.pixel_unshuffle(ember.randn(1, 4, 2, 2), -1)
    with pytest.raises(RuntimeError, match="pixel_unshuffle expects input to have at least 3"):
        F.pixel_unshuffle(ember.randn(4, 2), 2)
    with pytest.raises(TypeError, match="pixel_shuffle: upscale_factor must be an int"):
        F.pixel_shuffle(ember.randn(1, 4, 2, 2), 2.0)
