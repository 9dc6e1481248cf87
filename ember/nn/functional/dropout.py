"""Dropout: dropout, dropout1d/2d/3d (whole channels), alpha_dropout, feature_alpha_dropout.

Inverted dropout: in training each element (or channel) is kept with probability 1 - p and
scaled by 1 / (1 - p), so evaluation is the identity. The mask is drawn from Ember's RNG
(``generator`` or the default one), so ``ember.manual_seed`` makes a run repeatable.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from ember.autograd.function import Function
from ember.ops.inplace import apply_inplace
from ember.ops.pointwise import scale_grad
from ember.tensor import dtypes
from ember.tensor.backend import get_array_module
from ember.tensor.random import draw_uniform
from ember.tensor.tensor import Tensor

__all__ = [
    "dropout",
    "dropout1d",
    "dropout2d",
    "dropout3d",
    "alpha_dropout",
    "feature_alpha_dropout",
]

_SELU_ALPHA = 1.7580993408473766  # -selu's lambda * alpha: the value dropped units take


class Dropout(Function):
    """``x * mask`` (mask: 0 or 1 / (1 - p), broadcast over channels for feature dropout),
    plus a constant ``shift`` for alpha dropout. The gradient is ``grad * mask``."""

    def __init__(self, mask, shift=None):
        self.mask, self.shift = mask, shift

    def forward(self, x):
        out = x * self.mask
        if self.shift is not None:
            out += self.shift
        return out

    def backward(self, g):
        return scale_grad(g, self.mask)


def _check_p(p) -> None:
    if p < 0.0 or p > 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")


def _noise(input: Tensor, p: float, feature: int, generator):
    """The keep mask (1 with probability 1 - p) in the input's dtype: one value per element,
    or (feature dropout) one per entry of the first ``feature`` dims: (sample, channel) for a
    batched input, channel for an unbatched one."""
    shape = input.data.shape
    if feature:
        shape = shape[:feature] + (1,) * (len(shape) - feature)
    dt = input.data.dtype
    work = np.float64 if dt == np.float64 else np.float32
    draw = draw_uniform(shape, work, input.device, generator)  # on the input's device
    return (draw >= p).astype(dt)


def _apply(
    input: Tensor,
    p: float,
    training: bool,
    inplace: bool,
    generator,
    *,
    feature: int,
    alpha: bool,
    op: str,
) -> Tensor:
    _check_p(p)
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}(): argument 'input' must be Tensor, not {type(input).__name__}")
    if p == 0 or not training or input.data.size == 0:
        return input
    if input.data.dtype not in dtypes.FLOATING_NP:
        raise RuntimeError(f"{op}: expected a floating point input, got {input.dtype.name}")
    if feature and input.data.ndim < 2:
        raise RuntimeError(
            f"{op}: Feature dropout requires at least 2 dimensions in the input, "
            f"got shape {tuple(input.data.shape)}"
        )
    dt = input.data.dtype
    if p == 1:  # torch: input * 0 (so -x gives -0.0), for every kind of dropout
        mask, shift = get_array_module(input.data).zeros((1,) * input.data.ndim, dt), None
    else:
        noise = _noise(input, p, feature, generator)
        if alpha:
            a = 1.0 / math.sqrt((_SELU_ALPHA**2 * p + 1) * (1 - p))
            shift = (noise - 1) * dt.type(_SELU_ALPHA * a) + dt.type(_SELU_ALPHA * a * p)
            mask = noise * dt.type(a)
        else:
            mask, shift = noise * dt.type(1.0 / (1.0 - p)), None

    def fn(x):
        return Dropout(mask, shift).apply(x)

    if inplace:
        return apply_inplace(input, fn, op=op + "_")
    return fn(input)


def dropout(
    input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False, generator=None
) -> Tensor:
    """Zero each element with probability ``p`` and scale the rest by ``1 / (1 - p)``."""
    return _apply(input, p, training, inplace, generator, feature=0, alpha=False, op="dropout")


def dropout1d(
    input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False, generator=None
) -> Tensor:
    """Zero whole channels of an (N, C, L) or (C, L) input."""
    _check_p(p)
    ndim = input.data.ndim
    if ndim not in (2, 3):
        raise RuntimeError(
            f"dropout1d: Expected 2D or 3D input, but received a {ndim}D input (shape "
            f"{tuple(input.data.shape)}). Note that dropout1d exists to provide channel-wise "
            "dropout on inputs with 1 spatial dimension, a channel dimension, and an optional "
            "batch dimension (i.e. 2D or 3D inputs)."
        )
    return _apply(
        input, p, training, inplace, generator, feature=ndim - 1, alpha=False, op="dropout1d"
    )


def dropout2d(
    input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False, generator=None
) -> Tensor:
    """Zero whole channels of an (N, C, H, W) input (a 3-D input is taken as (N, C, L))."""
    _check_p(p)
    ndim = input.data.ndim
    if ndim not in (3, 4):
        warnings.warn(
            f"dropout2d: Received a {ndim}-D input to dropout2d, which is "
            "deprecated and will result in an error in a future release. To retain "
            "the behavior and silence this warning, please use dropout instead.",
            UserWarning,
            stacklevel=2,
        )
    if ndim == 3:
        warnings.warn(
            "dropout2d: Received a 3D input to dropout2d and assuming that "
            "channel-wise 1D dropout behavior is desired - input is interpreted as "
            "shape (N, C, L), where C is the channel dim.",
            UserWarning,
            stacklevel=2,
        )
    return _apply(input, p, training, inplace, generator, feature=2, alpha=False, op="dropout2d")


def dropout3d(
    input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False, generator=None
) -> Tensor:
    """Zero whole channels of an (N, C, D, H, W) or (C, D, H, W) input."""
    _check_p(p)
    ndim = input.data.ndim
    if ndim not in (4, 5):
        warnings.warn(
            f"dropout3d: Received a {ndim}-D input to dropout3d, which is "
            "deprecated and will result in an error in a future release.",
            UserWarning,
            stacklevel=2,
        )
    return _apply(
        input,
        p,
        training,
        inplace,
        generator,
        feature=2 if ndim == 5 else 1,
        alpha=False,
        op="dropout3d",
    )


def alpha_dropout(
    input: Tensor, p: float = 0.5, training: bool = False, inplace: bool = False, generator=None
) -> Tensor:
    """Dropout for SELU networks: dropped units take SELU's negative saturation value and an
    affine correction keeps the mean and variance."""
    return _apply(input, p, training, inplace, generator, feature=0, alpha=True, op="alpha_dropout")


def feature_alpha_dropout(
    input: Tensor, p: float = 0.5, training: bool = False, inplace: bool = False, generator=None
) -> Tensor:
    """alpha_dropout of whole channels."""
    return _apply(
        input, p, training, inplace, generator, feature=2, alpha=True, op="feature_alpha_dropout"
    )
