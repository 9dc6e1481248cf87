"""ModelCheckpoint: save the model while it trains, keep the best k by a monitored metric.

Lightning 2.x's arguments, file names and timing. Every rank takes the same decisions (the
metrics that name and rank a file, the time trigger and "does this file exist" come from rank
0); every rank calls ``trainer.save_checkpoint`` (the Trainer writes on rank 0 only) and only
rank 0 removes files. The state (best/last paths and scores) travels in checkpoints as plain
JSON values, so ``fit(ckpt_path="best" | "last")`` works after a resume.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import time
import warnings
from datetime import timedelta

from ember.callbacks.callback import Callback

_MODES = {"min": (math.inf, lambda a, b: a < b), "max": (-math.inf, lambda a, b: a > b)}


class Checkpoint(Callback):
    """Base of the callbacks that save checkpoints (the Trainer runs them last)."""


def _to_float(value) -> float:
    """A metric value (float, int, 0-d Tensor or array) as a Python float."""
    item = getattr(value, "item", None)
    return float(item() if item is not None else value)


def _encode(x):
    """A float for a JSON document: non-finite values become 'inf', '-inf' or 'nan'."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else str(x)


def _decode(x):
    return None if x is None else float(x)


class ModelCheckpoint(Checkpoint):
    """Save checkpoints periodically; with ``monitor``, keep the ``save_top_k`` best.

    ``filename`` is a template: ``"{epoch}-{step}-{val_loss:.3f}"`` becomes
    ``"epoch=2-step=300-val_loss=0.123.ckpt"`` (``auto_insert_metric_name=False`` keeps only
    the values). ``save_top_k``: 0 saves none (only ``last.ckpt`` with ``save_last``), k the
    best k (the others are removed), -1 all. After training, ``best_model_path`` and
    ``best_model_score`` name the best file; ``best_k_models`` maps path -> score.
    """

    CHECKPOINT_JOIN_CHAR = "-"
    CHECKPOINT_EQUALS_CHAR = "="
    CHECKPOINT_NAME_LAST = "last"
    FILE_EXTENSION = ".ckpt"
    STARTING_VERSION = 1

    def __init__(
        self,
        dirpath=None,
        filename: str | None = None,
        monitor: str | None = None,
        verbose: bool = False,
        save_last: bool | str | None = None,
        save_top_k: int = 1,
        save_weights_only: bool = False,
        mode: str = "min",
        auto_insert_metric_name: bool = True,
        every_n_train_steps: int | None = None,
        train_time_interval: timedelta | None = None,
        every_n_epochs: int | None = None,
        save_on_train_epoch_end: bool | None = None,
        enable_version_counter: bool = True,
    ):
        if mode not in _MODES:
            raise ValueError(f"ModelCheckpoint: `mode` can be min, max but got {mode!r}")
        if save_last not in (None, True, False, "link"):
            raise ValueError(
                f"ModelCheckpoint(save_last={save_last!r}): expected None, True, False or 'link'"
            )
        self.monitor = monitor
        self.verbose = verbose
        self.save_last = save_last
        self.save_top_k = save_top_k
        self.save_weights_only = save_weights_only
        self.auto_insert_metric_name = auto_insert_metric_name
        self.mode = mode
        self.kth_value = _MODES[mode][0]
        self._better = _MODES[mode][1]
        self._save_on_train_epoch_end = save_on_train_epoch_end
        self._enable_version_counter = enable_version_counter
        self._last_global_step_saved = 0  # no checkpoint before the first optimizer step
        self._last_time_checked: float | None = None
        self._last_checkpoint_saved = ""
        self._val_has_run = False
        self._pending_state: dict | None = None
        self._warned_missing = False
        self.current_score: float | None = None
        self.best_k_models: dict[str, float] = {}
        self.kth_best_model_path = ""
        self.best_model_score: float | None = None
        self.best_model_path = ""
        self.last_model_path = ""
        if dirpath is not None:
            dirpath = os.path.realpath(os.path.expanduser(os.fspath(dirpath)))
        self.dirpath = dirpath
        self.filename = filename
        self._init_triggers(every_n_train_steps, every_n_epochs, train_time_interval)
        self._validate_configuration()

    def _init_triggers(self, every_n_train_steps, every_n_epochs, train_time_interval) -> None:
        # none of the three set: save once per epoch (after validation, or at the epoch end)
        if every_n_train_steps is None and every_n_epochs is None and train_time_interval is None:
            every_n_epochs, every_n_train_steps = 1, 0
        else:
            every_n_epochs, every_n_train_steps = every_n_epochs or 0, every_n_train_steps or 0
        if isinstance(train_time_interval, (int, float)) and not isinstance(
            train_time_interval, bool
        ):
            train_time_interval = timedelta(seconds=train_time_interval)
        if train_time_interval is not None and not isinstance(train_time_interval, timedelta):
            raise TypeError(
                "ModelCheckpoint(train_time_interval=...): expected a "
                f"datetime.timedelta, got {type(train_time_interval).__name__}"
            )
        self._train_time_interval = train_time_interval
        self._every_n_epochs = every_n_epochs
        self._every_n_train_steps = every_n_train_steps

    def _validate_configuration(self) -> None:
        if self.save_top_k < -1:
            raise ValueError(f"Invalid value for save_top_k={self.save_top_k}. Must be >= -1")
        if self._every_n_train_steps < 0:
            raise ValueError(
                f"Invalid value for every_n_train_steps={self._every_n_train_steps}. Must be >= 0"
            )
        if self._every_n_epochs < 0:
            raise ValueError(
                f"Invalid value for every_n_epochs={self._every_n_epochs}. Must be >= 0"
            )
        triggers = (
            (self._every_n_train_steps >= 1)
            + (self._every_n_epochs >= 1)
            + (self._train_time_interval is not None)
        )
        if triggers > 1:
            raise ValueError(
                f"Combination of parameters every_n_train_steps={self._every_n_train_steps}, "
                f"every_n_epochs={self._every_n_epochs} and train_time_interval="
                f"{self._train_time_interval} should be mutually exclusive."
            )
        if self.monitor is None and self.save_top_k not in (-1, 0, 1):
            raise ValueError(
                f"ModelCheckpoint(save_top_k={self.save_top_k}, monitor=None) is "
                "not a valid configuration. No quantity for top_k to track."
            )

    @property
    def every_n_epochs(self) -> int:
        return self._every_n_epochs

    @property
    def state_key(self) -> str:
        interval = self._train_time_interval
        return self._generate_state_key(
            monitor=self.monitor,
            mode=self.mode,
            every_n_train_steps=self._every_n_train_steps,
            every_n_epochs=self._every_n_epochs,
            train_time_interval=None if interval is None else interval.total_seconds(),
        )

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer, pl_module, stage: str) -> None:
        self.dirpath = trainer.strategy.broadcast(self._resolve_ckpt_dir(trainer))
        self._val_has_run = False
        if self._pending_state is not None:  # loaded before the directory was known
            state, self._pending_state = self._pending_state, None
            self.load_state_dict(state)
        if (
            trainer.strategy.is_global_zero
            and stage == "fit"
            and self.save_top_k != 0
            and os.path.isdir(self.dirpath)
            and os.listdir(self.dirpath)
        ):
            warnings.warn(
                f"Checkpoint directory {self.dirpath} exists and is not empty.",
                UserWarning,
                stacklevel=2,
            )

    def on_train_start(self, trainer, pl_module) -> None:
        self._last_time_checked = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        """every_n_train_steps and train_time_interval."""
        if self._should_skip_saving_checkpoint(trainer):
            return
        n = self._every_n_train_steps
        skip_batch = n < 1 or trainer.global_step % n != 0
        skip_time = True
        now = time.monotonic()
        if self._train_time_interval is not None:
            prev = self._last_time_checked
            skip_time = prev is None or (now - prev) < self._train_time_interval.total_seconds()
            skip_time = trainer.strategy.broadcast(skip_time)  # rank 0's clock decides
        if skip_batch and skip_time:
            return
        if not skip_time:
            self._last_time_checked = now
        candidates = self._monitor_candidates(trainer)
        self._save_topk_checkpoint(trainer, candidates, final=False)
        self._save_last_checkpoint(trainer, candidates)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self._should_skip_saving_checkpoint(trainer) or not self._should_save_on_train_epoch_end(
            trainer
        ):
            return
        candidates = self._monitor_candidates(trainer)
        n = self._every_n_epochs
        if n >= 1 and (trainer.current_epoch + 1) % n == 0:
            self._save_topk_checkpoint(trainer, candidates, final=True)
        self._save_last_checkpoint(trainer, candidates)

    def on_validation_end(self, trainer, pl_module) -> None:
        if getattr(trainer, "sanity_checking", False):
            return
        self._val_has_run = True
        if self._should_skip_saving_checkpoint(trainer) or self._should_save_on_train_epoch_end(
            trainer
        ):
            return
        candidates = self._monitor_candidates(trainer)
        n = self._every_n_epochs
        if n >= 1 and (trainer.current_epoch + 1) % n == 0:
            self._save_topk_checkpoint(trainer, candidates, final=True)
        self._save_last_checkpoint(trainer, candidates)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {
            "monitor": self.monitor,
            "best_model_score": _encode(self.best_model_score),
            "best_model_path": self.best_model_path,
            "current_score": _encode(self.current_score),
            "dirpath": self.dirpath,
            "best_k_models": {k: _encode(v) for k, v in self.best_k_models.items()},
            "kth_best_model_path": self.kth_best_model_path,
            "kth_value": _encode(self.kth_value),
            "last_model_path": self.last_model_path,
            "last_global_step_saved": self._last_global_step_saved,
        }

    def load_state_dict(self, state_dict: dict) -> None:
        if self.dirpath is None and state_dict.get("dirpath") is not None:
            self._pending_state = dict(state_dict)  # compared with the dirpath setup resolves
            return
        dirpath_from_ckpt = state_dict.get("dirpath", self.dirpath)
        if self.dirpath == dirpath_from_ckpt:
            self.best_model_score = _decode(state_dict.get("best_model_score"))
            self.current_score = _decode(state_dict.get("current_score"))
            self.kth_best_model_path = state_dict.get(
                "kth_best_model_path", self.kth_best_model_path
            )
            if state_dict.get("kth_value") is not None:
                self.kth_value = _decode(state_dict["kth_value"])
            if "best_k_models" in state_dict:
                self.best_k_models = {k: _decode(v) for k, v in state_dict["best_k_models"].items()}
            self.last_model_path = state_dict.get("last_model_path", self.last_model_path)
        else:
            warnings.warn(
                f"The dirpath has changed from {dirpath_from_ckpt!r} to {self.dirpath!r}, "
                "therefore `best_model_score`, `kth_best_model_path`, `kth_value`, "
                "`last_model_path` and `best_k_models` won't be reloaded. Only "
                "`best_model_path` will be reloaded.",
                UserWarning,
                stacklevel=2,
            )
        self.best_model_path = state_dict.get("best_model_path", self.best_model_path)
        self._last_global_step_saved = int(
            state_dict.get("last_global_step_saved", self._last_global_step_saved)
        )

    # -------------------------------------------------------------- deciding
    def _should_skip_saving_checkpoint(self, trainer) -> bool:
        state = getattr(trainer, "state", None)
        return (
            bool(getattr(trainer, "fast_dev_run", False))
            or getattr(state, "fn", "fit") != "fit"
            or bool(getattr(trainer, "sanity_checking", False))
            or self._last_global_step_saved == trainer.global_step
        )

    def _should_save_on_train_epoch_end(self, trainer) -> bool:
        if self._save_on_train_epoch_end is not None:
            return self._save_on_train_epoch_end
        # validation every n > 1 epochs: the epoch end may have no fresh val metric
        if getattr(trainer, "check_val_every_n_epoch", 1) != 1:
            return False
        num_val = trainer.num_val_batches
        if (sum(num_val) if isinstance(num_val, (list, tuple)) else num_val) == 0:
            return True  # no validation: the epoch end is the only moment
        # validation several times per epoch: save after each validation instead
        interval = getattr(trainer, "val_check_interval", 1.0)
        return isinstance(interval, float) and interval == 1.0

    def _monitor_candidates(self, trainer) -> dict:
        """The logged metrics plus ``epoch`` and ``step``, as rank 0 sees them (the values
        name and rank the files, so every rank must agree on them)."""
        candidates = {k: _to_float(v) for k, v in trainer.callback_metrics.items()}
        epoch, step = candidates.get("epoch"), candidates.get("step")
        candidates["epoch"] = int(epoch) if epoch is not None else int(trainer.current_epoch)
        candidates["step"] = int(step) if step is not None else int(trainer.global_step)
        return trainer.strategy.broadcast(candidates)

    def check_monitor_top_k(self, trainer, current: float | None = None) -> bool:
        if current is None:
            return False
        if self.save_top_k == -1 or len(self.best_k_models) < self.save_top_k:
            return True
        better = self._better(current, self.best_k_models[self.kth_best_model_path])
        return trainer.strategy.reduce_boolean_decision(bool(better))

    # ---------------------------------------------------------------- saving
    def _save_topk_checkpoint(self, trainer, candidates: dict, final: bool) -> None:
        if self.save_top_k == 0:
            return
        if self.monitor is None:
            self._save_none_monitor_checkpoint(trainer, candidates)
            return
        if self.monitor not in candidates:
            logged = [k for k in candidates if k not in ("epoch", "step")]
            msg = (
                f"`ModelCheckpoint(monitor={self.monitor!r})` could not find the monitored "
                f"key in the returned metrics: {logged}. HINT: Did you call "
                f"`log({self.monitor!r}, value)` in the `TrainingModule`?"
            )
            # once validation ran (or at an epoch end), every metric has been logged
            if self._val_has_run or final:
                raise ValueError(msg)
            if not self._warned_missing:
                self._warned_missing = True
                warnings.warn(msg, UserWarning, stacklevel=3)
            return
        current = candidates[self.monitor]
        if self.check_monitor_top_k(trainer, current):
            self._update_best_and_save(current, trainer, candidates)
        elif self.verbose:
            self._info(
                trainer,
                f"Epoch {candidates['epoch']:d}, global step "
                f"{candidates['step']:d}: {self.monitor!r} was not in top "
                f"{self.save_top_k}",
            )

    def _save_none_monitor_checkpoint(self, trainer, candidates: dict) -> None:
        filepath = self._get_metric_interpolated_filepath_name(
            candidates, trainer, self.best_model_path
        )
        # set before saving: the path is part of the state written into the file
        previous, self.best_model_path = self.best_model_path, filepath
        self._save_checkpoint(trainer, filepath)
        if (
            self.save_top_k == 1
            and previous
            and self._should_remove_checkpoint(trainer, previous, filepath)
        ):
            self._remove_checkpoint(trainer, previous)

    def _update_best_and_save(self, current: float, trainer, candidates: dict) -> None:
        k = len(self.best_k_models) + 1 if self.save_top_k == -1 else self.save_top_k
        del_filepath = None
        if len(self.best_k_models) == k and k > 0:
            del_filepath = self.kth_best_model_path
            self.best_k_models.pop(del_filepath)
        if math.isnan(current):  # never keep nan as best: rank it worst
            current = math.inf if self.mode == "min" else -math.inf
        filepath = self._get_metric_interpolated_filepath_name(candidates, trainer, del_filepath)
        self.current_score = current
        self.best_k_models[filepath] = current
        if len(self.best_k_models) == k:
            worst = max if self.mode == "min" else min
            self.kth_best_model_path = worst(self.best_k_models, key=self.best_k_models.get)
            self.kth_value = self.best_k_models[self.kth_best_model_path]
        best = min if self.mode == "min" else max
        self.best_model_path = best(self.best_k_models, key=self.best_k_models.get)
        self.best_model_score = self.best_k_models[self.best_model_path]
        if self.verbose:
            self._info(
                trainer,
                f"Epoch {candidates['epoch']:d}, global step "
                f"{candidates['step']:d}: {self.monitor!r} reached {current:0.5f}"
                f" (best {self.best_model_score:0.5f}), saving model to "
                f"{filepath!r} as top {k}",
            )
        self._save_checkpoint(trainer, filepath)
        if del_filepath and self._should_remove_checkpoint(trainer, del_filepath, filepath):
            self._remove_checkpoint(trainer, del_filepath)

    def _save_last_checkpoint(self, trainer, candidates: dict) -> None:
        if not self.save_last:
            return
        filepath = self.format_checkpoint_name(candidates, self.CHECKPOINT_NAME_LAST)
        if self._enable_version_counter:
            version = self.STARTING_VERSION
            while self.file_exists(filepath, trainer) and filepath != self.last_model_path:
                filepath = self.format_checkpoint_name(
                    candidates, self.CHECKPOINT_NAME_LAST, ver=version
                )
                version += 1
        previous, self.last_model_path = self.last_model_path, filepath
        # "link": point at the file saved at this very step; otherwise write a real file
        fresh = self._last_checkpoint_saved and self._last_global_step_saved == trainer.global_step
        if self.save_last == "link" and fresh and self.save_top_k != 0:
            self._link_checkpoint(trainer, self._last_checkpoint_saved, filepath)
        else:
            if trainer.strategy.is_global_zero and os.path.islink(filepath):
                os.remove(filepath)  # write a file, not through the link into its target
            self._save_checkpoint(trainer, filepath)
        if previous and self._should_remove_checkpoint(trainer, previous, filepath):
            self._remove_checkpoint(trainer, previous)

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        # set first: the step is part of the state written into the file, so a run resumed
        # from it does not save again at that step
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        trainer.save_checkpoint(filepath, weights_only=self.save_weights_only)
        if trainer.strategy.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(self)

    @staticmethod
    def _link_checkpoint(trainer, filepath: str, linkpath: str) -> None:
        """``last.ckpt`` as a symbolic link to the newest file (a copy where links fail)."""
        if trainer.strategy.is_global_zero:
            if os.path.islink(linkpath) or os.path.isfile(linkpath):
                os.remove(linkpath)
            elif os.path.isdir(linkpath):
                shutil.rmtree(linkpath)
            try:
                os.symlink(os.path.relpath(filepath, os.path.dirname(linkpath)), linkpath)
            except OSError:
                shutil.copy(filepath, linkpath)
        trainer.strategy.barrier("ModelCheckpoint.link")

    def _should_remove_checkpoint(self, trainer, previous: str, current: str) -> bool:
        """Never remove the file just written, one outside ``dirpath``, or the file this run
        resumed from."""
        if previous == current:
            return False
        previous_abs = os.path.abspath(previous)
        resume = getattr(trainer, "ckpt_path", None)
        if resume is not None and os.path.abspath(os.fspath(resume)) == previous_abs:
            return False
        dirpath = os.path.abspath(self.dirpath)
        return os.path.commonpath([dirpath, previous_abs]) == dirpath and previous_abs != dirpath

    def _remove_checkpoint(self, trainer, filepath: str) -> None:
        remove = getattr(trainer.strategy, "remove_checkpoint", None)
        if remove is not None:
            remove(filepath)
        elif trainer.strategy.is_global_zero and (
            os.path.isfile(filepath) or os.path.islink(filepath)
        ):
            os.remove(filepath)

    def file_exists(self, filepath: str, trainer) -> bool:
        """Whether ``filepath`` exists on rank 0 (every rank gets the same answer)."""
        return bool(trainer.strategy.broadcast(os.path.exists(filepath)))

    # ----------------------------------------------------------------- names
    def _format_checkpoint_name(
        self,
        filename: str | None,
        metrics: dict,
        prefix: str = "",
        auto_insert_metric_name: bool = True,
    ) -> str:
        if not filename:
            filename = "{epoch}" + self.CHECKPOINT_JOIN_CHAR + "{step}"
        metrics = dict(metrics)
        # the keys in the template, longest first ("epoch_test" before "epoch")
        groups = sorted(re.findall(r"(\{.*?)[:\}]", filename), key=len, reverse=True)
        for group in groups:
            name = group[1:]
            if auto_insert_metric_name:
                filename = filename.replace(group, name + self.CHECKPOINT_EQUALS_CHAR + "{" + name)
            # index syntax, so names with dots or slashes format too
            filename = filename.replace(group, f"{{0[{name}]")
            if name not in metrics:
                metrics[name] = 0
        filename = filename.format(metrics)
        if prefix:
            filename = self.CHECKPOINT_JOIN_CHAR.join([prefix, filename])
        return filename

    def format_checkpoint_name(
        self, metrics: dict, filename: str | None = None, ver: int | None = None
    ) -> str:
        """The path for these metrics: ``format_checkpoint_name({"epoch": 2, "val_loss":
        0.1234})`` with ``filename="{epoch}-{val_loss:.2f}"`` is
        ``<dirpath>/epoch=2-val_loss=0.12.ckpt``; ``ver`` appends ``-v<ver>``."""
        filename = self._format_checkpoint_name(
            filename or self.filename, metrics, auto_insert_metric_name=self.auto_insert_metric_name
        )
        if ver is not None:
            filename = self.CHECKPOINT_JOIN_CHAR.join((filename, f"v{ver}"))
        name = f"{filename}{self.FILE_EXTENSION}"
        return os.path.join(self.dirpath, name) if self.dirpath else name

    def _get_metric_interpolated_filepath_name(
        self, candidates: dict, trainer, del_filepath: str | None = None
    ) -> str:
        filepath = self.format_checkpoint_name(candidates)
        if self._enable_version_counter:
            version = self.STARTING_VERSION
            while self.file_exists(filepath, trainer) and filepath != del_filepath:
                filepath = self.format_checkpoint_name(candidates, ver=version)
                version += 1
        return filepath

    def _resolve_ckpt_dir(self, trainer) -> str:
        """``dirpath`` if given, else ``<log_dir>/checkpoints`` with a logger, else
        ``<default_root_dir>/checkpoints``."""
        if self.dirpath is not None:
            return self.dirpath
        if trainer.loggers:
            root = trainer.log_dir if trainer.log_dir is not None else trainer.default_root_dir
        else:
            root = trainer.default_root_dir
        return os.path.join(os.fspath(root), "checkpoints")

    def _find_last_checkpoints(self, trainer) -> set[str]:
        """The ``last*.ckpt`` files in the checkpoint directory (for ``ckpt_path="last"``)."""
        ckpt_dir = self._resolve_ckpt_dir(trainer)
        pattern = re.compile(rf"^{re.escape(self.CHECKPOINT_NAME_LAST)}(-(\d+))?")
        if not os.path.isdir(ckpt_dir):
            return set()
        return {
            os.path.normpath(os.path.join(ckpt_dir, name))
            for name in os.listdir(ckpt_dir)
            if name.endswith(self.FILE_EXTENSION)
            and pattern.match(name[: -len(self.FILE_EXTENSION)])
        }

    def to_yaml(self, filepath=None) -> None:
        """Write ``best_k_models`` (path: score) to a YAML file."""
        import yaml

        if filepath is None:
            filepath = os.path.join(self.dirpath, "best_k_models.yaml")
        with open(filepath, "w") as f:
            yaml.dump({k: float(v) for k, v in self.best_k_models.items()}, f)

    @staticmethod
    def _info(trainer, message: str) -> None:
        if trainer.strategy.is_global_zero:
            print(message, flush=True)
