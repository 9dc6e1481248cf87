"""Gradient clipping (torch.nn.utils.clip_grad_norm_ / clip_grad_value_), in place on the
raw gradient arrays: no graph, no Tensor per gradient.

The total norm is the norm of the per-gradient norms, as torch computes it, in the
gradients' dtype; the scale ``min(max_norm / (total + 1e-6), 1)`` is always applied (no
data-dependent branch, as in torch).
"""

from __future__ import annotations

import math
import types
import warnings

import numpy as np

from ember.autograd.function import as_array
from ember.autograd.grad_mode import no_grad
from ember.ops.reduction_stats import vector_norm
from ember.tensor import dtypes
from ember.tensor.backend import get_array_module, to_backend
from ember.tensor.tensor import Tensor


def _as_list(tensors) -> list:
    return [tensors] if isinstance(tensors, Tensor) else list(tensors)


def _norm(arr, p: float):
    """The p-norm of all elements of a raw array, as a 0-d array of its dtype."""
    xp = get_array_module(arr)
    if p == 2.0 and arr.dtype in (np.float32, np.float64):
        flat = arr.reshape(-1)
        return as_array(xp.sqrt(xp.vdot(flat, flat)))  # BLAS dot: no squared temporary
    with no_grad():
        return vector_norm(Tensor(arr), p, op="clip_grad_norm_").data


def get_total_norm(
    tensors, norm_type: float = 2.0, error_if_nonfinite: bool = False, foreach: bool | None = None
) -> Tensor:
    """The norm of all ``tensors`` together, as if concatenated into one vector."""
    tensors = _as_list(tensors)
    norm_type = float(norm_type)
    if not tensors:
        return Tensor(np.array(0.0, dtype=dtypes.get_default_dtype().np))
    dev = tensors[0].device
    norms = [to_backend(_norm(t.data, norm_type), dev) for t in tensors]
    xp = get_array_module(norms[0])
    total = _norm(xp.stack(norms), norm_type)
    if error_if_nonfinite and not bool(xp.isfinite(total)):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from `parameters` is "
            f"non-finite ({float(total)}), so it cannot be clipped. To disable this error and "
            "scale the gradients by the non-finite norm anyway, set "
            "`error_if_nonfinite=False`"
        )
    return Tensor(as_array(total))


def clip_grads_with_norm_(
    parameters, max_norm: float, total_norm: Tensor, foreach: bool | None = None
) -> None:
    """Scale the gradients by ``min(max_norm / (total_norm + 1e-6), 1)``."""
    grads = [p.grad for p in _as_list(parameters) if p.grad is not None]
    if not grads:
        return
    total = total_norm.data if isinstance(total_norm, Tensor) else np.asarray(total_norm)
    coef = float(get_array_module(total).minimum(float(max_norm) / (total + 1e-6), 1.0))
    with np.errstate(invalid="ignore", over="ignore"):  # inf * 0 -> nan, silently (torch)
        for g in grads:
            g.data *= coef
            g._vc[0] += 1


def clip_grad_norm_(
    parameters,
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
) -> Tensor:
    """Clip the gradients in place so that their total ``norm_type`` norm is at most
    ``max_norm``; returns the total norm before clipping (a 0-d Tensor)."""
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    else:
        generator = isinstance(parameters, types.GeneratorType)
        parameters = list(parameters)
        if generator and not parameters:
            warnings.warn(
                "`parameters` is an empty generator, no gradient clipping will occur.", stacklevel=2
            )
    grads = [p.grad for p in parameters if p.grad is not None]
    total = get_total_norm(grads, norm_type, error_if_nonfinite, foreach)
    clip_grads_with_norm_(parameters, max_norm, total, foreach)
    return total


def clip_grad_norm(
    parameters,
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
) -> Tensor:
    """Deprecated alias of ``clip_grad_norm_``."""
    warnings.warn(
        "`ember.nn.utils.clip_grad_norm` is now deprecated in favor of "
        "`ember.nn.utils.clip_grad_norm_`.",
        FutureWarning,
        stacklevel=2,
    )
    return clip_grad_norm_(parameters, max_norm, norm_type, error_if_nonfinite, foreach)


def clip_grad_value_(parameters, clip_value: float, foreach: bool | None = None) -> None:
    """Clamp every gradient element into ``[-clip_value, clip_value]``, in place."""
    clip_value = float(clip_value)
    if math.isnan(clip_value):
        raise ValueError("clip_grad_value_: clip_value must not be NaN")
    for p in _as_list(parameters):
        g = p.grad
        if g is None:
            continue
        get_array_module(g.data).clip(g.data, -clip_value, clip_value, out=g.data)
        g._vc[0] += 1


__all__ = [
    "clip_grad_norm_",
    "clip_grad_norm",
    "clip_grad_value_",
    "get_total_norm",
    "clip_grads_with_norm_",
]
