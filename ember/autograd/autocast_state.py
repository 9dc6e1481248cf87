"""The autocast state and the one helper that applies its cast policy to an op's inputs.

It lives here, below ember.ops, so that ops can consult it without importing ember.amp (which
owns the public ``ember.autocast`` context manager and sits above nn). An autocast-aware op
starts with ``if state.enabled: return call(POLICY, op, *args, **kwargs)``: a single
thread-local attribute read when autocast is off, which is the hot path.

Policies are PyTorch's (its CUDA lists, on every device type, see ember/amp/autocast.py):

- ``LOW``: floating inputs (not float64) run in the autocast dtype (matmul, linear, conv,
  attention);
- ``FP32``: low-precision floating inputs run in float32 (softmax, norms, losses, exp/log...);
- ``PROMOTE``: floating inputs (not float64) are cast to the widest of them (dot, bilinear).

``call`` runs the op with autocast suspended, as torch excludes its autocast dispatch key inside
an autocast kernel: ops that an autocast op calls internally do not cast again.

Casts to the low dtype of float32 leaf tensors that require grad (the parameters) are cached
for the region (a weight used twice is cast once); the cache is emptied when the outermost
autocast region exits. An entry is dropped if the parameter was modified in place since.
"""

from __future__ import annotations

import functools
import threading

import numpy as np

from ember.autograd.function import Function
from ember.autograd.grad_mode import state as _grad_state
from ember.tensor import dtypes
from ember.tensor.tensor import Tensor

LOW = "low"
FP32 = "fp32"
PROMOTE = "promote"

_F32 = np.dtype(np.float32)
_CASTABLE = frozenset(dtypes.FLOATING_NP - {np.dtype(np.float64)})  # bfloat16's kind is "V"


class _State(threading.local):
    def __init__(self):
        self.enabled = False  # True while autocast is on for at least one device type
        self.dtypes: dict = {}  # device type ("cpu" / "cuda") -> ember dtype, when enabled
        self.cache_enabled = True
        self.depth = 0  # nesting of autocast regions (the cache lives until depth 0)
        self.cache: dict = {}  # id(param) -> (param, version, cast tensor)


state = _State()


def device_type_of(arr) -> str:
    return "cpu" if isinstance(arr, np.ndarray) else "cuda"


def get_autocast_dtype(device_type: str):
    """The autocast dtype of ``device_type`` when autocast is on there, else None."""
    return state.dtypes.get(device_type)


def enter(device_type: str, dtype, enabled: bool, cache_enabled: bool) -> tuple:
    """Open a region; returns what ``exit`` needs to restore the previous state."""
    st = state
    saved = (st.dtypes.get(device_type), st.cache_enabled)
    if enabled:
        st.dtypes[device_type] = dtype
    else:
        st.dtypes.pop(device_type, None)
    st.cache_enabled = cache_enabled
    st.depth += 1
    st.enabled = bool(st.dtypes)
    return saved


def exit(device_type: str, saved: tuple) -> None:  # noqa: A001 - pairs with enter
    st = state
    dtype, st.cache_enabled = saved
    if dtype is None:
        st.dtypes.pop(device_type, None)
    else:
        st.dtypes[device_type] = dtype
    st.depth -= 1
    st.enabled = bool(st.dtypes)
    if st.depth == 0:
        st.cache.clear()


def clear_cache() -> None:
    state.cache.clear()


def _eligible(t, device_type: str) -> bool:
    """A floating tensor other than float64 on the autocast device (torch's rule)."""
    if not isinstance(t, Tensor):
        return False
    arr = t.data
    return arr.dtype in _CASTABLE and device_type_of(arr) == device_type


class _Cast(Function):
    """The autocast cast; its gradient is cast back to the source dtype (a float32 parameter
    gets a float32 gradient). Backward is itself a cast, so double backward works."""

    def __init__(self, dtype):
        self.dtype = dtype

    def forward(self, a):
        self.src = dtypes.from_numpy_dtype(a.dtype)
        return a.astype(self.dtype.np)

    def backward(self, g):
        return cast_to(g, self.src)


def cast_to(t, dtype):
    return t if t.data.dtype == dtype.np else _Cast(dtype).apply(t)


def _cast(t, dtype, low: bool):
    """``t`` in ``dtype`` (gradients flow back in ``t``'s dtype); low-precision casts of
    parameters go through the region's cache."""
    if t.data.dtype == dtype.np:
        return t
    st = state
    if not (
        low
        and st.cache_enabled
        and t.requires_grad
        and t.grad_fn is None
        and t._base is None
        and t.data.dtype == _F32
        and _grad_state.enabled
    ):
        return cast_to(t, dtype)
    key = id(t)
    hit = st.cache.get(key)
    if hit is not None and hit[0] is t and hit[1] == t._vc[0] and hit[2].data.dtype == dtype.np:
        return hit[2]
    out = cast_to(t, dtype)
    st.cache[key] = (t, t._vc[0], out)
    return out


def _target(policy: str, low, found: list):
    if policy == LOW:
        return low, True
    if policy == FP32:
        return dtypes.float32, False
    widest = found[0].dtype
    for t in found[1:]:
        widest = dtypes.promote_types(widest, t.dtype)
    return widest, widest is low


def call(policy: str, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with its floating Tensor arguments (positional, keyword, or
    inside a list/tuple argument) cast by ``policy``, autocast suspended while ``fn`` runs."""
    st = state
    first = next(_tensors(args, kwargs), None)
    low = st.dtypes.get(device_type_of(first.data)) if first is not None else None
    if low is not None:
        device = device_type_of(first.data)
        found = [t for t in _tensors(args, kwargs) if _eligible(t, device)]
        if found:
            dtype, is_low = _target(policy, low, found)
            args = tuple(_convert(a, dtype, is_low, device) for a in args)
            kwargs = {k: _convert(v, dtype, is_low, device) for k, v in kwargs.items()}
    prev, st.enabled = st.enabled, False
    try:
        return fn(*args, **kwargs)
    finally:
        st.enabled = prev


def _tensors(args, kwargs):
    for a in (*args, *kwargs.values()):
        if isinstance(a, Tensor):
            yield a
        elif isinstance(a, (list, tuple)):
            for b in a:
                if isinstance(b, Tensor):
                    yield b


def _convert(a, dtype, is_low: bool, device: str):
    if isinstance(a, Tensor):
        return _cast(a, dtype, is_low) if _eligible(a, device) else a
    if isinstance(a, (list, tuple)) and any(isinstance(b, Tensor) for b in a):
        return type(a)(_convert(b, dtype, is_low, device) for b in a)
    return a


def autocast_op(policy: str):
    """Decorator form of ``call`` for ops whose body is a whole function (the losses)."""

    def deco(fn):
        @functools.wraps(fn)
        def op(*args, **kwargs):
            if state.enabled:
                return call(policy, fn, *args, **kwargs)
            return fn(*args, **kwargs)

        return op

    return deco


def suspended(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with autocast off (backward runs in the dtypes forward chose)."""
    st = state
    prev, st.enabled = st.enabled, False
    try:
        return fn(*args, **kwargs)
    finally:
        st.enabled = prev
