"""In-place ops (``add_``, ``mul_``, ``clamp_``...): compute, write into the array, bump the
version counter, and (when recording) move the tensor's history onto the new node.

A backward that still needs the old values notices the version change and raises instead of
silently using modified data.
"""

from __future__ import annotations

from ember.autograd.grad_mode import state
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
                f"{op}: a leaf Variable that requires grad is being used in an in-place "
                "operation."
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


def _zero_(self) -> Tensor:
    return _fill_value(self, 0, "zero_")


def _fill_value(t: Tensor, value, op: str) -> Tensor:
    if isinstance(value, Tensor):
        if value.data.ndim:
            raise RuntimeError(f"{op}: only supports 0-dimension value tensor but got tensor "
                               f"with {value.data.ndim} dimensions.")
        if _recording(t, (value,)):
            from ember.ops.shape import expand

            return apply_inplace(t, lambda s, v: expand(v.to(s.dtype), s.data.shape) * 1,
                                 value, op=op)
        value = value.item()
    if state.enabled and t.requires_grad and t.grad_fn is None:
        raise RuntimeError(f"{op}: a leaf Variable that requires grad is being used in an "
                           "in-place operation.")
    t.data.fill(value)
    t._vc[0] += 1
    if state.enabled and t.requires_grad:
        t.grad_fn = None  # constant now: no history (a non-leaf becomes a leaf w/o grad)
        t.requires_grad = False
    return t


def _fill_(self, value) -> Tensor:
    return _fill_value(self, value, "fill_")


def _copy_(self, src, non_blocking: bool = False) -> Tensor:
    from ember.ops.conversion import to
    from ember.ops.shape import expand

    src = src if isinstance(src, Tensor) else Tensor(get_array_module(self.data).asarray(src))

    def copied(dst, s):
        s = to(s, device=dst.device, dtype=dst.dtype)
        return expand(s, dst.data.shape) + dst * 0 if s.data.shape != dst.data.shape else (
            s + dst * 0)

    if _recording(self, (src,)):
        return apply_inplace(self, copied, src, op="copy_")
    arr = src.data
    if type(arr) is not type(self.data):
        from ember.tensor.backend import to_backend

        arr = to_backend(arr, self.device)
    try:
        get_array_module(self.data).copyto(self.data, arr, casting="unsafe")
    except ValueError:
        raise RuntimeError(f"copy_: the source of shape {list(src.data.shape)} cannot be "
                           f"broadcast to the destination of shape {list(self.data.shape)}"
                           ) from None
    self._vc[0] += 1
    return self


METHODS = {"zero_": _zero_, "fill_": _fill_, "copy_": _copy_}
