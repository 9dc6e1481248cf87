"""EarlyStopping: stop training when a monitored metric stops improving.

Lightning 2.x's semantics: patience counts validation checks, not epochs; the thresholds and a
non-finite value stop at once; every rank stops when any rank decides to. Why it stopped is
kept in ``stopping_reason`` (an ``EarlyStoppingReason``, equal to its string value) and
``stopping_reason_message``; the counters travel in checkpoints so a resumed run keeps its
patience.
"""

from __future__ import annotations

import enum
import math
import warnings

from ember.callbacks.callback import Callback


class EarlyStoppingReason(str, enum.Enum):
    """Why EarlyStopping stopped the run (compares equal to its value)."""

    NOT_STOPPED = "not_stopped"
    STOPPING_THRESHOLD = "stopping_threshold"
    DIVERGENCE_THRESHOLD = "divergence_threshold"
    PATIENCE_EXHAUSTED = "patience_exhausted"
    NON_FINITE_METRIC = "non_finite_metric"

    def __str__(self) -> str:
        return self.value


def _to_float(value) -> float:
    item = getattr(value, "item", None)
    return float(item() if item is not None else value)


def _encode(x: float):
    """A float for a JSON document ('inf', '-inf' or 'nan' when not finite)."""
    return x if math.isfinite(x) else str(x)


