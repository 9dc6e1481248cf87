"""pixel_shuffle / pixel_unshuffle: sub-pixel rearrangements between channels and space.

Pure reshape + permute compositions, so their gradients are the inverse rearrangement.
"""

from __future__ import annotations

from ember.ops.pointwise import check_tensor
from ember.ops.shape import permute, reshape
from ember.tensor.tensor import Tensor

__all__ = ["pixel_shuffle", "pixel_unshuffle"]


def _check(input, factor, op: str, what: str) -> tuple:
    check_tensor(input, op)
    shape = tuple(input.data.shape)
    if len(shape) < 3:
        raise RuntimeError(
            f"{op} expects input to have at least 3 dimensions, but got input with "
            f"{len(shape)} dimension(s) (shape {shape})"
        )
    if not isinstance(factor, int) or isinstance(factor, bool):
        raise TypeError(f"{op}: {what} must be an int, got {type(factor).__name__}")
    if factor <= 0:
        raise RuntimeError(f"{op} expects a positive {what}, but got {factor}")
    return shape


def pixel_shuffle(input: Tensor, upscale_factor: int) -> Tensor:
    """(*, C*r*r, H, W) -> (*, C, H*r, W*r)."""
    shape = _check(input, upscale_factor, "pixel_shuffle", "upscale_factor")
    r = upscale_factor
    *lead, c, h, w = shape
    if c % (r * r):
        raise RuntimeError(
            "pixel_shuffle expects its input's 'channel' dimension to be divisible by the "
            f"square of upscale_factor, but input.size(-3)={c} is not divisible by {r * r} "
            f"(input shape {shape})"
        )
    oc, n = c // (r * r), len(lead)
    x = reshape(input, (*lead, oc, r, r, h, w))
    x = permute(x, (*range(n), n, n + 3, n + 1, n + 4, n + 2))
    return reshape(x, (*lead, oc, h * r, w * r))


def pixel_unshuffle(input: Tensor, downscale_factor: int) -> Tensor:
    """(*, C, H*r, W*r) -> (*, C*r*r, H, W)."""
    shape = _check(input, downscale_factor, "pixel_unshuffle", "downscale_factor")
    r = downscale_factor
    *lead, c, h, w = shape
    for size, axis, name in ((h, -2, "height"), (w, -1, "width")):
        if size % r:
            raise RuntimeError(
                f"pixel_unshuffle expects {name} to be divisible by downscale_factor, but "
                f"input.size({axis})={size} is not divisible by {r} (input shape {shape})"
            )
    oh, ow, n = h // r, w // r, len(lead)
    x = reshape(input, (*lead, c, oh, r, ow, r))
    x = permute(x, (*range(n), n, n + 2, n + 4, n + 1, n + 3))
    return reshape(x, (*lead, c * r * r, oh, ow))
