"""Lookups: ``embedding`` and ``one_hot`` under torch.nn.functional's names.

Both live in ``ember.ops`` (the embedding's scatter-add backward, ``padding_idx`` and the
``max_norm`` renormalisation included). This family adds ``scale_grad_by_freq``: each
looked-up row's gradient divided by how often its index occurs in the batch.
"""

from __future__ import annotations

import numpy as np

from ember.autograd.function import Function
from ember.ops.gather_scatter import one_hot
from ember.ops.nn_ops import embedding as _embedding
from ember.ops.pointwise import scale_grad
from ember.tensor.backend import get_array_module
from ember.tensor.tensor import Tensor

__all__ = ["embedding", "one_hot"]


class _GradScale(Function):
    """The identity forward; the gradient is ``grad * w`` (w: 1 / index frequency)."""

    def __init__(self, w):
        self.w = w

    def forward(self, x):
        return x

    def backward(self, g):
        return scale_grad(g, self.w)


def embedding(
    input: Tensor,
    weight: Tensor,
    padding_idx: int | None = None,
    max_norm: float | None = None,
    norm_type: float = 2.0,
    scale_grad_by_freq: bool = False,
    sparse: bool = False,
) -> Tensor:
    """``weight[input]``: rows of ``weight`` picked by integer indices of any shape."""
    if sparse:
        raise NotImplementedError(
            "embedding: sparse=True needs sparse gradients, which Ember "
            "does not have; use sparse=False (dense gradients)"
        )
    out = _embedding(input, weight, padding_idx, max_norm, norm_type)
    if not scale_grad_by_freq or not out.requires_grad:
        return out
    idx = input.data if isinstance(input, Tensor) else np.asarray(input)
    xp = get_array_module(idx)
    flat = idx.reshape(-1)
    counts = xp.bincount(flat, minlength=weight.data.shape[0])
    w = (1.0 / counts[flat]).astype(weight.data.dtype).reshape(idx.shape + (1,))
    return _GradScale(w).apply(out)
