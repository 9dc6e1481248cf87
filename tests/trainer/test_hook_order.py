"""Hook order: a recording module and a recording callback, compared with Lightning 2.x's
documented order written out literally (fit with a sanity check, mid-epoch validation and
gradient accumulation; validate; test; predict; manual optimization)."""

from __future__ import annotations

from ember.callbacks import Callback
from ember.optim import SGD
from ember.optim.lr_scheduler import StepLR
from tests.trainer.helpers import QUIET, ToyModel, loader

MODULE_HOOKS = (
    "configure_callbacks",
    "prepare_data",
    "setup",
    "configure_model",
    "configure_optimizers",
    "on_fit_start",
    "on_fit_end",
    "train_dataloader",
    "val_dataloader",
    "test_dataloader",
    "predict_dataloader",
    "on_train_start",
    "on_train_end",
    "on_train_epoch_start",
    "on_train_epoch_end",
    "on_train_batch_start",
    "on_train_batch_end",
    "on_before_batch_transfer",
    "transfer_batch_to_device",
    "on_after_batch_transfer",
    "training_step",
    "on_before_zero_grad",
    "optimizer_zero_grad",
    "on_before_backward",
    "backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "configure_gradient_clipping",
    "optimizer_step",
    "lr_scheduler_step",
    "on_validation_model_zero_grad",
    "on_validation_model_eval",
    "on_validation_model_train",
    "on_validation_start",
    "on_validation_end",
    "on_validation_epoch_start",
    "on_validation_epoch_end",
    "on_validation_batch_start",
    "on_validation_batch_end",
    "validation_step",
    "on_test_model_eval",
    "on_test_model_train",
    "on_test_start",
    "on_test_end",
    "on_test_epoch_start",
    "on_test_epoch_end",
    "on_test_batch_start",
    "on_test_batch_end",
    "test_step",
    "on_predict_model_eval",
    "on_predict_start",
    "on_predict_end",
    "on_predict_epoch_start",
    "on_predict_epoch_end",
    "on_predict_batch_start",
    "on_predict_batch_end",
    "predict_step",
    "teardown",
)
CALLBACK_HOOKS = tuple(
    n for n in dir(Callback) if n.startswith("on_") or n in ("setup", "teardown")
)
# the batch index is the first int among these hooks' arguments
_INDEXED = {
    "on_train_batch_start": 1,
    "on_train_batch_end": 2,
    "training_step": 1,
    "validation_step": 1,
    "test_step": 1,
    "predict_step": 1,
    "on_validation_batch_start": 1,
    "on_validation_batch_end": 2,
    "on_test_batch_start": 1,
    "on_test_batch_end": 2,
    "on_predict_batch_start": 1,
    "on_predict_batch_end": 2,
    "optimizer_step": 1,
    "optimizer_zero_grad": 1,
}


def _label(prefix: str, name: str, args: tuple, kwargs: dict) -> str:
    if name in ("setup", "teardown"):
        return f"{prefix}{name}({kwargs.get('stage', args[-1] if args else '')})"
    if name in _INDEXED:
        return f"{prefix}{name}({args[_INDEXED[name]]})"
    return prefix + name


def _module_hook(name):
    def hook(self, *args, **kwargs):
        self.calls.append(_label("", name, args, kwargs))
        return getattr(super(RecordingModule, self), name)(*args, **kwargs)

    hook.__name__ = name
    return hook


class RecordingModule(ToyModel):
    def __init__(self, calls, scheduler=False):
        super().__init__()
        self.calls = calls
        self.scheduler = scheduler

    def train_dataloader(self):
        self.calls.append("train_dataloader")
        return loader(16, 4)

    def val_dataloader(self):
        self.calls.append("val_dataloader")
        return loader(8, 4)

    def test_dataloader(self):
        self.calls.append("test_dataloader")
        return loader(8, 4)

    def predict_dataloader(self):
        self.calls.append("predict_dataloader")
        return [b[0] for b in loader(8, 4)]

    def configure_optimizers(self):
        self.calls.append("configure_optimizers")
        opt = SGD(self.parameters(), lr=0.1)
        if not self.scheduler:
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": StepLR(opt, 1), "interval": "step"}}


