"""Anomaly mode: remember where each op was created, and name the op whose backward
produced NaN or Inf."""

from __future__ import annotations

from ember.autograd.grad_mode import state


class detect_anomaly:  # noqa: N801 - torch name
    """Context manager (and decorator) that turns anomaly detection on.

    While on, every recorded op keeps its forward stack trace, and backward checks every
    gradient it computes; the first non-finite one raises an error that names the op and
    shows where it was called. It is slow, so use it for debugging only.
    """

    def __init__(self, check_nan: bool = True):
        self.check_nan = check_nan

    def __enter__(self):
        self._prev = state.anomaly
        state.anomaly = self.check_nan

    def __exit__(self, *exc):
        state.anomaly = self._prev
        return False

    def __call__(self, fn):
        import functools

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with detect_anomaly(self.check_nan):
                return fn(*args, **kwargs)

        return wrapper


def set_detect_anomaly(mode: bool) -> None:
    state.anomaly = bool(mode)


def is_anomaly_enabled() -> bool:
    return state.anomaly
