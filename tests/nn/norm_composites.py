"""The composite (ember-ops) forms of batch norm and layer norm: the oracles of the fused
Functions in ember.nn.functional.normalization, differentiable to any order."""

from __future__ import annotations

from ember.autograd.grad_mode import no_grad
from ember.ops.shape import reshape
from ember.ops.unary import rsqrt
from ember.tensor.tensor import Tensor


def batch_norm_composite(
    input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5
) -> Tensor:
    """batch_norm from ember ops (mean, var, rsqrt, broadcasting): the oracle of the fused
    Function, and differentiable to any order."""
    view = (input.data.shape[1],) + (1,) * (input.data.ndim - 2)
    axes = (0,) + tuple(range(2, input.data.ndim))
    if training:
        mean = input.mean(axes, keepdim=True)
        var = ((input - mean) * (input - mean)).mean(axes, keepdim=True)
        m = input.data.size // input.data.shape[1]
        with no_grad():
            if running_mean is not None:
                running_mean.mul_(1 - momentum).add_(reshape(mean, (-1,)) * momentum)
            if running_var is not None:
                running_var.mul_(1 - momentum).add_(reshape(var, (-1,)) * (momentum * m / (m - 1)))
    else:
        mean, var = reshape(running_mean, view), reshape(running_var, view)
    out = (input - mean) * rsqrt(var + eps)
    if weight is not None:
        out = out * reshape(weight, view)
    if bias is not None:
        out = out + reshape(bias, view)
    return out


def layer_norm_composite(input, normalized_shape, weight=None, bias=None, eps=1e-5) -> Tensor:
    """layer_norm from ember ops: the fused Function's oracle."""
    k = 1 if isinstance(normalized_shape, int) else len(tuple(normalized_shape))
    axes = tuple(range(input.data.ndim - k, input.data.ndim))
    mean = input.mean(axes, keepdim=True)
    xc = input - mean
    out = xc * rsqrt((xc * xc).mean(axes, keepdim=True) + eps)
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out
