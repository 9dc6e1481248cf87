"""The Trainer's ``precision`` (Lightning's precision plugins, in one class).

- "32-true": plain float32.
- "16-mixed" / "bf16-mixed": parameters and optimizer state stay float32; the step hooks run
  under ``ember.autocast``; "16-mixed" adds a GradScaler: the loss is scaled before backward,
  the gradients are unscaled before ``on_before_optimizer_step`` and clipping, and a step with
  inf/NaN gradients is skipped: then neither ``global_step`` nor the step-interval LR
  schedulers advance (Lightning's issue #5558, done right).
- "16-true" / "bf16-true" / "64-true": the module's floating parameters and buffers are cast
  to that dtype, floating inputs of the step hooks too, and tensors created inside them
  default to it.

Unlike Lightning, "16-mixed" stays float16 on the CPU (Lightning switches to bf16 there): the
CPU is where Ember's mixed precision is tested.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

_ALIASES = {
    "32": "32-true",
    "32-true": "32-true",
    "16": "16-mixed",
    "16-mixed": "16-mixed",
    "bf16": "bf16-mixed",
    "bf16-mixed": "bf16-mixed",
    "16-true": "16-true",
    "bf16-true": "bf16-true",
    "64": "64-true",
    "64-true": "64-true",
}
_DTYPE_NAMES = {"16": "float16", "bf16": "bfloat16", "64": "float64", "32": "float32"}


def parse_precision(value) -> str:
    """Lightning's spellings (ints too: 16, 32, 64) -> the canonical name."""
    text = "32-true" if value is None else str(value)
    if isinstance(value, bool) or text not in _ALIASES:
        raise ValueError(
            f"Trainer(precision={value!r}) is not supported; expected one of "
            f"{sorted(set(_ALIASES), key=list(_ALIASES).index)}"
        )
    return _ALIASES[text]


def _convert_floats(data, dtype):
    """Floating Tensors anywhere in ``data`` (lists, tuples, dicts) cast to ``dtype``."""
    from ember.tensor.tensor import Tensor

    if isinstance(data, Tensor):
        return data.to(dtype) if data.is_floating_point() and data.dtype != dtype else data
    if isinstance(data, tuple) and hasattr(data, "_fields"):  # namedtuple
        return type(data)(*(_convert_floats(d, dtype) for d in data))
    if isinstance(data, (list, tuple)):
        return type(data)(_convert_floats(d, dtype) for d in data)
    if isinstance(data, Mapping):
        return type(data)((k, _convert_floats(v, dtype)) for k, v in data.items())
    return data


@contextlib.contextmanager
def _default_dtype(dtype):
    from ember.tensor import dtypes

    previous = dtypes.get_default_dtype()
    dtypes.set_default_dtype(dtype)
    try:
        yield
    finally:
        dtypes.set_default_dtype(previous)


class Precision:
    """What a precision setting changes in the loop. ``active`` is False for "32-true", so
    the step hooks take no detour."""

    def __init__(self, precision, device_type: str = "cpu"):
        from ember.tensor import dtypes

        self.precision = parse_precision(precision)
        bits, kind = self.precision.split("-")
        self.device_type = device_type
        self.mixed = kind == "mixed"
        self.dtype = getattr(dtypes, _DTYPE_NAMES[bits])
        self.active = self.precision != "32-true"
        self.scaler = None
        if self.precision == "16-mixed":
            from ember.amp.grad_scaler import GradScaler

            self.scaler = GradScaler(device_type)

    def __repr__(self) -> str:
        return f"Precision({self.precision!r}, device_type={self.device_type!r})"

    # ------------------------------------------------------------- module and data
    def convert_module(self, module) -> None:
        """The "-true" modes keep the parameters (and floating buffers) in their dtype."""
        if self.active and not self.mixed:
            module.to(dtype=self.dtype)

    def convert_input(self, data):
        if self.active and not self.mixed:
            return _convert_floats(data, self.dtype)
        return data

    def forward_context(self):
        """Around training/validation/test/predict_step: autocast for the mixed modes, the
        low default dtype for the "-true" ones."""
        if self.mixed:
            from ember.amp.autocast import autocast

            return autocast(self.device_type, dtype=self.dtype)
        if self.active:
            return _default_dtype(self.dtype)
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ optimization
    def pre_backward(self, loss):
        """The loss that backward starts from (scaled under "16-mixed")."""
        return self.scaler.scale(loss) if self.scaler is not None else loss

    def optimizer_step(self, optimizer, closure, after_closure, **kwargs) -> tuple:
        """Run the closure (training_step + backward), ``after_closure`` (the
        on_before_optimizer_step hooks and clipping, on unscaled gradients), then the
        update. Returns (what the step returned, whether the parameters were updated)."""
        scaler = self.scaler
        if scaler is None:

            def wrapped():
                result = closure() if closure is not None else None
                after_closure()
                return result

            return optimizer.step(closure=wrapped, **kwargs), True
        if _class_named(optimizer, "LBFGS"):
            raise TypeError(
                "Trainer(precision='16-mixed') does not support LBFGS: it evaluates its "
                "closure several times per step, which a GradScaler cannot unscale"
            )
        result = closure() if closure is not None else None
        if not any(p.grad is not None for g in optimizer.param_groups for p in g["params"]):
            after_closure()  # nothing to unscale or update (a batch skipped by training_step)
            return result, True
        scaler.unscale_(optimizer)
        after_closure()
        scaler.step(optimizer, **kwargs)
        skipped = scaler.found_inf(optimizer)
        scaler.update()
        return result, not skipped

    def state_dict(self) -> dict:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


def _class_named(obj, name: str) -> bool:
    return any(cls.__name__ == name for cls in type(obj).__mro__)
