"""What every loss shares: the ``reduction`` argument (with torch's legacy ``size_average`` /
``reduce`` spelling), applying it, and the target-shape checks with messages that name the loss
and both shapes."""

from __future__ import annotations

import warnings

from ember.tensor.tensor import Tensor

REDUCTIONS = ("none", "mean", "sum")


def legacy_get_string(size_average, reduce, emit_warning: bool = True) -> str:
    """torch's mapping of the deprecated ``size_average``/``reduce`` flags to ``reduction``."""
    warning = "size_average and reduce args will be deprecated, please use reduction='{}' instead."
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    if size_average and reduce:
        ret = "mean"
    elif reduce:
        ret = "sum"
    else:
        ret = "none"
    if emit_warning:
        warnings.warn(warning.format(ret), UserWarning, stacklevel=3)
    return ret


def resolve(size_average, reduce, reduction: str, extra: tuple = ()) -> str:
    """The effective reduction: the legacy flags win when given (as in torch)."""
    if size_average is not None or reduce is not None:
        return legacy_get_string(size_average, reduce)
    if reduction not in REDUCTIONS and reduction not in extra:
        raise ValueError(f"{reduction} is not a valid value for reduction")
    return reduction


def apply(loss: Tensor, reduction: str) -> Tensor:
    """Reduce an elementwise loss: 'none' keeps it, 'mean' averages, 'sum' adds up."""
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.mean()


def shape_str(shape) -> str:
    return str(tuple(shape))


def mismatch(op: str, want, input_shape, got, exc=ValueError) -> Exception:
    """``cross_entropy: expected target of shape (128,) for input of shape (128, 10), got
    (64,)``."""
    return exc(
        f"{op}: expected target of shape {shape_str(want)} for input of shape "
        f"{shape_str(input_shape)}, got {shape_str(got)}"
    )


def warn_if_broadcast(op: str, input: Tensor, target: Tensor) -> None:
    """torch warns (and then broadcasts) when a pointwise loss gets differently shaped operands."""
    if tuple(input.data.shape) != tuple(target.data.shape):
        warnings.warn(
            f"{op}: Using a target size {shape_str(target.data.shape)} that is different to the "
            f"input size {shape_str(input.data.shape)}. This will likely lead to incorrect "
            "results due to broadcasting. Please ensure they have the same size.",
            UserWarning,
            stacklevel=3,
        )
