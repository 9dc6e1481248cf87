"""TQDMProgressBar: the default progress display of the Trainer.

On a terminal it draws tqdm bars (epoch, batch i/N, it/s, ETA, loss and the prog_bar metrics).
When stdout is not a terminal (pytest, CI, a pipe, a log file) it prints a few plain lines
instead: about ten per epoch plus one per validation run, never carriage-return floods.
Metrics are read only at refresh points, since reading a logged value may sync the device.
"""

from __future__ import annotations

import math
import sys
import time
from collections import deque

from ember.callbacks.callback import Callback
from ember.tensor.tensor import Tensor

_LOSS_KEYS = ("loss", "train_loss", "train/loss", "loss_step", "train_loss_step")
_PLAIN_LINES_PER_EPOCH = 10
_PLAIN_EVERY_UNKNOWN = 100  # print every this many batches when the epoch length is unknown


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _to_float(v):
    if isinstance(v, (int, float, str)):
        return v
    item = getattr(v, "item", None)
    return item() if item is not None else v


def format_value(v) -> str:
    """Short, stable text for a metric: 0.2312, 0.95, 12.35, 123.4, 12346, 1e-05."""
    v = _to_float(v)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if not math.isfinite(v):
        return str(v)
    a = abs(v)
    if a >= 1000:
        return f"{v:.0f}"
    if a >= 100:
        return f"{v:.1f}"
    return f"{v:.4g}"


def format_time(seconds: float) -> str:
    """M:SS or H:MM:SS."""
    s = int(round(max(seconds, 0.0)))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _count(n) -> int | None:
    """A batch count, or None when unknown or infinite."""
    if n is None:
        return None
    if isinstance(n, (list, tuple)):
        parts = [_count(x) for x in n]
        return None if any(p is None for p in parts) else sum(parts)
    if isinstance(n, float) and not math.isfinite(n):
        return None
    return int(n)


def _nth(n, i: int) -> int | None:
    if isinstance(n, (list, tuple)):
        return _count(n[i]) if i < len(n) else None
    return _count(n)


