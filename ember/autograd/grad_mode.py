"""Grad modes: whether new operations are recorded for backward (thread-local, as in PyTorch)."""

from __future__ import annotations

import functools
import threading


class _State(threading.local):
    def __init__(self):
        self.enabled = True
        self.anomaly = False


state = _State()


def is_grad_enabled() -> bool:
    return state.enabled


class _GradModeContext:
    """Base for the grad-mode managers: a context manager that also decorates functions."""

    _target = True

    def __new__(cls, *args, **kwargs):
        if len(args) == 1 and not kwargs and callable(args[0]):
            return cls()(args[0])  # bare ``@no_grad`` / ``@inference_mode``, as torch allows
        return super().__new__(cls)

    def __enter__(self):
        self._prev = state.enabled
        state.enabled = self._target

    def __exit__(self, *exc):
        state.enabled = self._prev
        return False

    def __call__(self, fn):
        target = self._target

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            prev = state.enabled
            state.enabled = target
            try:
                return fn(*args, **kwargs)
            finally:
                state.enabled = prev

        return wrapper


class no_grad(_GradModeContext):  # noqa: N801 - torch name
    """Nothing computed inside is recorded; results have ``requires_grad=False``."""

    _target = False


class enable_grad(_GradModeContext):  # noqa: N801
    _target = True


class inference_mode(_GradModeContext):  # noqa: N801
    """Like ``no_grad`` (Ember has no separate inference-tensor kind)."""

    def __init__(self, mode: bool = True):
        self._target = not mode


class set_grad_enabled(_GradModeContext):  # noqa: N801
    """Set grad mode; takes effect at once, and as a context manager restores on exit."""

    def __init__(self, mode: bool):
        self._target = bool(mode)
        self._prev = state.enabled
        state.enabled = self._target

    def __enter__(self):
        pass

    def __exit__(self, *exc):
        state.enabled = self._prev
        return False


def _decorate_restoring(self, fn):
    # Used as ``@set_grad_enabled(False)``: constructing it switched the mode; put it back and
    # switch only while the decorated function runs.
    state.enabled = self._prev
    return _GradModeContext.__call__(self, fn)


set_grad_enabled.__call__ = _decorate_restoring
