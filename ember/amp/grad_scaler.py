"""``GradScaler``: dynamic loss scaling for float16 training, with torch.amp.GradScaler's API,
defaults, errors and scale trajectory.

float16 gradients underflow below 6e-8. The loss is multiplied by a large scale before
backward, so the gradients are computed scaled; ``unscale_`` divides them back (in place, in
the parameters' dtype) and records whether any is inf/NaN; ``step`` skips the update when one
is; ``update`` halves the scale after an overflow and doubles it after ``growth_interval``
clean steps.
"""

from __future__ import annotations

import enum

import numpy as np

from ember.tensor.tensor import Tensor


class OptState(enum.Enum):
    READY = 0
    UNSCALED = 1
    STEPPED = 2


def _fresh_state() -> dict:
    return {"stage": OptState.READY, "found_inf_per_device": {}}


def unscale_and_check(arrays: list, inv_scale) -> bool:
    """Multiply every array by ``inv_scale`` in place; True when any held an inf or NaN
    before (NumPy or CuPy; one vectorised check and one multiply per array)."""
    found = False
    for g in arrays:
        if not found and g.size:
            lo, hi = g.min(), g.max()  # NaN propagates through min/max; no temporaries
            found = not (bool(np.isfinite(lo)) and bool(np.isfinite(hi)))
        if inv_scale != 1.0:
            g *= g.dtype.type(inv_scale) if g.dtype.itemsize >= 4 else inv_scale
    return found


_KERNEL_DTYPES = frozenset(("float32", "float16", "bfloat16"))


def _unscale_device(device: str, arrays: list, inv_scale: np.float32):
    """Unscale one device's gradients (of one dtype); returns its found_inf (a float, or a 0-d
    device array that stays on the GPU until ``step`` reads it)."""
    if (
        device == "cuda"
        and arrays[0].dtype.name in _KERNEL_DTYPES
        and all(a.flags.c_contiguous for a in arrays)
    ):
        from ember.cuda import multi_tensor  # one fused launch per dtype, no host sync
        from ember.cuda.compile import kernels_enabled

        if kernels_enabled():  # EMBER_CUDA_KERNELS=0 keeps the composite as the oracle
            return multi_tensor.unscale_and_check_(arrays, inv_scale)
    return 1.0 if unscale_and_check(arrays, inv_scale) else 0.0


