"""Vector distances and normalisation: normalize, cosine_similarity, pairwise_distance.

Composites of ember's norm, clamp and division, so their gradients (and double backward) come
from those ops; each follows the ATen formula so that the eps edge cases (zero vectors) give
torch's values and gradients.
"""

from __future__ import annotations

import numpy as np

from ember.autograd import autocast_state as _amp
from ember.autograd.function import Function
from ember.ops.conversion import cast_to
from ember.ops.dims import normalize_dim, normalize_dims
from ember.ops.pointwise import broadcast_error, check_tensor
from ember.ops.reduction import sum as _sum
from ember.ops.reduction_stats import norm
from ember.ops.select import clamp_min
from ember.ops.shape import expand
from ember.tensor import dtypes
from ember.tensor.backend import get_array_module
from ember.tensor.tensor import Tensor

__all__ = ["normalize", "cosine_similarity", "pairwise_distance"]


def normalize(input: Tensor, p=2.0, dim: int = 1, eps: float = 1e-12, out=None) -> Tensor:
    """``input / max(||input||_p, eps)`` along ``dim`` (torch.nn.functional.normalize)."""
    if out is not None:
        raise NotImplementedError("normalize: the out= argument is not supported")
    check_tensor(input, "normalize")
    dims = normalize_dims(dim, input.data.ndim, "normalize")  # an int or a tuple of dims
    denom = clamp_min(norm(input, p, dims, keepdim=True), eps)
    return input / denom


class _ClampNoGrad(Function):
    """max(a, eps) forward, identity backward: ATen clamps the norms of cosine_similarity in
    place under no_grad, so the gradient flows as if they were not clamped."""

    def __init__(self, eps: float):
        self.eps = eps

    def forward(self, a):
        return get_array_module(a).maximum(a, a.dtype.type(self.eps))

    def backward(self, g):
        return g


def _broadcast_pair(x1: Tensor, x2: Tensor, op: str) -> tuple:
    s1, s2 = x1.data.shape, x2.data.shape
    if s1 == s2:
        return x1, x2
    try:
        shape = np.broadcast_shapes(s1, s2)
    except ValueError:
        raise broadcast_error(op, s1, s2) from None
    return expand(x1, shape), expand(x2, shape)


@_amp.autocast_op(_amp.FP32)
def cosine_similarity(x1: Tensor, x2: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """<x1, x2> / (max(||x1||, eps) * max(||x2||, eps)) along ``dim``, after broadcasting.

    Each input is divided by its own (clamped) norm first, as ATen does: the result stays in
    [-1, 1] and zero vectors give 0 (their gradient is the other input over eps)."""
    check_tensor(x1, "cosine_similarity")
    check_tensor(x2, "cosine_similarity")
    d1, d2 = x1.dtype, x2.dtype
    common = dtypes.promote_types(d1, d2)
    if not common.is_floating_point:
        raise RuntimeError(
            "cosine_similarity: expected common dtype to be floating point, yet common dtype "
            f"is {common.name} (inputs {tuple(x1.shape)} {d1.name} and {tuple(x2.shape)} "
            f"{d2.name})"
        )
    if not d1.is_floating_point:
        x1 = cast_to(x1, common)
    if not d2.is_floating_point:
        x2 = cast_to(x2, common)
    x1, x2 = _broadcast_pair(x1, x2, "cosine_similarity")
    dim = normalize_dim(dim, x1.data.ndim, "cosine_similarity")
    n1 = _ClampNoGrad(eps).apply(norm(x1, 2, dim, keepdim=True))
    n2 = _ClampNoGrad(eps).apply(norm(x2, 2, dim, keepdim=True))
    return _sum((x1 / n1) * (x2 / n2), dim)


def pairwise_distance(
    x1: Tensor, x2: Tensor, p: float = 2.0, eps: float = 1e-6, keepdim: bool = False
) -> Tensor:
    """``||x1 - x2 + eps||_p`` over the last dim of the broadcast pair (ATen's formula; its
    norm runs in float32 under autocast, as torch's does)."""
    check_tensor(x1, "pairwise_distance")
    check_tensor(x2, "pairwise_distance")
    s1, s2 = x1.data.shape, x2.data.shape
    if s1 != s2:
        try:
            np.broadcast_shapes(s1, s2)
        except ValueError:
            raise broadcast_error("pairwise_distance", s1, s2) from None
    return norm(x1 - x2 + eps, p, max(len(s1), len(s2)) - 1, keepdim)
