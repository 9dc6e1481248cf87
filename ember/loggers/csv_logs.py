"""CSVLogger: ``metrics.csv`` (one row per step, one column per metric) plus ``hparams.yaml``,
under the same ``save_dir/name/version_N`` layout as the TensorBoard logger.

Rows are buffered and written every ``flush_logs_every_n_steps`` steps, at epoch end
(``save``), at ``finalize`` and at interpreter exit. When a new metric name appears mid-run the
file is rewritten with the wider header, as Lightning does, so the CSV always parses.
"""

from __future__ import annotations

import atexit
import csv
import os
import warnings
import weakref
from collections.abc import Mapping

from ember.loggers._hparams import HPARAMS_FILE, params_to_dict, save_hparams_yaml, to_plain
from ember.loggers._metrics import LOGGER_JOIN_CHAR, add_prefix, to_scalar
from ember.loggers._versioning import VersionedLogger, make_log_dir
from ember.loggers.logger import rank_zero_only

METRICS_FILE = "metrics.csv"


class _ExperimentWriter:
    """Buffers metric rows and writes them to ``metrics.csv``; ``step`` is the first column,
    the others follow in the order their names first appeared."""

    def __init__(self, log_dir: str, owner: str, purge_step: int | None = None):
        self.log_dir = make_log_dir(log_dir, owner)
        self.metrics_file_path = os.path.join(log_dir, METRICS_FILE)
        self._owner = owner
        self.rows: list[dict] = []
        self.keys: list[str] = ["step"]
        self._header_on_disk: list[str] | None = None
        if os.path.isfile(self.metrics_file_path):
            self._adopt_existing(purge_step)

    def _adopt_existing(self, purge_step: int | None) -> None:
        """A resumed run (``purge_step`` set) keeps the earlier rows before ``purge_step``;
        otherwise the old file is replaced, with a warning (Lightning's behaviour)."""
        path = self.metrics_file_path
        if purge_step is None:
            warnings.warn(
                f"{self._owner}: '{path}' already exists; it will be replaced by this "
                "run's metrics (pass purge_step to continue it instead)",
                stacklevel=4,
            )
            os.remove(path)
            return
        header, rows = self._read()
        kept = [r for r in rows if _step_of(r) is None or _step_of(r) < purge_step]
        self.keys = ["step"] + [k for k in header if k != "step"]
        self._write(kept, mode="w")
        self._header_on_disk = list(self.keys)

    def _read(self) -> tuple[list[str], list[dict]]:
        try:
            with open(self.metrics_file_path, newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                rows = list(reader)
                return list(reader.fieldnames or []), rows
        except OSError as exc:
            raise OSError(
                f"{self._owner}: cannot read '{self.metrics_file_path}': {exc.strerror or exc}"
            ) from exc

    def _write(self, rows: list[dict], mode: str) -> None:
        try:
            with open(self.metrics_file_path, mode, newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, fieldnames=self.keys, restval="")
                if mode == "w":
                    writer.writeheader()
                writer.writerows(rows)
        except OSError as exc:
            raise OSError(
                f"{self._owner}: cannot write '{self.metrics_file_path}': {exc.strerror or exc}"
            ) from exc

    def log_metrics(self, metrics: Mapping, step: int) -> None:
        """Add a row; values logged for the same step back to back share one row."""
        last = self.rows[-1] if self.rows else None
        if last is not None and last["step"] == step and not (metrics.keys() & last.keys()):
            last.update(metrics)
        else:
            self.rows.append({"step": step, **metrics})
        for key in metrics:
            if key not in self.keys:
                self.keys.append(key)

    def save(self) -> None:
        """Write the buffered rows; rewrite the whole file when the header grew."""
        if not self.rows:
            return
        if self._header_on_disk == self.keys:
            self._write(self.rows, mode="a")
        else:
            old = self._read()[1] if self._header_on_disk is not None else []
            self._write(old + self.rows, mode="w")
            self._header_on_disk = list(self.keys)
        self.rows = []


def _step_of(row: Mapping) -> int | None:
    try:
        return int(float(row.get("step", "")))
    except ValueError:
        return None


def _save_at_exit(ref: weakref.ref) -> None:
    logger = ref()
    if logger is not None and logger._experiment is not None:
        logger._experiment.save()


class CSVLogger(VersionedLogger):
    """Log metrics to ``log_dir/metrics.csv`` and hyperparameters to ``log_dir/hparams.yaml``.

    Args:
        save_dir, name, version: the ``save_dir/name/version_N`` layout (see TensorBoardLogger).
        prefix: put in front of every metric name (``prefix-name``).
        flush_logs_every_n_steps: write buffered rows every this many steps.
        purge_step: when resuming into an existing version, keep the earlier rows before this
            step (instead of replacing the file). Settable; set after rows were written, it
            drops the rows at or after it.
    """

    NAME_METRICS_FILE = METRICS_FILE
    NAME_HPARAMS_FILE = HPARAMS_FILE
    LOGGER_JOIN_CHAR = LOGGER_JOIN_CHAR

    def __init__(
        self,
        save_dir,
        name: str | None = "lightning_logs",
        version: int | str | None = None,
        prefix: str = "",
        flush_logs_every_n_steps: int = 100,
        purge_step: int | None = None,
    ):
        super().__init__(save_dir, name=name, version=version)
        if (
            isinstance(flush_logs_every_n_steps, bool)
            or not isinstance(flush_logs_every_n_steps, int)
            or flush_logs_every_n_steps < 1
        ):
            raise ValueError(
                "CSVLogger: flush_logs_every_n_steps must be a positive int, got "
                f"{flush_logs_every_n_steps!r}"
            )
        self._prefix = prefix
        self._flush_logs_every_n_steps = flush_logs_every_n_steps
        self._purge_step = None
        self.purge_step = purge_step
        self._rows_logged = 0
        self.hparams: dict = {}
        atexit.register(_save_at_exit, weakref.ref(self))

    @property
    def purge_step(self) -> int | None:
        return self._purge_step

    @purge_step.setter
    def purge_step(self, step: int | None) -> None:
        if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 0):
            raise ValueError(
                f"CSVLogger: purge_step must be a non-negative int or None, got {step!r}"
            )
        self._purge_step = step
        if step is not None and self._experiment is not None:
            self._experiment.save()
            if os.path.isfile(self._experiment.metrics_file_path):
                self._experiment._adopt_existing(step)
            self._purge_step = None

    def _create_experiment(self) -> _ExperimentWriter:
        writer = _ExperimentWriter(self.log_dir, type(self).__name__, self._purge_step)
        self._purge_step = None  # applies to the file this run found, once
        return writer

    @rank_zero_only
    def log_metrics(self, metrics: Mapping, step: int | None = None) -> None:
        owner = type(self).__name__
        row = {}
        for key, value in add_prefix(metrics, self._prefix, self.LOGGER_JOIN_CHAR).items():
            if isinstance(value, Mapping):
                row.update(
                    {f"{key}/{k}": to_scalar(v, f"{key}/{k}", owner) for k, v in value.items()}
                )
            else:
                row[key] = to_scalar(value, key, owner)
        if step is None:
            step = self._rows_logged
        self._rows_logged += 1
        self.experiment.log_metrics(row, step)
        if (step + 1) % self._flush_logs_every_n_steps == 0:
            self.save()

    @rank_zero_only
    def log_hyperparams(self, params, metrics=None) -> None:
        """Write ``hparams.yaml``; ``metrics``, when given, are logged at step 0."""
        owner = type(self).__name__
        self.hparams.update(to_plain(params_to_dict(params, f"{owner}.log_hyperparams")))
        make_log_dir(self.log_dir, owner)
        save_hparams_yaml(os.path.join(self.log_dir, self.NAME_HPARAMS_FILE), self.hparams, owner)
        if metrics is not None:
            self.log_metrics(metrics if isinstance(metrics, Mapping) else {"hp_metric": metrics}, 0)

    @rank_zero_only
    def save(self) -> None:
        """Write buffered rows (the Trainer calls this at every epoch end)."""
        if self._experiment is not None:
            self._experiment.save()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.save()