class GradScaler:
    """``scaler.scale(loss).backward(); scaler.step(optimizer); scaler.update()``.

    ``device`` is accepted for torch compatibility ('cpu' or 'cuda'); the scaler works with
    whatever arrays the gradients are. With ``enabled=False`` every method is a pass-through.
    """

    def __init__(
        self,
        device: str = "cuda",
        init_scale: float = 2.0**16,
        growth_factor: float = 2.0,
        backoff_factor: float = 0.5,
        growth_interval: int = 2000,
        enabled: bool = True,
    ):
        if device not in ("cpu", "cuda"):
            raise ValueError(f"GradScaler: expected device 'cpu' or 'cuda', got {device!r}")
        self._device = device
        self._enabled = bool(enabled)
        if self._enabled:
            if not growth_factor > 1.0:
                raise ValueError(
                    f"GradScaler: the growth factor must be > 1.0, got {growth_factor}"
                )
            if not backoff_factor < 1.0:
                raise ValueError(
                    f"GradScaler: the backoff factor must be < 1.0, got {backoff_factor}"
                )
            if isinstance(growth_interval, bool) or not isinstance(growth_interval, int):
                raise TypeError(
                    f"GradScaler: growth_interval must be an int, got {growth_interval!r}"
                )
            if growth_interval <= 0:
                raise ValueError(f"GradScaler: growth_interval must be > 0, got {growth_interval}")
        self._init_scale = float(init_scale)
        self._scale: np.float32 | None = None  # set on the first scale() call, as torch
        self._growth_factor = float(growth_factor)
        self._backoff_factor = float(backoff_factor)
        self._growth_interval = int(growth_interval)
        self._init_growth_tracker = 0
        self._growth_tracker: int | None = None
        self._per_optimizer_states: dict = {}

    def _state_of(self, optimizer) -> dict:
        return self._per_optimizer_states.setdefault(id(optimizer), _fresh_state())

    def _check_scale(self, funcname: str) -> None:
        if self._scale is None:
            raise AssertionError(
                f"Attempted {funcname} but _scale is None.  This may indicate your script did "
                "not use scaler.scale(loss or outputs) earlier in the iteration."
            )

    def _lazy_init(self) -> None:
        self._scale = np.float32(self._init_scale)
        self._growth_tracker = self._init_growth_tracker

    # ------------------------------------------------------------------ the API
    def scale(self, outputs):
        """``outputs`` times the scale (a Tensor, or lists/tuples of them, recursively)."""
        if not self._enabled:
            return outputs
        if isinstance(outputs, Tensor):
            if self._scale is None:
                self._lazy_init()
            from ember.tensor.backend import get_array_module

            xp = get_array_module(outputs.data)
            return outputs * Tensor(xp.asarray(self._scale, dtype=np.float32))
        if isinstance(outputs, (list, tuple)):
            return type(outputs)(self.scale(o) for o in outputs)
        raise ValueError("outputs must be a Tensor or an iterable of Tensors")

    def unscale_(self, optimizer) -> None:
        """Divide ``optimizer``'s gradients by the scale, in place, once per step (before
        clipping or inspecting them); records whether any is inf/NaN."""
        if not self._enabled:
            return
        self._check_scale("unscale_")
        state = self._state_of(optimizer)
        if state["stage"] is OptState.UNSCALED:
            raise RuntimeError(
                "unscale_() has already been called on this optimizer since the last update()."
            )
        if state["stage"] is OptState.STEPPED:
            raise RuntimeError("unscale_() is being called after step().")
        inv_scale = np.float32(1.0 / np.float64(self._scale))
        groups: dict = {}
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                arr = p.grad.data
                if arr.dtype == np.float16:
                    raise ValueError("Attempting to unscale FP16 gradients.")
                device = "cpu" if isinstance(arr, np.ndarray) else "cuda"
                groups.setdefault((device, arr.dtype), []).append(arr)
        found: dict = {}
        for (device, _), arrays in groups.items():
            f = _unscale_device(device, arrays, inv_scale)
            found[device] = f if device not in found else found[device] + f
        state["found_inf_per_device"] = found
        state["stage"] = OptState.UNSCALED

    def step(self, optimizer, *args, **kwargs):
        """``optimizer.step()`` unless a gradient is inf/NaN (unscaling first if
        ``unscale_`` was not called); returns what the step returned, or None when skipped."""
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        if "closure" in kwargs:
            raise RuntimeError("Closure use is not currently supported if GradScaler is enabled.")
        self._check_scale("step")
        state = self._state_of(optimizer)
        if state["stage"] is OptState.STEPPED:
            raise RuntimeError("step() has already been called since the last update().")
        if state["stage"] is OptState.READY:
            self.unscale_(optimizer)
        if not state["found_inf_per_device"]:
            raise AssertionError("No inf checks were recorded for this optimizer.")
        retval = None
        if not self.found_inf(optimizer):
            retval = optimizer.step(*args, **kwargs)
        state["stage"] = OptState.STEPPED
        return retval

    def found_inf(self, optimizer) -> bool:
        """Whether the gradients unscaled for ``optimizer`` in this step held an inf/NaN (so
        ``step`` skips or skipped the update). Ember's addition, for the Trainer."""
        found = self._state_of(optimizer)["found_inf_per_device"].values()
        return bool(sum(float(v) for v in found))

    def update(self, new_scale=None) -> None:
        """Back off after an overflow, grow after ``growth_interval`` clean steps (or set
        ``new_scale``); then start a new iteration."""
        if not self._enabled:
            return
        self._check_scale("update")
        if new_scale is not None:
            if isinstance(new_scale, Tensor):
                if new_scale.numel() != 1 or new_scale.requires_grad:
                    raise AssertionError(
                        "new_scale should be a float or a 1-element Tensor with "
                        "requires_grad=False."
                    )
                new_scale = float(new_scale.item())
            self._scale = np.float32(new_scale)
        else:
            found = [
                float(v)
                for state in self._per_optimizer_states.values()
                for v in state["found_inf_per_device"].values()
            ]
            if not found:
                raise AssertionError("No inf checks were recorded prior to update.")
            if sum(found):
                self._scale = np.float32(float(self._scale) * self._backoff_factor)
                self._growth_tracker = 0
            else:
                successful = self._growth_tracker + 1
                if successful == self._growth_interval:
                    with np.errstate(over="ignore"):  # past float32's max: keep the scale
                        grown = np.float32(float(self._scale) * self._growth_factor)
                    if np.isfinite(grown):
                        self._scale = grown
                    self._growth_tracker = 0
                else:
                    self._growth_tracker = successful
        self._per_optimizer_states = {}

    # ------------------------------------------------------------- accessors
    def get_scale(self) -> float:
        if not self._enabled:
            return 1.0
        return self._init_scale if self._scale is None else float(self._scale)

    def get_growth_factor(self) -> float:
        return self._growth_factor

    def set_growth_factor(self, new_factor: float) -> None:
        self._growth_factor = float(new_factor)

    def get_backoff_factor(self) -> float:
        return self._backoff_factor

    def set_backoff_factor(self, new_factor: float) -> None:
        self._backoff_factor = float(new_factor)

    def get_growth_interval(self) -> int:
        return self._growth_interval

    def set_growth_interval(self, new_interval: int) -> None:
        self._growth_interval = int(new_interval)

    def _get_growth_tracker(self) -> int:
        if self._growth_tracker is None:
            return self._init_growth_tracker
        return self._growth_tracker

    def is_enabled(self) -> bool:
        return self._enabled

    def state_dict(self) -> dict:
        """JSON-friendly: scale, growth/backoff factors, growth interval and tracker."""
        if not self._enabled:
            return {}
        return {
            "scale": self.get_scale(),
            "growth_factor": self._growth_factor,
            "backoff_factor": self._backoff_factor,
            "growth_interval": self._growth_interval,
            "_growth_tracker": self._get_growth_tracker(),
        }

    def load_state_dict(self, state_dict: dict) -> None:
        if not self._enabled:
            return
        if len(state_dict) == 0:
            raise RuntimeError(
                "The source state dict is empty, possibly because it was saved "
                "from a disabled instance of GradScaler."
            )
        self._init_scale = float(state_dict["scale"])
        if self._scale is not None:
            self._scale = np.float32(self._init_scale)
        self._growth_factor = float(state_dict["growth_factor"])
        self._backoff_factor = float(state_dict["backoff_factor"])
        self._growth_interval = int(state_dict["growth_interval"])
        self._init_growth_tracker = int(state_dict["_growth_tracker"])
        if self._growth_tracker is not None:
            self._growth_tracker = self._init_growth_tracker

    def __repr__(self) -> str:
        return (
            f"GradScaler(scale={self.get_scale()}, growth_factor={self._growth_factor}, "
            f"backoff_factor={self._backoff_factor}, growth_interval={self._growth_interval}, "
            f"enabled={self._enabled})"
        )
