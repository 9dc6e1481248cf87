"""TensorBoardLogger: scalars, hparams (HParams tab + ``hparams.yaml``), histograms and text,
written with tensorboardX under ``save_dir/name/version_N``.

tensorboardX is imported when the writer is first needed, never at ``import ember.loggers``.
Only rank 0 writes; other ranks get a no-op ``experiment`` and create no directories.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Mapping

import numpy as np

from ember.loggers._hparams import (
    HPARAMS_FILE,
    flatten_params,
    params_to_dict,
    sanitize_for_tensorboard,
    save_hparams_yaml,
    to_plain,
)
from ember.loggers._metrics import LOGGER_JOIN_CHAR, add_prefix, to_scalar
from ember.loggers._versioning import VersionedLogger, make_log_dir
from ember.loggers.logger import rank_zero_only


def _histogram_values(array) -> np.ndarray | None:
    """Finite float values of a parameter or gradient as a flat NumPy array (None if none)."""
    arr = np.asarray(array)  # Tensor.__array__ copies CuPy data to the host
    if arr.dtype != np.float64:
        arr = arr.astype(np.float32)
    arr = arr.reshape(-1)
    arr = arr[np.isfinite(arr)]
    return arr if arr.size else None


def _flush_writer(writer) -> None:
    """Flush a SummaryWriter so that everything logged so far is on disk.

    tensorboardX's ``flush()`` only flushes the file: events still in its queue (written by a
    background thread) are not. Stopping the worker drains the queue in order (the stop signal
    comes last), then a fresh worker takes over the same queue and file.
    """
    for file_writer in list((writer.all_writers or {}).values()):
        events = getattr(file_writer, "event_writer", None)
        worker = getattr(events, "_worker", None)
        if worker is not None and not getattr(events, "_closed", True) and hasattr(worker, "stop"):
            worker.stop()
            events._worker = type(worker)(
                events._event_queue, events._ev_writer, events._flush_secs
            )
            events._worker.start()
        file_writer.flush()


class TensorBoardLogger(VersionedLogger):
    """Log to TensorBoard event files, Lightning 2.x style.

    Args:
        save_dir: where the ``name/version_N`` directories go.
        name: experiment name (a sub-directory of ``save_dir``); empty puts versions directly
            in ``save_dir``.
        version: an int N (``version_N``), a string (used as the directory name), or None for
            the next free ``version_N``.
        log_graph: accepted for Lightning compatibility; Ember cannot write model graphs yet.
        default_hp_metric: log ``hp_metric = -1`` with the hyperparameters, so the HParams tab
            has a metric column from the start.
        prefix: put in front of every metric name (``prefix-name``).
        sub_dir: an extra directory inside the version directory.
        histogram_every_n_steps: when set, ``maybe_log_histograms`` writes weight and gradient
            histograms at steps divisible by it (the Trainer calls it before zeroing grads).
        purge_step: the step a resumed run restarts at: TensorBoard drops the old run's points
            at or after it, so a resumed curve has no duplicates. Settable (issue 6's resume
            sets it); an open writer is closed so that the next write carries the marker.
        flush_secs, max_queue, **kwargs: passed to ``tensorboardX.SummaryWriter``.
    """

    NAME_HPARAMS_FILE = HPARAMS_FILE
    LOGGER_JOIN_CHAR = LOGGER_JOIN_CHAR

    def __init__(
        self,
        save_dir,
        name: str | None = "lightning_logs",
        version: int | str | None = None,
        log_graph: bool = False,
        default_hp_metric: bool = True,
        prefix: str = "",
        sub_dir=None,
        histogram_every_n_steps: int | None = None,
        purge_step: int | None = None,
        flush_secs: int = 120,
        max_queue: int = 10,
        **kwargs,
    ):
        super().__init__(save_dir, name=name, version=version, sub_dir=sub_dir)
        if histogram_every_n_steps is not None and (
            not isinstance(histogram_every_n_steps, int) or histogram_every_n_steps < 1
        ):
            raise ValueError(
                "TensorBoardLogger: histogram_every_n_steps must be a positive "
                f"int or None, got {histogram_every_n_steps!r}"
            )
        if log_graph:
            warnings.warn(
                "TensorBoardLogger: log_graph=True is not supported yet (tensorboardX "
                "traces PyTorch models only); no graph will be written",
                stacklevel=2,
            )
        self._log_graph = bool(log_graph)
        self._default_hp_metric = default_hp_metric
        self._prefix = prefix
        self.histogram_every_n_steps = histogram_every_n_steps
        self._purge_step = self._check_purge_step(purge_step)
        self._writer_kwargs = dict(kwargs, flush_secs=flush_secs, max_queue=max_queue)
        self._resumed_from: int | None = None
        self._hp_metric_written = False
        self._last_histogram_step: int | None = None
        self.hparams: dict = {}

    # ------------------------------------------------------------------ the writer
    @staticmethod
    def _check_purge_step(step):
        if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 0):
            raise ValueError(
                f"TensorBoardLogger: purge_step must be a non-negative int or None, got {step!r}"
            )
        return step

    @property
    def purge_step(self) -> int | None:
        return self._purge_step

    @purge_step.setter
    def purge_step(self, step: int | None) -> None:
        """Set before resuming. A writer already open is closed, so the next write starts a new
        event file that carries the purge marker."""
        self._purge_step = self._check_purge_step(step)
        if step is not None and self._experiment is not None:
            self._experiment.flush()
            self._experiment.close()
            self._experiment = None

    @property
    def _resuming(self) -> bool:
        """True when this logger continues an earlier run (purge_step past 0)."""
        step = self._purge_step if self._purge_step is not None else self._resumed_from
        return bool(step)

    def _create_experiment(self):
        from tensorboardX import SummaryWriter

        make_log_dir(self.log_dir, type(self).__name__)
        kwargs = dict(self._writer_kwargs)
        # tensorboardX names files by the second; two writers opened in the same second (a
        # quick resume) would get the same name and the second would truncate the first. A
        # fixed-width nanosecond suffix keeps names unique and in creation order.
        kwargs["filename_suffix"] = f".{time.time_ns():019d}" + kwargs.get("filename_suffix", "")
        writer = SummaryWriter(logdir=self.log_dir, purge_step=self._purge_step, **kwargs)
        # The purge marker belongs to the first file after a resume only: a writer reopened
        # after finalize (fit, then test) must not purge what this run just wrote.
        if self._purge_step is not None:
            self._resumed_from = self._purge_step
        self._purge_step = None
        return writer

    # ------------------------------------------------------------------ logging
    @rank_zero_only
    def log_metrics(self, metrics: Mapping, step: int | None = None) -> None:
        """Scalars by step; a dict value becomes one chart with several lines (add_scalars)."""
        self._write_scalars(add_prefix(metrics, self._prefix, self.LOGGER_JOIN_CHAR), step)

    def _write_scalars(self, metrics: Mapping, step: int | None) -> None:
        owner = type(self).__name__
        for key, value in metrics.items():
            if isinstance(value, Mapping):
                values = {str(k): to_scalar(v, f"{key}/{k}", owner) for k, v in value.items()}
                self.experiment.add_scalars(key, values, step)
            else:
                self.experiment.add_scalar(key, to_scalar(value, key, owner), step)

    @rank_zero_only
    def log_hyperparams(self, params, metrics=None) -> None:
        """Write ``hparams.yaml`` and the HParams plugin data (with ``metrics``, or
        ``hp_metric = -1`` when ``default_hp_metric``).

        As in Lightning, the plugin data is written only when there is a metric to show:
        TensorBoard keeps the first hparams record of a run, so with ``default_hp_metric=False``
        call this again later with the metrics you want in the HParams tab.
        """
        owner = type(self).__name__
        self.hparams.update(to_plain(params_to_dict(params, f"{owner}.log_hyperparams")))
        make_log_dir(self.log_dir, owner)
        save_hparams_yaml(os.path.join(self.log_dir, self.NAME_HPARAMS_FILE), self.hparams, owner)

        write_scalars = True
        if metrics is None:
            metrics = {"hp_metric": -1} if self._default_hp_metric else {}
            # The run already has hp_metric at step 0 (logged earlier, or by the run this one
            # resumes): do not add a second point.
            write_scalars = not (self._resuming or self._hp_metric_written)
            self._hp_metric_written = True
        elif not isinstance(metrics, Mapping):
            metrics = {"hp_metric": metrics}
        if not metrics:
            return
        metrics = add_prefix(metrics, self._prefix, self.LOGGER_JOIN_CHAR)
        if write_scalars:
            self._write_scalars(metrics, 0)
        from tensorboardX.summary import hparams

        flat = sanitize_for_tensorboard(flatten_params(self.hparams))
        plain = {k: to_scalar(v, k, owner) for k, v in metrics.items()}
        writer = self.experiment._get_file_writer()
        for summary in hparams(flat, plain):
            writer.add_summary(summary)

    @rank_zero_only
    def log_text(self, tag: str, text: str, step: int | None = None) -> None:
        """Text (markdown) such as generated samples, shown in TensorBoard's Text tab."""
        self.experiment.add_text(tag, str(text), step)

    @rank_zero_only
    def log_histograms(self, module, step: int | None = None) -> None:
        """Histograms of every named parameter (``weights/<name>``) and of its gradient
        (``gradients/<name>``) when it has one. Non-finite values are left out."""
        writer = self.experiment
        for name, param in module.named_parameters():
            values = _histogram_values(param)
            if values is not None:
                writer.add_histogram(f"weights/{name}", values, step)
            grad = getattr(param, "grad", None)
            if grad is not None:
                values = _histogram_values(grad)
                if values is not None:
                    writer.add_histogram(f"gradients/{name}", values, step)

    def maybe_log_histograms(self, module, step: int) -> bool:
        """``log_histograms`` when ``histogram_every_n_steps`` divides ``step``; True if it
        did. The Trainer calls this where gradients still exist (before zero_grad)."""
        n = self.histogram_every_n_steps
        if not n or step % n or step == self._last_histogram_step:
            return False  # (several optimizers share a step: one set of histograms per step)
        self._last_histogram_step = step
        self.log_histograms(module, step)
        return True

    def log_graph(self, model, input_array=None) -> None:
        """Lightning's API; graph export is not implemented for Ember models."""
        if self._log_graph:
            warnings.warn(
                "TensorBoardLogger.log_graph: graph logging is not supported yet", stacklevel=2
            )

    # ------------------------------------------------------------------ lifecycle
    @rank_zero_only
    def save(self) -> None:
        """Flush buffered events (the Trainer calls this at every epoch end)."""
        if self._experiment is not None:
            _flush_writer(self._experiment)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Flush and close the event file. A later write (e.g. ``test`` after ``fit``) opens a
        new one in the same directory."""
        if self._experiment is not None:
            self._experiment.flush()
            self._experiment.close()
            self._experiment = None
