"""ThroughputMonitor: training samples/s (and tokens/s) over a sliding window of batches.

Time is ``time.perf_counter`` wall clock from the start of training, data loading included
(that is what a user waits for), with validation runs paused out so they do not sink the rate.
The rates go to the loggers, and samples/s and tokens/s into ``trainer.progress_bar_metrics``,
every ``log_every_n_steps`` (rank 0).
"""

from __future__ import annotations

import time
from collections import deque

from ember.callbacks.callback import Callback
from ember.tensor.tensor import Tensor


def _default_batch_size(batch) -> int:
    """The leading dimension of the first array-like in the batch."""
    while isinstance(batch, (list, tuple)) and batch:
        batch = batch[0]
    if isinstance(batch, dict) and batch:
        return _default_batch_size(next(iter(batch.values())))
    shape = getattr(batch, "shape", None)
    if shape:
        return int(shape[0])
    raise ValueError(
        "ThroughputMonitor: cannot tell the batch size of a "
        f"{type(batch).__name__}; pass batch_size_fn"
    )


def _default_tokens(batch) -> int | None:
    """Token count of an (x, y) batch whose x is a 2-D tensor of integer token ids, else None."""
    if not isinstance(batch, (list, tuple)) or not batch:
        return None
    x = batch[0]
    data = x.data if isinstance(x, Tensor) else x
    dtype = getattr(data, "dtype", None)
    if dtype is None or getattr(data, "ndim", 0) != 2 or dtype.kind not in "iu":
        return None
    return int(data.size)


class ThroughputMonitor(Callback):
    """Logs ``train/samples_per_sec``, ``train/batches_per_sec`` and, when the batch tells its
    token count, ``train/tokens_per_sec`` (plus ``train/device/...`` per rank when the world is
    larger than 1), once ``window_size`` batches have been seen.

    ``batch_size_fn(batch) -> int`` gives a batch's sample count (default: the leading dim of its
    first tensor); ``length_fn(batch) -> int`` its token count (default: the size of ``x`` when the
    batch is ``(x, y)`` with ``x`` a 2-D integer tensor of token ids).
    """

    def __init__(
        self, batch_size_fn=None, length_fn=None, window_size: int = 100, separator: str = "/"
    ):
        if not isinstance(window_size, int) or window_size < 2:
            raise ValueError(
                f"ThroughputMonitor: window_size must be an int >= 2, got {window_size!r}"
            )
        self.batch_size_fn = batch_size_fn or _default_batch_size
        self.length_fn = length_fn
        self.window_size = window_size
        self.separator = separator
        self._reset()

    def _reset(self) -> None:
        w = self.window_size
        self._times: deque[float] = deque(maxlen=w)
        self._batches: deque[int] = deque(maxlen=w)
        self._samples: deque[int] = deque(maxlen=w)
        self._tokens: deque[int] = deque(maxlen=w)
        self._t0: float | None = None
        self._paused_at: float | None = None
        self._paused = 0.0
        self._n_batches = self._n_samples = self._n_tokens = 0
        self._has_tokens = False
        self.metrics: dict[str, float] = {}

    # ---- hooks
    def on_train_start(self, trainer, pl_module) -> None:
        self._reset()
        self._t0 = time.perf_counter()

    def on_validation_start(self, trainer, pl_module) -> None:
        if self._t0 is not None and not getattr(trainer, "sanity_checking", False):
            self._paused_at = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._paused_at is not None:
            self._paused += time.perf_counter() - self._paused_at
            self._paused_at = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self._t0 is None:
            return
        # batch sizes are shapes: no device sync needed (the clock reads host time only)
        self._n_batches += 1
        self._n_samples += int(self.batch_size_fn(batch))
        tokens = self.length_fn(batch) if self.length_fn is not None else _default_tokens(batch)
        if tokens is not None:
            self._has_tokens = True
            self._n_tokens += int(tokens)
        self._times.append(time.perf_counter() - self._t0 - self._paused)
        self._batches.append(self._n_batches)
        self._samples.append(self._n_samples)
        self._tokens.append(self._n_tokens)
        if _accumulating(trainer, batch_idx):
            return  # measure whole optimizer steps: the step's time belongs to its batches
        metrics = self.compute(getattr(trainer, "world_size", None) or _world_size(trainer))
        if not metrics:
            return
        self.metrics = metrics
        # only at log points: reading trainer.progress_bar_metrics converts (syncs) its values
        if not (getattr(trainer, "is_global_zero", True) and _should_update_logs(trainer)):
            return
        sep = self.separator
        shown = {
            k: v
            for k, v in metrics.items()
            if k in (f"train{sep}samples_per_sec", f"train{sep}tokens_per_sec")
        }
        pbar = getattr(trainer, "progress_bar_metrics", None)
        if isinstance(pbar, dict):
            pbar.update(shown)
        step = max(trainer.global_step - 1, 0)  # the trainer's logging step for this batch
        for logger in getattr(trainer, "loggers", None) or []:
            logger.log_metrics(dict(metrics), step=step)

    def compute(self, world_size: int = 1) -> dict[str, float]:
        """Rates over the window; empty until ``window_size`` batches have been seen."""
        if len(self._times) < self.window_size:
            return {}
        elapsed = self._times[-1] - self._times[0]
        if elapsed <= 0:
            return {}
        sep = self.separator
        rates = {
            "batches_per_sec": (self._batches[-1] - self._batches[0]) / elapsed,
            "samples_per_sec": (self._samples[-1] - self._samples[0]) / elapsed,
        }
        if self._has_tokens:
            rates["tokens_per_sec"] = (self._tokens[-1] - self._tokens[0]) / elapsed
        out = {f"train{sep}{k}": v for k, v in rates.items()}
        if world_size > 1:
            # each rank measured its own batches: the global rate is world_size times larger
            out.update({f"train{sep}device{sep}{k}": v for k, v in rates.items()})
            out.update({f"train{sep}{k}": v * world_size for k, v in rates.items()})
        return out


def _world_size(trainer) -> int:
    strategy = getattr(trainer, "strategy", None)
    return int(getattr(strategy, "world_size", 1) or 1)


def _accumulating(trainer, batch_idx: int) -> bool:
    acc = getattr(trainer, "accumulate_grad_batches", 1) or 1
    n = getattr(trainer, "num_training_batches", None)
    last = isinstance(n, int) and batch_idx + 1 >= n
    return acc > 1 and (batch_idx + 1) % acc != 0 and not last


def _should_update_logs(trainer) -> bool:
    """After an optimizer step: the trainer's rule for writing step metrics."""
    every = getattr(trainer, "log_every_n_steps", 1) or 1
    return trainer.global_step % every == 0 or bool(getattr(trainer, "should_stop", False))
