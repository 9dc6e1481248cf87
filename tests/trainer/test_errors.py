"""Bad input gets a clear error naming the hook or key; Ctrl-C and other exceptions end a
run with on_exception, teardown and finalised loggers."""

from __future__ import annotations

import pytest

import ember
from ember.callbacks import Callback
from ember.optim import SGD
from ember.optim.lr_scheduler import ReduceLROnPlateau, StepLR
from ember.trainer import DataModule, Trainer
from tests.trainer.helpers import QUIET, RecordingLogger, ToyModel, loader


def fit(model, **kwargs):
    trainer = Trainer(max_epochs=1, **{**QUIET, **kwargs})
    trainer.fit(model, loader(8, 4), loader(8, 4))
    return trainer


def with_optimizers(conf_fn):
    class M(ToyModel):
        def configure_optimizers(self):
            return conf_fn(self)

    return M()


# ------------------------------------------------------------ configure_optimizers
@pytest.mark.parametrize(
    "conf, got",
    [
        (lambda m: "adam", "str"),
        (lambda m: 0.1, "float"),
        (lambda m: [SGD(m.parameters(), lr=0.1), "x"], "list"),
        (lambda m: (SGD(m.parameters(), lr=0.1), 3), "tuple"),
    ],
)
def test_configure_optimizers_returning_something_unusable(conf, got):
    with pytest.raises(TypeError, match=f"configure_optimizers returned {got}"):
        fit(with_optimizers(conf))


def test_configure_optimizers_dict_errors():
    with pytest.raises(TypeError, match="configure_optimizers.*without an 'optimizer' key"):
        fit(with_optimizers(lambda m: {"lr_scheduler": None}))
    with pytest.raises(TypeError, match="configure_optimizers.*unknown keys.*'lr'"):
        fit(with_optimizers(lambda m: {"optimizer": SGD(m.parameters(), lr=0.1), "lr": 1}))

    def bad_interval(m):
        opt = SGD(m.parameters(), lr=0.1)
        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": StepLR(opt, 1), "interval": "batch"},
        }

    with pytest.raises(ValueError, match="'interval' must be 'step' or 'epoch', got 'batch'"):
        fit(with_optimizers(bad_interval))

    def no_scheduler_key(m):
        return {"optimizer": SGD(m.parameters(), lr=0.1), "lr_scheduler": {"interval": "step"}}

    with pytest.raises(ValueError, match="must have the key 'scheduler'"):
        fit(with_optimizers(no_scheduler_key))


def test_scheduler_of_another_optimizer():
    def conf(m):
        other = SGD(m.parameters(), lr=0.1)
        return [SGD(m.parameters(), lr=0.1)], [StepLR(other, 1)]

    with pytest.raises(ValueError, match="optimizer that configure_optimizers did not return"):
        fit(with_optimizers(conf))


def test_reduce_lr_on_plateau_needs_a_monitor():
    def conf(m):
        opt = SGD(m.parameters(), lr=0.1)
        return {"optimizer": opt, "lr_scheduler": ReduceLROnPlateau(opt)}

    with pytest.raises(ValueError, match="ReduceLROnPlateau scheduler needs a 'monitor'"):
        fit(with_optimizers(conf))


def test_monitored_key_that_was_never_logged_lists_the_logged_keys():
    def conf(m):
        opt = SGD(m.parameters(), lr=0.1)
        return {"optimizer": opt, "lr_scheduler": ReduceLROnPlateau(opt), "monitor": "val_los"}

    with pytest.raises(ValueError) as info:
        fit(with_optimizers(conf))
    text = str(info.value)
    assert "'val_los'" in text and "never logged" in text
    assert "['train_loss', 'val_acc', 'val_loss']" in text


def test_several_optimizers_need_manual_optimization():
    conf = lambda m: [SGD(m.parameters(), lr=0.1), SGD(m.parameters(), lr=0.2)]  # noqa: E731
    with pytest.raises(ValueError, match="2 optimizers.*manual optimization"):
        fit(with_optimizers(conf))


def test_configure_optimizers_returning_none_warns_and_trains_nothing():
    model = with_optimizers(lambda m: None)
    before = model.layer.weight.detach().numpy().copy()
    with pytest.warns(UserWarning, match="configure_optimizers returned None"):
        fit(model)
    assert (model.layer.weight.detach().numpy() == before).all()


# ------------------------------------------------------------------ training_step
def step_returning(value_fn):
    class M(ToyModel):
        def training_step(self, batch, batch_idx):
            return value_fn(self, batch)

    return M()