for _name in MODULE_HOOKS:
    if _name not in (
        "train_dataloader",
        "val_dataloader",
        "test_dataloader",
        "predict_dataloader",
        "configure_optimizers",
    ):
        setattr(RecordingModule, _name, _module_hook(_name))


def _callback_hook(name):
    def hook(self, trainer, module, *args, **kwargs):
        self.calls.append(_label("Callback.", name, args, kwargs))

    hook.__name__ = name
    return hook


class RecordingCallback(Callback):
    def __init__(self, calls):
        self.calls = calls


for _name in CALLBACK_HOOKS:
    setattr(RecordingCallback, _name, _callback_hook(_name))


def run_recorded(fn: str = "fit", **trainer_args):
    from ember.trainer import Trainer

    calls: list[str] = []
    model = RecordingModule(calls, scheduler=trainer_args.pop("scheduler", False))
    settings = {**QUIET, **trainer_args}
    trainer = Trainer(callbacks=[RecordingCallback(calls)], **settings)
    getattr(trainer, fn)(model)
    return calls, trainer


def test_fit_with_sanity_check_mid_epoch_validation_and_accumulation():
    """4 training batches, accumulate 2, validation every half epoch, a 1-batch sanity check
    and a per-step scheduler. Lightning 2.x's order (tests/tests_pytorch/models/test_hooks.py),
    listing each hook when it starts."""
    calls, trainer = run_recorded(
        "fit",
        max_epochs=1,
        limit_train_batches=4,
        limit_val_batches=1,
        num_sanity_val_steps=1,
        val_check_interval=0.5,
        accumulate_grad_batches=2,
        scheduler=True,
    )
    expected = [
        "configure_callbacks",
        "prepare_data",
        "Callback.setup(fit)",
        "setup(fit)",
        "configure_model",
        "configure_optimizers",
        "Callback.on_fit_start",
        "on_fit_start",
        # sanity check: one validation batch
        "Callback.on_sanity_check_start",
        "val_dataloader",
        "on_validation_model_eval",
        "Callback.on_validation_start",
        "on_validation_start",
        "Callback.on_validation_epoch_start",
        "on_validation_epoch_start",
        "on_before_batch_transfer",
        "transfer_batch_to_device",
        "on_after_batch_transfer",
        "Callback.on_validation_batch_start(0)",
        "on_validation_batch_start(0)",
        "validation_step(0)",
        "Callback.on_validation_batch_end(0)",
        "on_validation_batch_end(0)",
        "Callback.on_validation_epoch_end",
        "on_validation_epoch_end",
        "Callback.on_validation_end",
        "on_validation_end",
        "on_validation_model_train",
        "Callback.on_sanity_check_end",
        # training
        "train_dataloader",
        "Callback.on_train_start",
        "on_train_start",
        "Callback.on_train_epoch_start",
        "on_train_epoch_start",
        # batch 0: first of the accumulation window: zero_grad, backward, no step
        "on_before_batch_transfer",
        "transfer_batch_to_device",
        "on_after_batch_transfer",
        "Callback.on_train_batch_start(0)",
        "on_train_batch_start(0)",
        "training_step(0)",
        "Callback.on_before_zero_grad",
        "on_before_zero_grad",
        "optimizer_zero_grad(0)",
        "Callback.on_before_backward",
        "on_before_backward",
        "backward",
        "Callback.on_after_backward",
        "on_after_backward",
        "Callback.on_train_batch_end(0)",
        "on_train_batch_end(0)",
        # batch 1: last of the window: the optimizer step runs the closure
        "on_before_batch_transfer",
        "transfer_batch_to_device",
        "on_after_batch_transfer",
        "Callback.on_train_batch_start(1)",
        "on_train_batch_start(1)",
        "optimizer_step(1)",
        "training_step(1)",
        "Callback.on_before_backward",
        "on_before_backward",
        "backward",
        "Callback.on_after_backward",
        "on_after_backward",
        "Callback.on_before_optimizer_step",
        "on_before_optimizer_step",
        "configure_gradient_clipping",
        "lr_scheduler_step",
        "Callback.on_train_batch_end(1)",
        "on_train_batch_end(1)",
        # validation at half the epoch
        "on_validation_model_zero_grad",
        "on_validation_model_eval",
        "Callback.on_validation_start",
        "on_validation_start",
        "Callback.on_validation_epoch_start",
        "on_validation_epoch_start",
        "on_before_batch_transfer",
        "transfer_batch_to_device",
        "on_after_batch_transfer",
        "Callback.on_validation_batch_start(0)",
        "on_validation_batch_start(0)",
        "validation_step(0)",
        "Callback.on_validation_batch_end(0)",
        "on_validation_batch_end(0)",
        "Callback.on_validation_epoch_end",
        "on_validation_epoch_end",
        "Callback.on_validation_end",
        "on_validation_end",
        "on_validation_model_train",
        # batch 2
        "on_before_batch_transfer",
        "transfer_batch_to_device",
        "on_after_batch_transfer",
        "Callback.on_train_batch_start(2)",
        "on_train_batch_start(2)",
        "training_step(2)",
        "Callback.on_before_zero_grad",
        "on_before_zero_grad",
        "optimizer_zero_grad(2)",
        "Callback.on_before_backward",
        "on_before_backward",
        "backward",
        "Callback.on_after_backward",
        "on_after_backward",
        "Callback.on_train_batch_end(2)",
        "on_train_batch_end(2)",
        # batch 3
        "on_before_batch_transfer",
        "transfer_batch_to_device",
        "on_after_batch_transfer",
        "Callback.on_train_batch_start(3)",
        "on_train_batch_start(3)",
        "optimizer_step(3)",
        "training_step(3)",
        "Callback.on_before_backward",
        "on_before_backward",
        "backward",
        "Callback.on_after_backward",
        "on_after_backward",
        "Callback.on_before_optimizer_step",
        "on_before_optimizer_step",
        "configure_gradient_clipping",
        "lr_scheduler_step",
        "Callback.on_train_batch_end(3)",
        "on_train_batch_end(3)",
        # validation at the end of the epoch, inside it (before on_train_epoch_end)
        "on_validation_model_zero_grad",
        "on_validation_model_eval",
        "Callback.on_validation_start",
        "on_validation_start",
        "Callback.on_validation_epoch_start",
        "on_validation_epoch_start",
        "on_before_batch_transfer",
        "transfer_batch_to_device",
        "on_after_batch_transfer",
        "Callback.on_validation_batch_start(0)",
        "on_validation_batch_start(0)",
        "validation_step(0)",
        "Callback.on_validation_batch_end(0)",
        "on_validation_batch_end(0)",
        "Callback.on_validation_epoch_end",
        "on_validation_epoch_end",
        "Callback.on_validation_end",
        "on_validation_end",
        "on_validation_model_train",
        "Callback.on_train_epoch_end",
        "on_train_epoch_end",
        "Callback.on_train_end",
        "on_train_end",
        "Callback.on_fit_end",
        "on_fit_end",
        "Callback.teardown(fit)",
        "teardown(fit)",
    ]
    assert calls == expected
    assert trainer.global_step == 2 and trainer.batches_seen == 4
    assert trainer.current_epoch == 1


