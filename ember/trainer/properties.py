"""Read-only views of the Trainer's state that callbacks, loggers and users rely on (the
names of Lightning's Trainer properties)."""

from __future__ import annotations

import math
import os

from ember.trainer.logging import floats_in_place


def _named(callback, *names: str) -> bool:
    return any(cls.__name__ in names for cls in type(callback).__mro__)


class TrainerProperties:
    # ------------------------------------------------------------- counters
    @property
    def current_epoch(self) -> int:
        """Finished epochs (0 during the first epoch, ``max_epochs`` after a full fit)."""
        return self._progress.current_epoch

    @property
    def global_step(self) -> int:
        """Optimizer steps taken (with accumulation, one per ``accumulate_grad_batches``)."""
        return self._progress.global_step

    @property
    def batches_seen(self) -> int:
        """Training batches consumed, over all epochs (independent of accumulation)."""
        return self._progress.batches_seen

    @property
    def num_training_batches(self) -> int | float:
        return self._fit_loop.num_training_batches

    @property
    def num_val_batches(self) -> list:
        return list(self._val_loop.num_batches)

    @property
    def num_sanity_val_batches(self) -> list:
        n = self.num_sanity_val_steps
        return [nb if n == -1 else min(n, nb) for nb in self._val_loop.num_batches]

    @property
    def num_test_batches(self) -> list:
        return list(self._test_loop.num_batches)

    @property
    def num_predict_batches(self) -> list:
        return list(self._predict_num_batches)

    @property
    def val_check_batch(self) -> int | float:
        return self._fit_loop.val_check_batch

    # ------------------------------------------------------------ dataloaders
    @property
    def train_dataloader(self):
        return self._fit_loop.train_loader

    @property
    def val_dataloaders(self):
        loaders = self._val_loop.loaders
        return loaders[0] if loaders and len(loaders) == 1 else loaders

    @property
    def test_dataloaders(self):
        loaders = self._test_loop.loaders
        return loaders[0] if loaders and len(loaders) == 1 else loaders

    @property
    def predict_dataloaders(self):
        loaders = self._predict_loaders
        return loaders[0] if loaders and len(loaders) == 1 else loaders

    # ------------------------------------------------------------ processes
    @property
    def is_global_zero(self) -> bool:
        """Whether this process writes (logs, progress bars, checkpoints)."""
        return self.strategy.is_global_zero

    @property
    def global_rank(self) -> int:
        return self.strategy.global_rank

    @property
    def local_rank(self) -> int:
        return self.strategy.local_rank

    @property
    def world_size(self) -> int:
        return self.strategy.world_size

    @property
    def num_devices(self) -> int:
        return 1

    @property
    def root_device(self):
        return self.strategy.root_device

    # ---------------------------------------------------------------- module
    @property
    def module(self):
        """The TrainingModule being run (Lightning: ``lightning_module``)."""
        return self.lightning_module

    # ---------------------------------------------------------- stage flags
    @property
    def stage(self) -> str | None:
        """'fitting', 'validating', 'sanity_checking', 'testing', 'predicting' or None."""
        return self.state.stage

    @stage.setter
    def stage(self, value: str | None) -> None:
        self.state.stage = value

    @property
    def training(self) -> bool:
        return self.state.stage == "fitting"

    @training.setter
    def training(self, value: bool) -> None:
        if value:
            self.state.stage = "fitting"
        elif self.state.stage == "fitting":
            self.state.stage = None

    @property
    def sanity_checking(self) -> bool:
        return self.state.stage == "sanity_checking"

    @property
    def validating(self) -> bool:
        return self.state.stage == "validating"

    @property
    def testing(self) -> bool:
        return self.state.stage == "testing"

    @property
    def predicting(self) -> bool:
        return self.state.stage == "predicting"

    @property
    def evaluating(self) -> bool:
        return self.state.stage in ("validating", "sanity_checking", "testing")

    # ------------------------------------------------------ loggers, output
    @property
    def logger(self):
        """The first logger, or None."""
        return self.loggers[0] if self.loggers else None

    @logger.setter
    def logger(self, logger) -> None:
        self.loggers = [] if logger is None else [logger]

    @property
    def default_root_dir(self) -> str:
        return self._default_root_dir

    @property
    def log_dir(self) -> str:
        """Where this run writes: the first logger's directory, else default_root_dir.

        No collective here (Lightning broadcasts, which hangs when only rank 0 asks)."""
        path = None
        if self.loggers:
            first = self.loggers[0]
            path = first.log_dir if first.log_dir is not None else first.save_dir
        return self._default_root_dir if path is None else os.fspath(path)

    # ------------------------------------------------------------- callbacks
    @property
    def progress_bar_callback(self):
        for cb in self.callbacks:
            if _named(cb, "ProgressBar", "TQDMProgressBar"):
                return cb
        return None

    @property
    def checkpoint_callbacks(self) -> list:
        return [cb for cb in self.callbacks if _named(cb, "ModelCheckpoint", "Checkpoint")]

    @property
    def checkpoint_callback(self):
        """The first callback that keeps checkpoint paths (``best_model_path`` /
        ``last_model_path``: ModelCheckpoint and look-alikes), where ``ckpt_path="best"`` /
        ``"last"`` look; None if there is none."""
        for cb in self.callbacks:
            if hasattr(cb, "best_model_path") or hasattr(cb, "last_model_path"):
                return cb
        return None

    @property
    def early_stopping_callbacks(self) -> list:
        return [cb for cb in self.callbacks if _named(cb, "EarlyStopping")]

    @property
    def early_stopping_callback(self):
        found = self.early_stopping_callbacks
        return found[0] if found else None

    def print(self, *args, **kwargs) -> None:
        """``print`` on rank 0 only."""
        if self.is_global_zero:
            print(*args, **kwargs)

    # ---------------------------------------------------------------- metrics
    @property
    def callback_metrics(self) -> dict:
        """Every logged value (step values while training, epoch values after), as floats."""
        return floats_in_place(self._metrics.callback)

    @property
    def logged_metrics(self) -> dict:
        """The values last sent to the loggers, as floats."""
        return floats_in_place(self._metrics.logged)

    @property
    def progress_bar_metrics(self) -> dict:
        """The values logged with ``prog_bar=True``, as floats (reading them syncs)."""
        return floats_in_place(self._metrics.pbar)

    @property
    def estimated_stepping_batches(self) -> int | float:
        """Optimizer steps the whole fit will take (for OneCycleLR-like schedulers)."""
        if self.lightning_module is not None and self._fit_loop.train_loader is None:
            self._fit_loop.setup_data()
        batches = self._fit_loop.num_training_batches
        if batches == math.inf or self.max_epochs == -1:
            return self.max_steps if self.max_steps != -1 else math.inf
        steps = math.ceil(batches / self.accumulate_grad_batches) * max(self.max_epochs, 1)
        return min(steps, self.max_steps) if self.max_steps != -1 else steps