def test_training_step_returning_a_non_scalar_names_the_hook_and_shape():
    def per_sample(m, batch):
        x, y = batch
        return ember.nn.functional.cross_entropy(m(x), y, reduction="none")

    with pytest.raises(ValueError, match=r"training_step returned a loss of shape \(4,\)"):
        fit(step_returning(per_sample))


def test_training_step_bad_returns():
    with pytest.raises(ValueError, match="training_step returned a dict without a 'loss' key"):
        fit(step_returning(lambda m, b: {"los": m(b[0]).sum()}))
    with pytest.raises(TypeError, match="training_step must return .* got str"):
        fit(step_returning(lambda m, b: "loss"))
    with pytest.raises(
        RuntimeError, match="training_step returned a loss that does not require grad"
    ):
        fit(step_returning(lambda m, b: m(b[0]).sum().detach()))


def test_optimizer_step_override_must_run_the_closure():
    class M(ToyModel):
        def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
            optimizer.step()

    with pytest.raises(RuntimeError, match="optimizer_step: the optimizer closure was not"):
        fit(M())


def test_manual_optimization_rejects_accumulation_and_clipping():
    class Manual(ToyModel):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False

    with pytest.raises(ValueError, match="accumulate_grad_batches is not supported with manual"):
        fit(Manual(), accumulate_grad_batches=2)
    with pytest.raises(ValueError, match="gradient_clip_val is not supported with manual"):
        fit(Manual(), gradient_clip_val=1.0)
    with pytest.raises(RuntimeError, match="manual_backward is for manual optimization"):
        fit(step_returning(lambda m, b: m.manual_backward(m(b[0]).sum())))


# ---------------------------------------------------------------------- arguments
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"precision": "8-mixed"}, r"precision='8-mixed'\) is not supported"),
        ({"precision": "fp16"}, "expected one of .*'16-mixed'"),
        ({"limit_train_batches": 1.5}, "limit_train_batches=1.5"),
        ({"limit_val_batches": -1}, "limit_val_batches=-1"),
        ({"gradient_clip_algorithm": "l2"}, "gradient_clip_algorithm='l2'"),
        ({"gradient_clip_val": -1.0}, "gradient_clip_val=-1.0"),
        ({"max_time": "1 hour"}, "max_time='1 hour'"),
        ({"fast_dev_run": -1}, "fast_dev_run=-1"),
        ({"devices": 2}, "devices=2"),
        ({"accelerator": "tpu"}, "accelerator='tpu'"),
        ({"strategy": "fsdp"}, "strategy='fsdp'"),
        ({"accumulate_grad_batches": 0}, "accumulate_grad_batches=0"),
        ({"check_val_every_n_epoch": 0}, "check_val_every_n_epoch=0"),
        ({"check_val_every_n_epoch": None, "val_check_interval": 0.5}, "must be an int"),
        ({"num_sanity_val_steps": -2}, "num_sanity_val_steps=-2"),
        ({"max_epochs": -5}, "max_epochs=-5"),
    ],
)
def test_bad_trainer_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Trainer(**{**QUIET, **kwargs})


def test_cuda_without_cupy_is_a_clear_error(monkeypatch):
    from ember.tensor import backend

    def no_cupy():
        raise RuntimeError("CUDA is not available: CuPy could not be imported (test)")

    monkeypatch.setattr(backend, "cupy_module", no_cupy)
    with pytest.raises(
        RuntimeError,
        match=r"Trainer\(accelerator='cuda'\): CUDA is not "
        "available",
    ):
        Trainer(**{**QUIET, "accelerator": "cuda"})


def test_data_errors():
    with pytest.raises(ValueError, match="Trainer.fit: no training data"):
        Trainer(**QUIET).fit(ToyModel())
    with pytest.raises(ValueError, match="Trainer.validate: no data"):
        Trainer(**QUIET).validate(ToyModel())
    with pytest.raises(ValueError, match="either dataloaders or a datamodule"):
        Trainer(**QUIET).fit(ToyModel(), loader(), datamodule=DataModule())
    with pytest.raises(ValueError, match="val_check_interval=20 is more than the 2 training"):
        Trainer(val_check_interval=20, **QUIET).fit(ToyModel(), loader(8, 4), loader(8, 4))
    with pytest.raises(ValueError, match="limit_train_batches=0.1 .* < 1 batch"):
        Trainer(limit_train_batches=0.1, **QUIET).fit(ToyModel(), loader(8, 4))
    with pytest.raises(TypeError, match="expected a TrainingModule, got Linear"):
        Trainer(**QUIET).fit(ember.nn.Linear(2, 2), loader())