class EarlyStopping(Callback):
    """Sets ``trainer.should_stop`` once ``monitor`` did not improve by more than
    ``min_delta`` for ``patience`` checks in a row, reached ``stopping_threshold``, went past
    ``divergence_threshold`` or (``check_finite``) became nan/inf.

    A check happens at the end of each training epoch when validation runs once per epoch,
    after each validation otherwise (``check_on_train_epoch_end`` overrides).
    """

    mode_dict = {"min": lambda a, b: a < b, "max": lambda a, b: a > b}
    order_dict = {"min": "<", "max": ">"}

    def __init__(
        self,
        monitor: str,
        min_delta: float = 0.0,
        patience: int = 3,
        verbose: bool = False,
        mode: str = "min",
        strict: bool = True,
        check_finite: bool = True,
        stopping_threshold: float | None = None,
        divergence_threshold: float | None = None,
        check_on_train_epoch_end: bool | None = None,
        log_rank_zero_only: bool = False,
    ):
        if mode not in self.mode_dict:
            raise ValueError(f"EarlyStopping: `mode` can be min, max, got {mode!r}")
        if patience < 0:
            raise ValueError(f"EarlyStopping(patience={patience}): must be >= 0")
        self.monitor = monitor
        self.patience = patience
        self.verbose = verbose
        self.mode = mode
        self.strict = strict
        self.check_finite = check_finite
        self.stopping_threshold = stopping_threshold
        self.divergence_threshold = divergence_threshold
        self.log_rank_zero_only = log_rank_zero_only
        self._check_on_train_epoch_end = check_on_train_epoch_end
        # signed so that "improved" is always monitor_op(current - min_delta, best)
        self.min_delta = abs(float(min_delta)) * (1 if mode == "max" else -1)
        self.best_score = math.inf if mode == "min" else -math.inf
        self.wait_count = 0
        self.stopped_epoch = 0
        self.stopping_reason = EarlyStoppingReason.NOT_STOPPED
        self.stopping_reason_message: str | None = None

    @property
    def monitor_op(self):
        return self.mode_dict[self.mode]

    @property
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.monitor, mode=self.mode)

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self._check_on_train_epoch_end is None:
            # validation several times per epoch, or not every epoch: check after validation
            interval = getattr(trainer, "val_check_interval", 1.0)
            self._check_on_train_epoch_end = (
                isinstance(interval, float)
                and interval == 1.0
                and getattr(trainer, "check_val_every_n_epoch", 1) == 1
            )

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {
            "wait_count": self.wait_count,
            "stopped_epoch": self.stopped_epoch,
            "best_score": _encode(self.best_score),
            "patience": self.patience,
            "stopping_reason": self.stopping_reason.value,
            "stopping_reason_message": self.stopping_reason_message,
        }

    def load_state_dict(self, state_dict: dict) -> None:
        self.wait_count = int(state_dict["wait_count"])
        self.stopped_epoch = int(state_dict["stopped_epoch"])
        self.best_score = float(state_dict["best_score"])
        self.patience = int(state_dict["patience"])
        self.stopping_reason = EarlyStoppingReason(
            state_dict.get("stopping_reason", EarlyStoppingReason.NOT_STOPPED.value)
        )
        self.stopping_reason_message = state_dict.get("stopping_reason_message")

    # ------------------------------------------------------------------ hooks
    def _should_skip_check(self, trainer) -> bool:
        state = getattr(trainer, "state", None)
        return getattr(state, "fn", "fit") != "fit" or bool(
            getattr(trainer, "sanity_checking", False)
        )

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not self._check_on_train_epoch_end or self._should_skip_check(trainer):
            return
        self._run_early_stopping_check(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._check_on_train_epoch_end or self._should_skip_check(trainer):
            return
        self._run_early_stopping_check(trainer)

    # ------------------------------------------------------------ the check
    def _validate_condition_metric(self, logs: dict) -> bool:
        if logs.get(self.monitor) is not None:
            return True
        keys = "`, `".join(logs)
        msg = (
            f"Early stopping conditioned on metric `{self.monitor}` which is not available. "
            "Pass in or modify your `EarlyStopping` callback to use any of the following: "
            f"`{keys}`"
        )
        if self.strict:
            raise RuntimeError(msg)
        if self.verbose:
            warnings.warn(msg, UserWarning, stacklevel=3)
        return False

    def _run_early_stopping_check(self, trainer) -> None:
        logs = trainer.callback_metrics
        if getattr(trainer, "fast_dev_run", False) or not self._validate_condition_metric(logs):
            return
        current = _to_float(logs[self.monitor])
        local_stop, reason = self._evaluate_stopping_criteria(current)
        # every rank stops when any rank decides to
        should_stop = trainer.strategy.reduce_boolean_decision(bool(local_stop), all=False)
        trainer.should_stop = bool(trainer.should_stop or should_stop)
        if should_stop:
            self.stopped_epoch = trainer.current_epoch
            if not local_stop:
                reason = "Another process signalled the Trainer to stop."
            self.stopping_reason_message = reason
        if reason and self.verbose:
            self._log_info(trainer, reason)

    def _evaluate_stopping_criteria(self, current: float) -> tuple[bool, str | None]:
        op, order = self.monitor_op, self.order_dict[self.mode]
        if self.check_finite and not math.isfinite(current):
            self.stopping_reason = EarlyStoppingReason.NON_FINITE_METRIC
            return True, (
                f"Monitored metric {self.monitor} = {current} is not finite. Previous "
                f"best value was {self.best_score:.3f}. Signaling Trainer to stop."
            )
        if self.stopping_threshold is not None and op(current, self.stopping_threshold):
            self.stopping_reason = EarlyStoppingReason.STOPPING_THRESHOLD
            return True, (
                f"Stopping threshold reached: {self.monitor} = {current} {order} "
                f"{self.stopping_threshold}. Signaling Trainer to stop."
            )
        if self.divergence_threshold is not None and op(-current, -self.divergence_threshold):
            self.stopping_reason = EarlyStoppingReason.DIVERGENCE_THRESHOLD
            return True, (
                f"Divergence threshold reached: {self.monitor} = {current} {order} "
                f"{self.divergence_threshold}. Signaling Trainer to stop."
            )
        if op(current - self.min_delta, self.best_score):
            msg = self._improvement_message(current)
            self.best_score = current
            self.wait_count = 0
            return False, msg
        self.wait_count += 1
        if self.wait_count >= self.patience:
            self.stopping_reason = EarlyStoppingReason.PATIENCE_EXHAUSTED
            return True, (
                f"Monitored metric {self.monitor} did not improve in the last "
                f"{self.wait_count} records. Best score: {self.best_score:.3f}. "
                "Signaling Trainer to stop."
            )
        return False, None

    def _improvement_message(self, current: float) -> str:
        if math.isfinite(self.best_score):
            return (
                f"Metric {self.monitor} improved by {abs(self.best_score - current):.3f} >= "
                f"min_delta = {abs(self.min_delta)}. New best score: {current:.3f}"
            )
        return f"Metric {self.monitor} improved. New best score: {current:.3f}"

    def _log_info(self, trainer, message: str) -> None:
        strategy = trainer.strategy
        rank = strategy.global_rank if strategy.world_size > 1 else None
        if rank is not None:
            message = f"[rank: {rank}] {message}"
        if rank is None or not self.log_rank_zero_only or rank == 0:
            print(message, flush=True)
