"""In-place ops (``add_``, ``mul_``, ``clamp_``...): compute, write into the array, bump the
version counter, and (when recording) move the tensor's history onto the new node.

A backward that still needs the old values notices the version change and raises instead of
silently using modified data.
"""

from __future__ import annotations

from ember.autograd.function import Function
from ember.autograd.grad_mode import state
from ember.tensor import dtypes
from ember.tensor.backend import get_array_module
from ember.tensor.tensor import Tensor, write_into


def _recording(t: Tensor, args) -> bool:
    if not state.enabled:
        return False
    if t.requires_grad:
        return True
    return any(isinstance(a, Tensor) and a.requires_grad for a in args)


def apply_inplace(t: Tensor, fn, *args, op: str, **kwargs) -> Tensor:
    """Run the out-of-place ``fn(t, *args)`` and write its result into ``t``."""
    recording = _recording(t, args)
    if recording:
        if t.grad_fn is None and t.requires_grad:
            raise RuntimeError(
                f"{op}: a leaf Variable that requires grad is being used in an in-place operation."
            )
        if t._base is not None and t._base.requires_grad:
            raise RuntimeError(
                f"{op}: in-place modification of a view of a tensor that requires grad is not "
                "supported by Ember's autograd; use an out-of-place op or clone() first."
            )
        # The node must not see t's memory change under it: give it a private snapshot.
        snap = Tensor(t.data.copy(), t.requires_grad, t.grad_fn, t._output_nr)
        out = fn(snap, *args, **kwargs)
    else:
        prev = state.enabled
        state.enabled = False
        try:
            out = fn(t, *args, **kwargs)
        finally:
            state.enabled = prev
    write_into(t, out.data, op)
    if recording:
        t.grad_fn = out.grad_fn
        t._output_nr = out._output_nr
        t.requires_grad = out.requires_grad
    return t


def make_inplace(fn, op: str):
    """``x.op_(*args)`` from the out-of-place ``op``."""

    def method(self, *args, **kwargs):
        return apply_inplace(self, fn, *args, op=op, **kwargs)

    method.__name__ = op
    method.__doc__ = f"In-place version of ``{op[:-1]}``."
    return method


class Overwrite(Function):
    """The recorded form of ``fill_`` and ``copy_``: the old values get no gradient; the
    source (a tensor broadcast to the destination's shape) gets the summed gradient."""

    def forward(self, dst, src):
        self.src_shape = getattr(src, "shape", ())
        self.src_dtype = getattr(src, "dtype", None)
        xp = get_array_module(dst)
        out = xp.empty_like(dst)
        try:
            xp.copyto(out, src, casting="unsafe")
        except ValueError:
            raise RuntimeError(
                f"copy_: the source of shape {list(self.src_shape)} cannot be broadcast to "
                f"the destination of shape {list(dst.shape)}"
            ) from None
        return out

    def backward(self, g):
        if not self.needs_input_grad[1]:
            return None, None
        from ember.ops.conversion import cast_to
        from ember.ops.reduction import sum_to_shape

        return None, cast_to(
            sum_to_shape(g, self.src_shape), dtypes.from_numpy_dtype(self.src_dtype)
        )


def _overwrite(t: Tensor, src, op: str) -> Tensor:
    """Write ``src`` (a scalar, an array or a tensor) into ``t`` in place."""
    if _recording(t, (src,)):
        if isinstance(src, Tensor) and type(src.data) is not type(t.data):
            src = src.to(t.device)
        return apply_inplace(t, lambda d, s: Overwrite().apply(d, s), src, op=op)
    arr = src.data if isinstance(src, Tensor) else src
    if isinstance(src, Tensor) and type(arr) is not type(t.data):
        from ember.tensor.backend import to_backend

        arr = to_backend(arr, t.device)
    try:
        get_array_module(t.data).copyto(t.data, arr, casting="unsafe")
    except ValueError:
        shape = list(getattr(arr, "shape", ()))
        raise RuntimeError(
            f"{op}: the source of shape {shape} cannot be broadcast to the "
            f"destination of shape {list(t.data.shape)}"
        ) from None
    t._vc[0] += 1
    return t


def _zero_(self) -> Tensor:
    return _overwrite(self, 0, "zero_")


def _fill_(self, value) -> Tensor:
    if isinstance(value, Tensor) and value.data.ndim:
        raise RuntimeError(
            f"fill_: only supports 0-dimension value tensor but got tensor "
            f"with {value.data.ndim} dimensions."
        )
    return _overwrite(self, value, "fill_")


def _copy_(self, src, non_blocking: bool = False) -> Tensor:
    if not isinstance(src, Tensor):
        src = Tensor(get_array_module(self.data).asarray(src))
    return _overwrite(self, src, "copy_")


METHODS = {"zero_": _zero_, "fill_": _fill_, "copy_": _copy_}
