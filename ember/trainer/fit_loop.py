"""The fit loop: epochs of training batches, validation inside them, and the stopping rules
(max/min epochs and steps, max_time, ``should_stop``), in Lightning 2.x's hook order.

Counters are kept apart: ``global_step`` counts optimizer steps, ``batches_seen`` counts the
training batches consumed, ``batches_that_stepped`` counts the batches that ended an
accumulation window (the loggers' x axis, as in Lightning).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time

from ember.trainer.data import (
    iterate,
    limited_batches,
    request_loaders,
    sequential_copy,
    step_args,
    transfer_batch,
)
from ember.trainer.hooks import call_callback_hooks, call_hooks, call_module_hook
from ember.trainer.optimization import run_automatic, run_manual, update_lr_schedulers


@dataclasses.dataclass
class Progress:
    """Every counter a checkpoint needs to resume the loop (JSON-friendly ints)."""

    current_epoch: int = 0  # finished epochs
    global_step: int = 0  # optimizer steps
    batches_seen: int = 0  # training batches consumed, over all epochs
    batches_that_stepped: int = 0  # batches that ended an accumulation window
    batch_idx: int = 0  # batches consumed in the current epoch

    def state_dict(self) -> dict:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for f in dataclasses.fields(self):
            if f.name in state:
                setattr(self, f.name, int(state[f.name]))


class FitLoop:
    def __init__(self, trainer):
        self.trainer = trainer
        self.source = None  # the dataloader passed to fit, if any
        self.train_loader = None
        self.num_training_batches: int | float = 0
        self.val_check_batch: int | float = math.inf
        self._start_time: float | None = None
        self._loaded_epoch = -1
        # Resuming mid-epoch (issue 6): the dataloader, restored from its state_dict, yields
        # the remaining batches; their indices continue from here.
        self.resume_batch_idx = 0
        self.skip_batches = 0  # a loader without state_dict: drop this many batches first
        # Where the loop stands, for checkpoints (checkpoint_state.py): ("between",) at a clean
        # boundary, ("batch"|"batch_end"|"validation", batch_idx, is_last, accumulating)
        # inside a batch, ("epoch_end", reached_end) in the epoch-end hooks.
        self.position: tuple = ("between",)
        self.resume = None  # set by a checkpoint restore; applied when run() starts
        self.time_offset = 0.0  # training time spent before a resume (for max_time)

    # ------------------------------------------------------------------ data
    def setup_data(self) -> None:
        """Ask for the training dataloader (again, when reload_dataloaders_every_n_epochs
        says so) and derive the number of batches and the validation interval."""
        trainer = self.trainer
        loaders = request_loaders(trainer, "fit", self.source)
        if loaders is None:
            raise ValueError(
                "Trainer.fit: no training data; pass train_dataloaders=, a "
                "datamodule=, or implement train_dataloader() in "
                f"{type(trainer.lightning_module).__name__}"
            )
        if len(loaders) != 1:
            raise ValueError(
                f"Trainer.fit: got {len(loaders)} training dataloaders; pass one "
                "(combine datasets with ConcatDataset)"
            )
        loader = loaders[0]
        if trainer.overfit_batches > 0:
            loader = sequential_copy(loader)
        if trainer.use_distributed_sampler:
            loader = trainer.strategy.process_dataloader(loader, "fit")
        self.train_loader = loader
        self.num_training_batches = limited_batches(
            self.train_loader, trainer.limit_train_batches, "training", "limit_train_batches"
        )
        self._loaded_epoch = trainer.current_epoch
        interval = trainer.val_check_interval
        n = self.num_training_batches
        if isinstance(interval, int):
            if interval > n and trainer.check_val_every_n_epoch is not None:
                raise ValueError(
                    f"val_check_interval={interval} is more than the {n} training "
                    "batches of an epoch; lower it, or set "
                    "check_val_every_n_epoch=None to count batches across epochs"
                )
            self.val_check_batch = interval
        elif n == math.inf:
            if interval != 1.0:
                raise ValueError(
                    f"val_check_interval={interval}: a fraction of an epoch needs a "
                    "training dataloader with a length; pass an int"
                )
            self.val_check_batch = math.inf
        else:
            self.val_check_batch = max(1, int(n * interval))

    def _maybe_reload(self) -> None:
        every = self.trainer.reload_dataloaders_every_n_epochs
        epoch = self.trainer.current_epoch
        if every and epoch != self._loaded_epoch and epoch % every == 0:
            self.setup_data()

    # --------------------------------------------------------------- stopping
    @property
    def progress(self) -> Progress:
        return self.trainer._progress

    def can_stop_early(self) -> bool:
        t = self.trainer
        ok_epochs = self.progress.current_epoch >= t.min_epochs if t.min_epochs else True
        ok_steps = self.progress.global_step >= t.min_steps if t.min_steps else True
        return ok_epochs and ok_steps

    def _max_steps_reached(self) -> bool:
        max_steps = self.trainer.max_steps
        return max_steps != -1 and self.progress.global_step >= max_steps

    def done(self) -> bool:
        t = self.trainer
        if self.num_training_batches == 0 or self._max_steps_reached():
            return True
        if t.max_epochs != -1 and self.progress.current_epoch >= t.max_epochs:
            return True
        return t.should_stop and self.can_stop_early()

    def _check_time(self) -> None:
        """max_time: rank 0's clock decides for every rank (clocks differ; a rank that stops
        alone would leave the others waiting in a collective)."""
        t = self.trainer
        if t.max_time is None or self._start_time is None:
            return
        expired = time.monotonic() - self._start_time >= t.max_time.total_seconds()
        if t.strategy.broadcast(expired):
            t.should_stop = True

    # ------------------------------------------------------------------- run
    def run(self, val_loop) -> None:
        trainer = self.trainer
        if self.train_loader is None:
            self.setup_data()
        self.val_loop = val_loop
        if self.num_training_batches == 0:
            return
        if val_loop.loaders is None and trainer._validation_possible():
            val_loop.setup_data(trainer._fit_val_source)
        self._start_time = time.monotonic() - self.time_offset
        self.time_offset = 0.0
        self.position = ("between",)
        module = trainer.lightning_module
        if not module.training:  # left in eval mode (e.g. by predict): train it; submodules
            module.train()  # the user froze in eval mode under a training model stay frozen
        call_hooks(trainer, "on_train_start")
        resume, self.resume = self.resume, None
        if resume is not None:  # a checkpoint's loader, metrics and RNG states, then the rest
            self._run_tail(resume.apply(self))  # of the batch or epoch end it was saved in
            self.resume_batch_idx = self.progress.batch_idx
        while not self.done():
            self._maybe_reload()
            self.run_epoch()
        call_hooks(trainer, "on_train_end")

    def _should_accumulate(self, batch_idx: int, is_last: bool) -> bool:
        if not self.trainer.lightning_module.automatic_optimization:
            return False
        return not ((batch_idx + 1) % self.trainer.accumulate_grad_batches == 0 or is_last)

    def _should_check_val(self, batch_idx: int, is_last: bool) -> bool:
        t = self.trainer
        if not t._validation_enabled():
            return False
        every = t.check_val_every_n_epoch
        if every is not None and (self.progress.current_epoch + 1) % every != 0:
            return False
        if self.val_check_batch == math.inf:
            return is_last
        if t.should_stop and self.can_stop_early():
            return True
        index = self.progress.batches_seen - 1 if every is None else batch_idx
        return (index + 1) % self.val_check_batch == 0

    def run_epoch(self) -> None:
        trainer, progress = self.trainer, self.progress
        module = trainer.lightning_module
        connector = trainer._logger_connector
        connector.results = connector.train_results
        offset, self.resume_batch_idx = self.resume_batch_idx, 0
        progress.batch_idx = offset
        self.position = ("between",)
        call_hooks(trainer, "on_train_epoch_start")
        reached_end = False
        step_fn = module.training_step
        loader = self.train_loader
        if self.skip_batches:
            loader, self.skip_batches = itertools.islice(loader, self.skip_batches, None), 0
        for i, batch, is_last in iterate(loader, self.num_training_batches - offset):
            batch_idx = i + offset
            batch = transfer_batch(trainer, batch, 0)
            connector.train_results.begin_batch(batch)
            connector.sent.clear()
            accumulating = self._should_accumulate(batch_idx, is_last)
            self.position = ("batch", batch_idx, is_last, accumulating)
            call_callback_hooks(trainer, "on_train_batch_start", batch, batch_idx)
            if call_module_hook(trainer, "on_train_batch_start", batch, batch_idx) == -1:
                break  # Lightning: -1 skips the rest of the epoch
            args = step_args(step_fn, "training_step", batch, batch_idx, None)
            if module.automatic_optimization:
                outputs = run_automatic(trainer, args, batch_idx, accumulating)
            else:
                outputs = run_manual(trainer, args)
            progress.batches_seen += 1
            progress.batch_idx = batch_idx + 1
            if not accumulating:
                update_lr_schedulers(trainer, "step", plateau=False)
            if is_last:
                update_lr_schedulers(trainer, "epoch", plateau=False)
            connector.collect_train_step()
            self.position = ("batch_end", batch_idx, is_last, accumulating)
            call_hooks(trainer, "on_train_batch_end", outputs, batch, batch_idx)
            reached_end = is_last
            if self._finish_batch(batch_idx, is_last, accumulating, "batch_end"):
                break
        self._end_epoch(reached_end)

    def _finish_batch(self, batch_idx: int, is_last: bool, accumulating: bool, start: str) -> bool:
        """A batch after its ``on_train_batch_end`` hooks (from ``start``: "batch_end", or
        "validation" to begin after the validation): logging, validation, plateau schedulers,
        counters. True when the epoch ends with this batch."""
        trainer = self.trainer
        connector = trainer._logger_connector
        if start == "batch_end":
            connector.train_step_end(accumulating)
            self._check_time()
            if self._should_check_val(batch_idx, is_last):
                if not accumulating:
                    call_module_hook(trainer, "on_validation_model_zero_grad")
                self.position = ("validation", batch_idx, is_last, accumulating)
                self._run_validation()
                connector.results = connector.train_results
        if not accumulating:
            update_lr_schedulers(trainer, "step", plateau=True)
            self.progress.batches_that_stepped += 1
        self.position = ("between",)
        stop = self._max_steps_reached() or (trainer.should_stop and self.can_stop_early())
        if not (is_last or stop or accumulating):
            trainer._at_loop_boundary()
        return is_last or stop

    def _run_tail(self, tail) -> None:
        """Resuming from a checkpoint saved inside a batch or the epoch end: finish that
        batch or epoch end as the interrupted run would have (issue 6)."""
        if tail is None or tail[0] == "between":
            return
        self.trainer._logger_connector.results = self.trainer._logger_connector.train_results
        if tail[0] == "epoch_end":
            self._finish_epoch(bool(tail[1]))
            return
        _, batch_idx, is_last, accumulating = tail
        if self._finish_batch(int(batch_idx), bool(is_last), bool(accumulating), tail[0]):
            self._end_epoch(bool(is_last))

    def _run_validation(self) -> None:
        trainer = self.trainer
        trainer.stage = "validating"
        try:
            self.val_loop.run()
        finally:
            trainer.stage = "fitting"

    def _end_epoch(self, reached_end: bool) -> None:
        """Lightning's fit-loop epoch end: metric-monitoring callbacks see the module's
        ``on_train_epoch_end`` logs."""
        trainer, connector = self.trainer, self.trainer._logger_connector
        self.position = ("epoch_end", reached_end)
        connector.update_train_epoch_metrics()
        call_callback_hooks(trainer, "on_train_epoch_end", monitoring=False)
        call_module_hook(trainer, "on_train_epoch_end")
        connector.update_train_epoch_metrics()
        call_callback_hooks(trainer, "on_train_epoch_end", monitoring=True)
        self._finish_epoch(reached_end)

    def _finish_epoch(self, reached_end: bool) -> None:
        """The epoch end after its hooks: epoch metrics to the loggers, plateau schedulers,
        the epoch counter."""
        self.trainer._logger_connector.train_epoch_end()
        if reached_end:  # ReduceLROnPlateau sees this epoch's validation metrics
            update_lr_schedulers(self.trainer, "epoch", plateau=True)
        self.progress.current_epoch += 1
        self.progress.batch_idx = 0
        self.position = ("between",)
        self._check_time()
        if not self.done():
            self.trainer._at_loop_boundary()