class TQDMProgressBar(Callback):
    """The default progress bar. ``refresh_rate``: update every N batches (0 disables it);
    ``leave``: keep each finished epoch bar on screen; ``process_position``: line offset, for
    several trainers in one terminal. Shows on rank 0 only."""

    def __init__(self, refresh_rate: int = 1, leave: bool = False, process_position: int = 0):
        if not isinstance(refresh_rate, int) or refresh_rate < 0:
            raise ValueError(
                f"TQDMProgressBar: refresh_rate must be an int >= 0, got {refresh_rate!r}"
            )
        self._refresh_rate = refresh_rate
        self._leave = leave
        self._process_position = process_position
        self._enabled = True
        self._tty = False
        self._losses: deque = deque(maxlen=20)
        self.train_progress_bar = None
        self.val_progress_bar = None
        self.test_progress_bar = None
        self.predict_progress_bar = None
        self._eval_name = ""
        self._eval_dl_idx = -1
        self._in_fit = False
        self._eval_seen = 0
        self._eval_t0 = 0.0
        self._epoch_t0 = self._last_t = 0.0
        self._last_i = self._seen_i = 0

    # ---- Lightning's ProgressBar API
    @property
    def refresh_rate(self) -> int:
        return self._refresh_rate

    @property
    def process_position(self) -> int:
        return self._process_position

    @property
    def is_enabled(self) -> bool:
        return self._enabled and self._refresh_rate > 0

    @property
    def is_disabled(self) -> bool:
        return not self.is_enabled

    def enable(self) -> None:
        self._enabled = True

    def disable(self) -> None:
        self._enabled = False

    def setup(self, trainer, pl_module, stage: str) -> None:
        if not getattr(trainer, "is_global_zero", True):
            self.disable()

    def _active(self, trainer) -> bool:
        return self.is_enabled and getattr(trainer, "is_global_zero", True)

    def get_metrics(self, trainer, pl_module) -> dict:
        """What the bar shows after the counters: the running loss, then the prog_bar metrics.
        Reading ``trainer.progress_bar_metrics`` may sync the device: call at refresh points."""
        shown = dict(getattr(trainer, "progress_bar_metrics", None) or {})
        out = {}
        if self._losses and not any(k in shown for k in _LOSS_KEYS):
            total = self._losses[0]
            for x in list(self._losses)[1:]:
                total = total + x
            out["loss"] = float(total) / len(self._losses)
        out.update(shown)
        return out

    # ---- helpers
    def _stream(self):
        return sys.stdout

    def _tqdm(self, **kwargs):
        from tqdm import tqdm

        return tqdm(file=self._stream(), dynamic_ncols=True, smoothing=0, **kwargs)

    def _epoch_desc(self, trainer) -> str:
        epoch = trainer.current_epoch + 1
        max_epochs = getattr(trainer, "max_epochs", None)
        if isinstance(max_epochs, int) and max_epochs > 0:
            return f"Epoch {epoch}/{max_epochs}"
        return f"Epoch {epoch}"

    def _print(self, line: str) -> None:
        print(line, file=self._stream(), flush=True)

    def _record_loss(self, outputs) -> None:
        if isinstance(outputs, dict):
            outputs = outputs.get("loss")
        # keep the raw (possibly device) array: no sync here, only at refresh points
        if isinstance(outputs, Tensor):
            data = outputs.data
        elif isinstance(outputs, (int, float)) and not isinstance(outputs, bool):
            data = float(outputs)
        elif hasattr(outputs, "dtype") and hasattr(outputs, "size"):  # numpy / cupy
            data = outputs
        else:
            return  # manual optimization may return anything
        if getattr(data, "size", 1) == 1:
            self._losses.append(data)

    # ---- training
    def on_train_start(self, trainer, pl_module) -> None:
        self._tty = _isatty(self._stream())
        self._in_fit = True
        self._losses.clear()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if not self._active(trainer):
            return
        total = _count(getattr(trainer, "num_training_batches", None))
        desc = self._epoch_desc(trainer)
        self._epoch_t0 = self._last_t = time.monotonic()
        self._last_i = self._seen_i = 0
        if not self._tty:
            return
        bar = self.train_progress_bar
        if bar is None or self._leave:
            if bar is not None:
                bar.close()
            self.train_progress_bar = self._tqdm(
                desc=desc, total=total, leave=True, position=2 * self._process_position
            )
        else:
            bar.set_description(desc, refresh=False)
            bar.reset(total=total)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if not self._active(trainer):
            return
        self._record_loss(outputs)
        i = batch_idx + 1
        self._seen_i = i
        total = _count(getattr(trainer, "num_training_batches", None))
        if self._tty:
            if i % self._refresh_rate == 0 or i == total:
                self._refresh_train(trainer, pl_module, i)
            return
        every = (
            max(self._refresh_rate, math.ceil(total / _PLAIN_LINES_PER_EPOCH))
            if total
            else max(self._refresh_rate, _PLAIN_EVERY_UNKNOWN)
        )
        if i % every == 0 or i == total:
            self._plain_train_line(trainer, pl_module, i, total)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not self._active(trainer):
            return
        if self._tty:
            if self.train_progress_bar is not None:
                self._refresh_train(trainer, pl_module, self._seen_i)
        elif self._seen_i and self._seen_i != self._last_i:  # the epoch was cut short
            total = _count(getattr(trainer, "num_training_batches", None))
            self._plain_train_line(trainer, pl_module, self._seen_i, total)

    def on_train_end(self, trainer, pl_module) -> None:
        self._in_fit = False
        self._close("train_progress_bar")

    def _refresh_train(self, trainer, pl_module, i: int) -> None:
        bar = self.train_progress_bar
        if bar is None:
            return
        bar.n = i
        metrics = {k: format_value(v) for k, v in self.get_metrics(trainer, pl_module).items()}
        bar.set_postfix(metrics, refresh=False)
        bar.refresh()

    def _plain_train_line(self, trainer, pl_module, i: int, total: int | None) -> None:
        now = time.monotonic()
        parts = [self._epoch_desc(trainer), f"step {i}/{total}" if total else f"step {i}"]
        parts += [f"{k} {format_value(v)}" for k, v in self.get_metrics(trainer, pl_module).items()]
        dt = now - self._last_t
        if dt > 0 and i > self._last_i:
            parts.append(f"{format_value((i - self._last_i) / dt)} it/s")
        elapsed = now - self._epoch_t0
        if total and i < total and elapsed > 0:
            parts.append(f"eta {format_time((total - i) * elapsed / i)}")
        self._print("  ".join(parts))
        self._last_i, self._last_t = i, now

    # ---- validation / test / predict: one bar (tty) or one line (plain) per run
    def _eval_start(self, trainer, attr: str, name: str, total, transient: bool) -> None:
        self._tty = _isatty(self._stream())
        self._eval_name = name
        self._eval_dl_idx, self._eval_seen, self._eval_t0 = -1, 0, time.monotonic()
        if not self._tty:
            return
        has_main = self.train_progress_bar is not None
        setattr(
            self,
            attr,
            self._tqdm(
                desc=name,
                total=_count(total),
                leave=not (has_main or transient),
                position=2 * self._process_position + int(has_main),
            ),
        )

    def _eval_batch_end(
        self, trainer, pl_module, attr: str, batch_idx: int, dataloader_idx: int, totals
    ) -> None:
        self._eval_seen += 1
        bar = getattr(self, attr)
        if bar is None:
            return
        if dataloader_idx != self._eval_dl_idx:  # a new dataloader: restart the count
            self._eval_dl_idx = dataloader_idx
            if isinstance(totals, (list, tuple)) and len(totals) > 1:
                bar.reset(total=_nth(totals, dataloader_idx))
                bar.set_description(f"{self._eval_name} DataLoader {dataloader_idx}", refresh=False)
        i = batch_idx + 1
        if i % self._refresh_rate == 0 or i == _nth(totals, dataloader_idx):
            bar.n = i
            bar.refresh()

    def _eval_line(self, trainer, pl_module, title: str, prefixes: tuple[str, ...]) -> None:
        metrics = dict(getattr(trainer, "progress_bar_metrics", None) or {})
        own = {k: v for k, v in metrics.items() if k.lower().startswith(prefixes)}
        elapsed = time.monotonic() - self._eval_t0
        parts = [title, f"{self._eval_seen} batches"]
        parts += [f"{k} {format_value(v)}" for k, v in (own or metrics).items()]
        rate = f", {format_value(self._eval_seen / elapsed)} it/s" if elapsed > 0 else ""
        parts.append(f"({elapsed:.1f} s{rate})")
        self._print("  ".join(parts))

    def _close(self, attr: str) -> None:
        bar = getattr(self, attr)
        if bar is not None:
            bar.close()
            setattr(self, attr, None)

    def on_sanity_check_start(self, trainer, pl_module) -> None:
        if self._active(trainer):
            self._eval_start(
                trainer,
                "val_progress_bar",
                "Sanity Checking",
                getattr(trainer, "num_sanity_val_batches", None)
                or getattr(trainer, "num_val_batches", None),
                True,
            )

    def on_sanity_check_end(self, trainer, pl_module) -> None:
        self._close("val_progress_bar")

    def on_validation_start(self, trainer, pl_module) -> None:
        if self._active(trainer) and not getattr(trainer, "sanity_checking", False):
            self._eval_start(
                trainer,
                "val_progress_bar",
                "Validation",
                getattr(trainer, "num_val_batches", None),
                False,
            )

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if not self._active(trainer):
            return
        totals = (
            getattr(trainer, "num_sanity_val_batches", None)
            if getattr(trainer, "sanity_checking", False)
            else None
        )
        totals = totals or getattr(trainer, "num_val_batches", None)
        self._eval_batch_end(
            trainer, pl_module, "val_progress_bar", batch_idx, dataloader_idx, totals
        )

    def on_validation_end(self, trainer, pl_module) -> None:
        if not self._active(trainer) or getattr(trainer, "sanity_checking", False):
            return
        if self.val_progress_bar is not None:
            self._close("val_progress_bar")
            if self.train_progress_bar is not None:  # show the new val metrics on the main bar
                self._refresh_train(trainer, pl_module, self.train_progress_bar.n)
        elif not self._tty:
            epoch = f"  {self._epoch_desc(trainer).lower()}" if self._in_fit else ""
            self._eval_line(trainer, pl_module, f"Validation{epoch}", ("val",))

    def on_test_start(self, trainer, pl_module) -> None:
        if self._active(trainer):
            self._eval_start(
                trainer,
                "test_progress_bar",
                "Testing",
                getattr(trainer, "num_test_batches", None),
                False,
            )

    def on_test_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if self._active(trainer):
            self._eval_batch_end(
                trainer,
                pl_module,
                "test_progress_bar",
                batch_idx,
                dataloader_idx,
                getattr(trainer, "num_test_batches", None),
            )

    def on_test_end(self, trainer, pl_module) -> None:
        if not self._active(trainer):
            return
        if self.test_progress_bar is not None:
            self._close("test_progress_bar")
        elif not self._tty:
            self._eval_line(trainer, pl_module, "Test", ("test",))

    def on_predict_start(self, trainer, pl_module) -> None:
        if self._active(trainer):
            self._eval_start(
                trainer,
                "predict_progress_bar",
                "Predicting",
                getattr(trainer, "num_predict_batches", None),
                False,
            )

    def on_predict_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if self._active(trainer):
            self._eval_batch_end(
                trainer,
                pl_module,
                "predict_progress_bar",
                batch_idx,
                dataloader_idx,
                getattr(trainer, "num_predict_batches", None),
            )

    def on_predict_end(self, trainer, pl_module) -> None:
        if not self._active(trainer):
            return
        if self.predict_progress_bar is not None:
            self._close("predict_progress_bar")
        elif not self._tty:
            elapsed = time.monotonic() - self._eval_t0
            self._print(f"Predicting  {self._eval_seen} batches  ({elapsed:.1f} s)")

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._in_fit = False
        self.teardown(trainer, pl_module, "")

    def teardown(self, trainer, pl_module, stage: str) -> None:
        for attr in (
            "val_progress_bar",
            "test_progress_bar",
            "predict_progress_bar",
            "train_progress_bar",
        ):
            self._close(attr)

    def state_dict(self) -> dict:
        return {}
