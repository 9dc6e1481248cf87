"""``parameters_to_vector`` / ``vector_to_parameters`` (torch.nn.utils): a model's
parameters as one flat vector and back."""

from __future__ import annotations

from ember.ops.join import cat
from ember.tensor.tensor import Tensor


def _check_device(param: Tensor, device):
    if device is not None and param.device != device:
        raise TypeError(
            "Found two parameters on different devices, this is currently not supported."
        )
    return param.device


def parameters_to_vector(parameters) -> Tensor:
    """All parameters flattened and concatenated (differentiable, like torch.cat)."""
    device, flat = None, []
    for p in parameters:
        device = _check_device(p, device)
        flat.append(p.reshape(-1))
    return cat(flat)


def vector_to_parameters(vec: Tensor, parameters) -> None:
    """Make each parameter's data the matching slice of ``vec`` (a view of it, as torch
    does)."""
    if not isinstance(vec, Tensor):
        raise TypeError(f"expected ember.Tensor, but got: {type(vec).__name__}")
    parameters = list(parameters)
    need = sum(p.numel() for p in parameters)
    if vec.ndim != 1 or vec.numel() < need:
        raise RuntimeError(
            f"vector_to_parameters: expected a 1-d vector of at least {need} "
            f"elements, got shape {tuple(vec.shape)}"
        )
    device, pointer = None, 0
    for p in parameters:
        device = _check_device(p, device)
        n = p.numel()
        p.data = vec.data[pointer : pointer + n].reshape(p.data.shape)
        pointer += n


__all__ = ["parameters_to_vector", "vector_to_parameters"]