def test_validate_order():
    calls, _ = run_recorded("validate", limit_val_batches=1)
    assert calls == [
        "configure_callbacks",
        "prepare_data",
        "Callback.setup(validate)",
        "setup(validate)",
        "configure_model",
        "val_dataloader",
        "on_validation_model_eval",
        "Callback.on_validation_start",
        "on_validation_start",
        "Callback.on_validation_epoch_start",
        "on_validation_epoch_start",
        "on_before_batch_transfer",
        "transfer_batch_to_device",
        "on_after_batch_transfer",
        "Callback.on_validation_batch_start(0)",
        "on_validation_batch_start(0)",
        "validation_step(0)",
        "Callback.on_validation_batch_end(0)",
        "on_validation_batch_end(0)",
        "Callback.on_validation_epoch_end",
        "on_validation_epoch_end",
        "Callback.on_validation_end",
        "on_validation_end",
        "on_validation_model_train",
        "Callback.teardown(validate)",
        "teardown(validate)",
    ]


def test_test_order():
    calls, _ = run_recorded(
        "test",
        limit_test_batches=1,
    )
    assert calls == [
        "configure_callbacks",
        "prepare_data",
        "Callback.setup(test)",
        "setup(test)",
        "configure_model",
        "test_dataloader",
        "on_test_model_eval",
        "Callback.on_test_start",
        "on_test_start",
        "Callback.on_test_epoch_start",
        "on_test_epoch_start",
        "on_before_batch_transfer",
        "transfer_batch_to_device",
        "on_after_batch_transfer",
        "Callback.on_test_batch_start(0)",
        "on_test_batch_start(0)",
        "test_step(0)",
        "Callback.on_test_batch_end(0)",
        "on_test_batch_end(0)",
        "Callback.on_test_epoch_end",
        "on_test_epoch_end",
        "Callback.on_test_end",
        "on_test_end",
        "on_test_model_train",
        "Callback.teardown(test)",
        "teardown(test)",
    ]


