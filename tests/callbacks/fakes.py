"""A stand-in Trainer for callback unit tests: the attributes CONTEXT.md lists, and a driver
that calls the hooks in Lightning's order for a small fit."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import ember
from ember.callbacks.callback import Callback
from ember.distributed.strategy import SingleDeviceStrategy
from ember.loggers import Logger


class RecordingLogger(Logger):
    """Remembers every log_metrics call as (step, metrics)."""

    def __init__(self):
        self.calls: list[tuple[int | None, dict]] = []

    def log_metrics(self, metrics, step=None):
        self.calls.append((step, dict(metrics)))

    def log_hyperparams(self, params, metrics=None):
        pass

    def values(self, name):
        return [(step, m[name]) for step, m in self.calls if name in m]


def fake_trainer(**overrides) -> SimpleNamespace:
    t = SimpleNamespace(
        current_epoch=0,
        global_step=0,
        batches_seen=0,
        num_training_batches=10,
        num_val_batches=[4],
        num_sanity_val_batches=[2],
        num_test_batches=[3],
        num_predict_batches=[3],
        max_epochs=2,
        max_steps=-1,
        callback_metrics={},
        logged_metrics={},
        progress_bar_metrics={},
        should_stop=False,
        is_global_zero=True,
        strategy=SingleDeviceStrategy(),
        log_dir=None,
        default_root_dir=".",
        loggers=[],
        logger=None,
        callbacks=[],
        optimizers=[],
        lr_scheduler_configs=[],
        lightning_module=None,
        module=None,
        stage="fitting",
        sanity_checking=False,
        training=True,
        estimated_stepping_batches=20,
        accumulate_grad_batches=1,
        enable_progress_bar=True,
        log_every_n_steps=1,
        max_time=None,
        world_size=1,
    )
    for k, v in overrides.items():
        setattr(t, k, v)
    return t


def run_fit(
    trainer,
    callbacks,
    module=None,
    *,
    epochs=None,
    loss_fn=None,
    val=True,
    sanity=False,
    step_fn=None,
    batch_fn=None,
):
    """Drive the fit hooks: sanity check, then per epoch the train batches (an optimizer step
    every accumulate_grad_batches batches) and a validation run, stopping on should_stop."""
    cbs = callbacks if isinstance(callbacks, list) else [callbacks]
    module = module if module is not None else SimpleNamespace(automatic_optimization=True)
    epochs = epochs if epochs is not None else trainer.max_epochs
    loss_fn = loss_fn or (lambda epoch, i: ember.tensor(1.0 / (1 + epoch * 10 + i)))
    batch_fn = batch_fn or (lambda i: (ember.zeros(8, 3), ember.zeros(8)))

    def call(name, *args):
        for cb in cbs:
            getattr(cb, name)(trainer, module, *args)

    def validate():
        call("on_validation_start")
        call("on_validation_epoch_start")
        counts = (
            trainer.num_sanity_val_batches if trainer.sanity_checking else (trainer.num_val_batches)
        )
        for i in range(sum(counts)):
            call("on_validation_batch_start", batch_fn(i), i)
            call("on_validation_batch_end", None, batch_fn(i), i)
        call("on_validation_epoch_end")
        call("on_validation_end")

    call("setup", "fit")
    call("on_fit_start")
    if sanity:
        trainer.sanity_checking = True
        call("on_sanity_check_start")
        validate()
        call("on_sanity_check_end")
        trainer.sanity_checking = False
    call("on_train_start")
    for epoch in range(epochs):
        trainer.current_epoch = epoch
        call("on_train_epoch_start")
        for i in range(trainer.num_training_batches):
            batch = batch_fn(i)
            call("on_train_batch_start", batch, i)
            trainer.batches_seen += 1
            acc = trainer.accumulate_grad_batches
            if (i + 1) % acc == 0 or i + 1 == trainer.num_training_batches:
                if step_fn is not None:
                    step_fn(trainer)
                trainer.global_step += 1
            call("on_train_batch_end", {"loss": loss_fn(epoch, i)}, batch, i)
            if trainer.should_stop:
                break
        if val:
            validate()
        call("on_train_epoch_end")
        if trainer.should_stop:
            break
    call("on_train_end")
    call("on_fit_end")
    call("teardown", "fit")
    return trainer


# the monitored values of the top-k scenarios, one per epoch
VALUES = [5, 3, 4, 1, 2]


def files(d) -> set:
    """Every file under ``d``, as paths relative to it."""
    out = set()
    for root, _, names in os.walk(d):
        out |= {os.path.relpath(os.path.join(root, n), d) for n in names}
    return out


def marker(path) -> dict:
    """The JSON marker a fake save_checkpoint wrote."""
    with open(path) as f:
        return json.load(f)


def top2_with_last(dirpath):
    """The ModelCheckpoint of the top-k scenarios: the 2 lowest val_loss, plus last.ckpt."""
    from ember.callbacks.model_checkpoint import ModelCheckpoint

    return ModelCheckpoint(
        dirpath=dirpath,
        filename="{epoch}-{step}-{val_loss:.3f}",
        monitor="val_loss",
        save_top_k=2,
        save_last=True,
    )


# ------------------------------------------------- ModelCheckpoint on the fake Trainer
def ckpt_trainer(tmp_path, *, write=True, **kw):
    """A fake Trainer (10 batches = 10 steps per epoch) whose ``save_checkpoint`` writes
    ``{"epoch", "step", "weights_only", "callbacks": {state_key: state}}`` as JSON."""
    kw.setdefault("num_training_batches", 10)
    t = fake_trainer(state=SimpleNamespace(fn="fit"), default_root_dir=str(tmp_path), **kw)
    t.saved = []

    def save_checkpoint(filepath, weights_only=False):
        t.saved.append(os.path.basename(filepath))
        if not write:
            return
        os.makedirs(os.path.dirname(filepath), exist_ok=True)
        states = {cb.state_key: cb.state_dict() for cb in t.callbacks}
        with open(filepath, "w") as f:
            json.dump(
                {
                    "epoch": t.current_epoch,
                    "step": t.global_step,
                    "weights_only": weights_only,
                    "callbacks": states,
                },
                f,
            )

    t.save_checkpoint = save_checkpoint
    return t


class Script(Callback):
    """Logs ``values[current_epoch]`` under ``key`` at each validation epoch end."""

    def __init__(self, key, values):
        self.key, self.values = key, values

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            trainer.callback_metrics[self.key] = float(self.values[trainer.current_epoch])


def fit(tmp_path, cb, values=None, key="val_loss", epochs=None, **kw):
    """A fake fit of ``len(values)`` epochs (``epochs`` without values) whose validation
    logs ``values[epoch]`` under ``key``."""
    trainer = ckpt_trainer(tmp_path, **kw)
    trainer.callbacks = [cb]
    cbs = [cb] if values is None else [Script(key, values), cb]
    run_fit(trainer, cbs, epochs=epochs or (len(values) if values else 2))
    return trainer
