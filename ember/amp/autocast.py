"""``ember.autocast``: run the listed ops in float16/bfloat16 inside a region, as torch.autocast.

The op policy is PyTorch's CUDA policy, applied on every device type (NumPy arrays are
"cpu", CuPy arrays "cuda"):

- in the autocast dtype: matmul/mm/bmm/mv, linear, conv1d-3d and conv_transpose1d-3d,
  scaled_dot_product_attention (and so multi-head attention);
- in float32: softmax, log_softmax, cross_entropy, nll_loss and the other losses, layer_norm,
  group_norm, rms_norm, sum, cumsum, prod, cumprod, logsumexp, norm, pow, softplus, exp, log
  (and torch's other fp32 unary ops); the reductions and norm only without an explicit dtype;
- promoted to the widest input dtype: dot, bilinear, scatter_add;
- everything else runs in whatever dtype its inputs have (``half + float`` promotes to float32
  by the ordinary rules, as under torch).

torch's CPU autocast keeps softmax, log_softmax, layer_norm, group_norm, sum, exp, log, pow,
norm and softplus in the low dtype; Ember uses the CUDA list everywhere, so a CPU run previews
the numerics of a GPU run, and (NumPy being slow in half precision) more of the graph stays in
fast float32.

float64 tensors are never cast. Parameters keep their dtype: the casts are differentiable, so
float32 parameters get float32 gradients. Within a region a parameter used twice is cast once.
"""

from __future__ import annotations

import functools
import warnings

from ember.autograd import autocast_state as _state
from ember.tensor import dtypes

_DEVICE_TYPES = ("cpu", "cuda")
_DEFAULT_DTYPE = {"cpu": "bfloat16", "cuda": "float16"}  # torch's defaults


def _low_dtype(dtype, device_type: str):
    if dtype is None:
        return getattr(dtypes, _DEFAULT_DTYPE[device_type])
    try:
        d = dtypes.to_dtype(dtype)
    except (TypeError, ValueError, KeyError):
        d = None
    if d not in (dtypes.float16, dtypes.bfloat16):
        raise ValueError(
            f"autocast(dtype={dtype!r}): expected ember.float16 or ember.bfloat16 for "
            f"device_type {device_type!r}"
        )
    return d


class autocast:  # noqa: N801 - torch name
    """``with ember.autocast("cpu", dtype=ember.bfloat16): loss = model(x)`` or as a decorator.

    ``enabled=False`` turns autocast off inside (also inside an enclosing region).
    ``cache_enabled`` (default True) keeps one low-precision copy of each parameter per region.
    """

    def __init__(
        self,
        device_type: str = "cuda",
        dtype=None,
        enabled: bool = True,
        cache_enabled: bool | None = None,
    ):
        if not isinstance(device_type, str) or device_type not in _DEVICE_TYPES:
            raise ValueError(f"autocast: expected device_type 'cpu' or 'cuda', got {device_type!r}")
        if not isinstance(enabled, bool):
            raise TypeError(f"autocast: expected enabled to be a bool, got {enabled!r}")
        self.device = device_type
        self.fast_dtype = _low_dtype(dtype, device_type)
        self._cache_enabled = True if cache_enabled is None else bool(cache_enabled)
        if enabled and device_type == "cuda":
            from ember.tensor.backend import cuda_is_available

            if not cuda_is_available():
                warnings.warn(
                    "User provided device_type of 'cuda', but CUDA is not available. Disabling",
                    UserWarning,
                    stacklevel=2,
                )
                enabled = False
        self._enabled = enabled
        self._saved: list = []

    def __enter__(self):
        self._saved.append(
            _state.enter(self.device, self.fast_dtype, self._enabled, self._cache_enabled)
        )
        return self

    def __exit__(self, *exc):
        _state.exit(self.device, self._saved.pop())
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):  # its own saved state: safe under recursion and threads
            saved = _state.enter(self.device, self.fast_dtype, self._enabled, self._cache_enabled)
            try:
                return fn(*args, **kwargs)
            finally:
                _state.exit(self.device, saved)

        return wrapper

    def __repr__(self) -> str:
        return (
            f"autocast(device_type={self.device!r}, dtype={self.fast_dtype}, "
            f"enabled={self._enabled})"
        )


def is_autocast_enabled(device_type: str = "cuda") -> bool:
    """Whether autocast is on for ``device_type`` here (this thread)."""
    return _state.get_autocast_dtype(device_type) is not None


def get_autocast_dtype(device_type: str = "cuda"):
    """The dtype autocast casts to on ``device_type`` (torch's default when it is off)."""
    d = _state.get_autocast_dtype(device_type)
    return d if d is not None else getattr(dtypes, _DEFAULT_DTYPE.get(device_type, "float16"))


def clear_autocast_cache() -> None:
    _state.clear_cache()