def test_predict_order():
    calls, _ = run_recorded("predict", limit_predict_batches=1)
    assert calls == [
        "configure_callbacks",
        "prepare_data",
        "Callback.setup(predict)",
        "setup(predict)",
        "configure_model",
        "predict_dataloader",
        "on_predict_model_eval",
        "Callback.on_predict_start",
        "on_predict_start",
        "Callback.on_predict_epoch_start",
        "on_predict_epoch_start",
        "on_before_batch_transfer",
        "transfer_batch_to_device",
        "on_after_batch_transfer",
        "Callback.on_predict_batch_start(0)",
        "on_predict_batch_start(0)",
        "predict_step(0)",
        "Callback.on_predict_batch_end(0)",
        "on_predict_batch_end(0)",
        "Callback.on_predict_epoch_end",
        "on_predict_epoch_end",
        "Callback.on_predict_end",
        "on_predict_end",
        "Callback.teardown(predict)",
        "teardown(predict)",
    ]


class _ManualModule(RecordingModule):
    def __init__(self, calls):
        super().__init__(calls)
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        self.calls.append(f"training_step({batch_idx})")
        opt = self.optimizers()
        x, y = batch
        from ember.nn import functional as F

        loss = F.cross_entropy(self(x), y)
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step(closure=lambda: self.calls.append("closure"))
        return loss


def test_manual_optimization_order():
    """Lightning's manual-optimization batch: manual_backward runs the backward hooks;
    opt.step() runs the closure then on_before_optimizer_step; no zero_grad or clipping
    hooks from the trainer."""
    from ember.trainer import Trainer

    calls: list[str] = []
    model = _ManualModule(calls)
    trainer = Trainer(
        callbacks=[RecordingCallback(calls)],
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=0,
        **QUIET,
    )
    trainer.fit(model)
    start = calls.index("Callback.on_train_batch_start(0)")
    assert calls[start : calls.index("Callback.on_train_epoch_end")] == [
        "Callback.on_train_batch_start(0)",
        "on_train_batch_start(0)",
        "training_step(0)",
        "Callback.on_before_backward",
        "on_before_backward",
        "backward",
        "Callback.on_after_backward",
        "on_after_backward",
        "closure",
        "Callback.on_before_optimizer_step",
        "on_before_optimizer_step",
        "Callback.on_train_batch_end(0)",
        "on_train_batch_end(0)",
    ]
    assert trainer.global_step == 1
    # limit_val_batches=0: no sanity check, no validation, val_dataloader never asked for
    assert "val_dataloader" not in calls and "Callback.on_sanity_check_start" not in calls


def test_validation_after_every_epoch_and_skipped_epochs():
    calls, trainer = run_recorded(
        "fit",
        max_epochs=4,
        limit_train_batches=2,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=2,
    )
    epochs_with_val = []
    epoch = 0
    for c in calls:
        if c == "Callback.on_train_epoch_end":
            epoch += 1
        if c == "validation_step(0)":
            epochs_with_val.append(epoch)
    assert epochs_with_val == [1, 3]
    # without a sanity check, the validation data is asked for after the training data
    assert calls.index("val_dataloader") == calls.index("train_dataloader") + 1
