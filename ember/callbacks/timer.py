"""Timer: tracks the time spent in each stage and stops training after a duration.

The training time elapsed travels in checkpoints (``state_dict``), so a resumed run stops when
the *total* budget is spent, not a fresh one.
"""

from __future__ import annotations

import re
import time
from datetime import timedelta

from ember.callbacks.callback import Callback

_STAGES = ("train", "validate", "test", "predict")
_ALIASES = {
    "training": "train",
    "fit": "train",
    "fitting": "train",
    "validating": "validate",
    "validation": "validate",
    "testing": "test",
    "predicting": "predict",
}


def _stage(stage: str) -> str:
    s = _ALIASES.get(stage, stage)
    if s not in _STAGES:
        raise ValueError(f"Timer: unknown stage {stage!r}; expected one of {', '.join(_STAGES)}")
    return s


def _parse_duration(duration) -> float | None:
    if duration is None:
        return None
    if isinstance(duration, str):
        m = re.fullmatch(r"(\d+):(\d\d):(\d\d):(\d\d)", duration.strip())
        if not m:
            raise ValueError(
                f"Timer(duration={duration!r}) is not a valid duration. "
                "Expected a string in the format DD:HH:MM:SS."
            )
        d, h, mi, s = (int(g) for g in m.groups())
        duration = timedelta(days=d, hours=h, minutes=mi, seconds=s)
    elif isinstance(duration, dict):
        duration = timedelta(**duration)
    if not isinstance(duration, timedelta):
        raise TypeError(
            f"Timer: duration must be a 'DD:HH:MM:SS' string, a timedelta or a dict "
            f"of timedelta arguments, got {type(duration).__name__}"
        )
    return duration.total_seconds()


class Timer(Callback):
    """Stops training (``trainer.should_stop = True``) once ``duration`` of training has passed.

    ``interval='step'`` checks after every training batch, ``'epoch'`` after every epoch.
    ``start_time``/``end_time``/``time_elapsed``/``time_remaining`` take a stage name
    ('train', 'validate', 'test', 'predict'), training by default.
    """

    def __init__(self, duration=None, interval: str = "step", verbose: bool = True):
        if interval not in ("step", "epoch"):
            raise ValueError(
                f"Unsupported parameter value Timer(interval={interval!r}). "
                "Possible values are: step, epoch."
            )
        self._duration = _parse_duration(duration)
        self._interval = interval
        self._verbose = verbose
        self._start_time: dict[str, float | None] = dict.fromkeys(_STAGES)
        self._end_time: dict[str, float | None] = dict.fromkeys(_STAGES)
        self._offset = 0.0

    def start_time(self, stage: str = "train") -> float | None:
        """``time.monotonic()`` when the stage last started, or None."""
        return self._start_time[_stage(stage)]

    def end_time(self, stage: str = "train") -> float | None:
        return self._end_time[_stage(stage)]

    def time_elapsed(self, stage: str = "train") -> float:
        """Seconds spent in the stage (training includes the time restored from a checkpoint)."""
        stage = _stage(stage)
        start, end = self._start_time[stage], self._end_time[stage]
        offset = self._offset if stage == "train" else 0.0
        if start is None:
            return offset
        if end is None:
            return time.monotonic() - start + offset
        return end - start + offset

    def time_remaining(self, stage: str = "train") -> float | None:
        if self._duration is None:
            return None
        return self._duration - self.time_elapsed(stage)

    # ---- stage bookkeeping
    def _start(self, stage: str) -> None:
        self._start_time[stage] = time.monotonic()
        self._end_time[stage] = None

    def _end(self, stage: str) -> None:
        self._end_time[stage] = time.monotonic()

    def on_train_start(self, trainer, pl_module) -> None:
        self._start("train")

    def on_train_end(self, trainer, pl_module) -> None:
        self._end("train")

    def on_validation_start(self, trainer, pl_module) -> None:
        self._start("validate")

    def on_validation_end(self, trainer, pl_module) -> None:
        self._end("validate")

    def on_test_start(self, trainer, pl_module) -> None:
        self._start("test")

    def on_test_end(self, trainer, pl_module) -> None:
        self._end("test")

    def on_predict_start(self, trainer, pl_module) -> None:
        self._start("predict")

    def on_predict_end(self, trainer, pl_module) -> None:
        self._end("predict")

    # ---- the checks
    def on_fit_start(self, trainer, pl_module) -> None:
        # after a resume the restored budget may already be spent
        if self._duration is not None:
            self._check_time_remaining(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self._interval == "step" and self._duration is not None:
            self._check_time_remaining(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self._interval == "epoch" and self._duration is not None:
            self._check_time_remaining(trainer)

    def _check_time_remaining(self, trainer) -> None:
        should_stop = self.time_elapsed("train") >= self._duration
        strategy = getattr(trainer, "strategy", None)
        if strategy is not None:  # every rank stops together, on rank 0's clock
            should_stop = strategy.broadcast(should_stop)
        trainer.should_stop = bool(trainer.should_stop or should_stop)
        if should_stop and self._verbose and getattr(trainer, "is_global_zero", True):
            elapsed = timedelta(seconds=int(self.time_elapsed("train")))
            print(
                f"Time limit reached. Elapsed time is {elapsed}. Signaling Trainer to stop.",
                flush=True,
            )

    # ---- checkpoints
    def state_dict(self) -> dict:
        return {"time_elapsed": {stage: self.time_elapsed(stage) for stage in _STAGES}}

    def load_state_dict(self, state_dict: dict) -> None:
        self._offset = float(state_dict.get("time_elapsed", {}).get("train", 0.0))
