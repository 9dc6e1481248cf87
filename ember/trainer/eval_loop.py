"""Validation, test and prediction loops: eval mode, no_grad, the batch and epoch hooks in
Lightning's order, and the epoch-level metrics (validation/test) or predictions (predict)."""

from __future__ import annotations

import random

import numpy as np

from ember.autograd.grad_mode import no_grad
from ember.trainer.data import iterate, limited_batches, request_loaders, step_args, transfer_batch
from ember.trainer.hooks import call_callback_hooks, call_hooks, call_module_hook
from ember.trainer.logging import ResultCollection, floats_in_place

_PREFIX = {"validate": "validation", "test": "test"}


class EvalLoop:
    """One evaluation stage ('validate' or 'test'); the validation loop is reused by fit."""

    def __init__(self, trainer, stage: str):
        self.trainer = trainer
        self.stage = stage
        self.prefix = _PREFIX[stage]
        self.results = ResultCollection(training=False)
        self.loaders: list | None = None
        self.num_batches: list = []
        self.logged_steps = 0  # logger step for metrics logged with on_step=True here

    def setup_data(self, explicit=None) -> None:
        """Ask for the dataloaders and count the batches each run takes."""
        trainer = self.trainer
        loaders = request_loaders(trainer, self.stage, explicit)
        if (
            loaders is not None
            and self.stage == "validate"
            and trainer.overfit_batches > 0
            and trainer.state.fn == "fit"
        ):  # overfit: validate on the training batches
            if trainer._fit_loop.train_loader is None:
                trainer._fit_loop.setup_data()
            self.loaders = [trainer._fit_loop.train_loader]
            self.num_batches = [trainer._fit_loop.num_training_batches]
            return
        if loaders is not None and trainer.use_distributed_sampler:
            loaders = [trainer.strategy.process_dataloader(dl, self.stage) for dl in loaders]
        self.loaders = loaders
        limit_name = "limit_val_batches" if self.stage == "validate" else "limit_test_batches"
        limit = getattr(trainer, limit_name)
        self.num_batches = [
            limited_batches(dl, limit, self.prefix, limit_name) for dl in (loaders or [])
        ]

    @property
    def has_data(self) -> bool:
        return bool(self.loaders) and sum(self.num_batches) > 0

    def run(self, max_batches: list | None = None) -> list[dict]:
        """Run over every dataloader; returns one dict of logged epoch metrics per
        dataloader (what ``Trainer.validate``/``test`` return)."""
        trainer = self.trainer
        counts = max_batches if max_batches is not None else self.num_batches
        if not self.loaders or sum(counts) == 0:
            return []
        module = trainer.lightning_module
        p = self.prefix
        connector = trainer._logger_connector
        previous = connector.results
        self.results.reset()
        connector.results = self.results
        multi = len(self.loaders) > 1
        step_fn = getattr(module, f"{p}_step")
        sync_buffers = getattr(trainer.strategy, "sync_buffers", None)
        if sync_buffers is not None:  # DDP: rank 0's BatchNorm statistics on every rank
            sync_buffers()
        call_module_hook(trainer, f"on_{p}_model_eval")
        try:
            with no_grad():
                call_hooks(trainer, f"on_{p}_start")
                call_hooks(trainer, f"on_{p}_epoch_start")
                for dl_idx, loader in enumerate(self.loaders):
                    dl_arg = dl_idx if multi else None
                    extra = (dl_idx,) if multi else ()
                    for batch_idx, batch, _ in iterate(loader, counts[dl_idx]):
                        batch = transfer_batch(trainer, batch, dl_idx)
                        self.results.begin_batch(batch, dl_arg)
                        call_hooks(trainer, f"on_{p}_batch_start", batch, batch_idx, *extra)
                        args = step_args(step_fn, f"{p}_step", batch, batch_idx, dl_arg)
                        out = call_module_hook(trainer, f"{p}_step", *args)
                        call_hooks(trainer, f"on_{p}_batch_end", out, batch, batch_idx, *extra)
                        connector.eval_step_end(self)
                self.results.begin_batch(None)
                call_hooks(trainer, f"on_{p}_epoch_end")
                per_loader = connector.eval_epoch_end(self, len(self.loaders))
                call_hooks(trainer, f"on_{p}_end")
        finally:
            connector.results = previous
        call_module_hook(trainer, f"on_{p}_model_train")
        return [floats_in_place(d) for d in per_loader]


def run_predict(trainer, loaders: list, num_batches: list, return_predictions: bool):
    """The prediction loop; returns the predictions (a list per dataloader when there are
    several), or None when ``return_predictions`` is False."""
    module = trainer.lightning_module
    multi = len(loaders) > 1
    predictions: list = [[] for _ in loaders]
    call_module_hook(trainer, "on_predict_model_eval")
    try:
        with no_grad():
            call_hooks(trainer, "on_predict_start")
            call_hooks(trainer, "on_predict_epoch_start")
            for dl_idx, loader in enumerate(loaders):
                dl_arg = dl_idx if multi else None
                extra = (dl_idx,) if multi else ()
                for batch_idx, batch, _ in iterate(loader, num_batches[dl_idx]):
                    batch = transfer_batch(trainer, batch, dl_idx)
                    call_hooks(trainer, "on_predict_batch_start", batch, batch_idx, *extra)
                    args = step_args(module.predict_step, "predict_step", batch, batch_idx, dl_arg)
                    out = call_module_hook(trainer, "predict_step", *args)
                    if return_predictions:
                        predictions[dl_idx].append(out)
                    call_hooks(trainer, "on_predict_batch_end", out, batch, batch_idx, *extra)
            call_hooks(trainer, "on_predict_epoch_end")
            call_hooks(trainer, "on_predict_end")
    finally:
        module._restore_modes()
    if not return_predictions:
        return None
    return predictions if multi else predictions[0]


def print_results(results: list[dict], stage: str) -> None:
    """A small table of the metrics validate/test return (Lightning prints one too)."""
    if not results or not any(results):
        return
    title = "Validate metric" if stage == "validate" else "Test metric"
    for i, metrics in enumerate(results):
        head = f"{title} (dataloader {i})" if len(results) > 1 else title
        width = max([len(head)] + [len(k) for k in metrics])
        line = "-" * (width + 24)
        rows = [line, f"{head:<{width}}    DataLoader {i}", line]
        rows += [f"{k:<{width}}    {v:.6g}" for k, v in sorted(metrics.items())]
        print("\n".join(rows + [line]))


def sanity_check(trainer, val_source) -> None:
    """A few validation batches before training, so a broken validation_step fails in
    seconds; its metrics are discarded and the RNG states are restored."""
    if trainer.num_sanity_val_steps == 0 or not trainer._validation_possible():
        return
    from ember.tensor.random import (
        get_cuda_rng_states,
        get_rng_state,
        set_cuda_rng_states,
        set_rng_state,
    )

    saved = (get_rng_state(), np.random.get_state(), random.getstate(), get_cuda_rng_states())
    trainer.state.stage = "sanity_checking"
    trainer._metrics.reset()
    try:
        call_callback_hooks(trainer, "on_sanity_check_start")
        loop = trainer._val_loop
        loop.setup_data(val_source)
        loop.run(max_batches=trainer.num_sanity_val_batches)
        call_callback_hooks(trainer, "on_sanity_check_end")
    finally:
        trainer._metrics.reset()
        set_rng_state(saved[0])
        np.random.set_state(saved[1])
        random.setstate(saved[2])
        set_cuda_rng_states(saved[3])