def test_steps_that_are_not_defined():
    class NoVal(ToyModel):
        validation_step = ToyModel.__mro__[1].validation_step

    with pytest.raises(NotImplementedError, match="does not define validation_step"):
        Trainer(**QUIET).validate(NoVal(), loader())
    with pytest.warns(UserWarning, match="no validation_step"):
        Trainer(max_epochs=1, **QUIET).fit(NoVal(), loader(8, 4), loader(8, 4))


def test_several_val_dataloaders_need_dataloader_idx():
    with pytest.raises(TypeError, match="validation_step is run on several dataloaders"):
        Trainer(**QUIET).validate(ToyModel(), [loader(8, 4), loader(8, 4)])


def test_checkpoint_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such checkpoint file"):
        Trainer(**QUIET).fit(ToyModel(), loader(), ckpt_path=tmp_path / "x.ckpt")
    with pytest.raises(RuntimeError, match="no model is attached"):
        Trainer(**QUIET).save_checkpoint(tmp_path / "x.ckpt")


# ------------------------------------------------------------- interruptions
class Watcher(Callback):
    def __init__(self):
        self.exceptions: list = []
        self.teardown_stages: list = []

    def on_exception(self, trainer, module, exception):
        self.exceptions.append(exception)

    def teardown(self, trainer, module, stage):
        self.teardown_stages.append(stage)


class Interrupted(ToyModel):
    def __init__(self):
        super().__init__()
        self.error: BaseException = KeyboardInterrupt()
        self.teardowns: list = []

    def training_step(self, batch, batch_idx):
        if batch_idx == 2:
            raise self.error
        return super().training_step(batch, batch_idx)

    def teardown(self, stage):
        self.teardowns.append(stage)


class TrackedData(DataModule):
    def __init__(self):
        super().__init__()
        self.events: list = []

    def train_dataloader(self):
        return loader(32, 4)

    def teardown(self, stage):
        self.events.append(("teardown", stage))

    def on_exception(self, exception):
        self.events.append(("exception", type(exception).__name__))


def test_ctrl_c_ends_fit_gracefully(capsys):
    watcher, logger = Watcher(), RecordingLogger()
    model, data = Interrupted(), TrackedData()
    trainer = Trainer(
        callbacks=[watcher],
        logger=logger,
        max_epochs=5,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    assert trainer.fit(model, datamodule=data) is None  # returns, does not raise
    assert [type(e) for e in watcher.exceptions] == [KeyboardInterrupt]
    assert watcher.teardown_stages == ["fit"] and model.teardowns == ["fit"]
    assert data.events == [("exception", "KeyboardInterrupt"), ("teardown", "fit")]
    assert logger.status == ["interrupted"]
    assert trainer.interrupted and trainer.state.status == "interrupted"
    assert trainer.global_step == 2 and trainer.batches_seen == 2
    assert "KeyboardInterrupt" in capsys.readouterr().err
    # the trainer can be used again afterwards
    trainer.fit(ToyModel(), loader(8, 4))
    assert trainer.state.status == "finished" and not trainer.interrupted


def test_other_exceptions_propagate_after_the_same_cleanup():
    watcher, logger = Watcher(), RecordingLogger()
    model, data = Interrupted(), TrackedData()
    model.error = ValueError("boom")
    trainer = Trainer(
        callbacks=[watcher],
        logger=logger,
        max_epochs=5,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with pytest.raises(ValueError, match="boom"):
        trainer.fit(model, datamodule=data)
    assert [type(e) for e in watcher.exceptions] == [ValueError]
    assert watcher.teardown_stages == ["fit"] and model.teardowns == ["fit"]
    assert data.events == [("exception", "ValueError"), ("teardown", "fit")]
    assert logger.status == ["failed"]


def test_error_in_setup_does_not_run_teardown():
    class BadSetup(ToyModel):
        torn_down = False

        def setup(self, stage):
            raise OSError("no data here")

        def teardown(self, stage):
            BadSetup.torn_down = True

    watcher = Watcher()
    with pytest.raises(OSError, match="no data here"):
        Trainer(callbacks=[watcher], **QUIET).fit(BadSetup(), loader())
    assert not BadSetup.torn_down and watcher.teardown_stages == []
    assert [type(e) for e in watcher.exceptions] == [OSError]
