"""TrainingModule and DataModule: hyperparameters, configure_optimizers forms and scheduler
stepping, step outputs, eval mode and no_grad in validation, properties, data hooks."""

from __future__ import annotations

import numpy as np
import pytest

import ember
import ember.nn as nn
from ember.data import DataLoader, TensorDataset
from ember.optim import SGD, Adam
from ember.optim.lr_scheduler import ReduceLROnPlateau, StepLR
from ember.trainer import AttributeDict, DataModule, Trainer, TrainingModule
from tests.trainer.helpers import QUIET, ToyModel, loader, toy_data, weights


# ---------------------------------------------------------------- hyperparameters
class WithArgs(TrainingModule):
    def __init__(self, hidden: int, lr: float = 0.1, name="net", *args, **kwargs):
        super().__init__()
        self.save_hyperparameters()


class Child(WithArgs):
    def __init__(self, hidden: int = 8, dropout: float = 0.5, layer=None):
        super().__init__(hidden, lr=0.01, extra=True)


def test_save_hyperparameters_captures_init_args():
    m = WithArgs(16, name="x", depth=3)
    assert m.hparams == {"hidden": 16, "lr": 0.1, "name": "x", "depth": 3}
    assert isinstance(m.hparams, AttributeDict) and m.hparams.hidden == 16
    m.hparams.lr = 1.0
    assert m.hparams["lr"] == 1.0 and m.hparams_initial["lr"] == 0.1


def test_save_hyperparameters_walks_the_init_chain_and_skips_non_json():
    with pytest.warns(UserWarning, match=r"skipped \['layer'\] of Child"):
        m = Child(layer=nn.Linear(2, 2))
    # the subclass's own arguments win; the parent's (passed down) are kept too
    assert m.hparams == {"hidden": 8, "lr": 0.01, "name": "net", "extra": True, "dropout": 0.5}


def test_save_hyperparameters_names_ignore_and_dict():
    class Picky(TrainingModule):
        def __init__(self, a=1, b=2, c=3, module=None):
            super().__init__()
            self.save_hyperparameters("a", "c")

    assert Picky().hparams == {"a": 1, "c": 3}

    class Ignoring(TrainingModule):
        def __init__(self, a=1, module=None):
            super().__init__()
            self.save_hyperparameters(ignore=["module"])

    assert Ignoring(module=nn.Linear(1, 1)).hparams == {"a": 1}

    class FromDict(TrainingModule):
        def __init__(self):
            super().__init__()
            self.save_hyperparameters({"width": 4, "tags": ["x"]})

    assert FromDict().hparams == {"width": 4, "tags": ["x"]}

    class Wrong(TrainingModule):
        def __init__(self, a=1):
            super().__init__()
            self.save_hyperparameters("b")

    with pytest.raises(ValueError, match=r"\['b'\] are not arguments of Wrong.__init__"):
        Wrong()


def test_datamodule_hyperparameters_go_to_the_logger():
    from tests.trainer.helpers import RecordingLogger

    class Data(DataModule):
        def __init__(self, batch_size: int = 4):
            super().__init__()
            self.save_hyperparameters()

        def train_dataloader(self):
            return loader(8, self.hparams.batch_size)

    logger = RecordingLogger()
    Trainer(logger=logger, max_epochs=1, enable_progress_bar=False, enable_model_summary=False).fit(
        ToyModel(lr=0.2), datamodule=Data()
    )
    assert logger.hparams == [{"lr": 0.2, "batch_size": 4}]


# ---------------------------------------------------------------- properties
def test_properties_inside_hooks():
    seen = []

    class Props(ToyModel):
        def on_train_batch_start(self, batch, batch_idx):
            seen.append(
                (self.current_epoch, self.global_step, str(self.device), self.trainer.batches_seen)
            )

    t = Trainer(max_epochs=2, accumulate_grad_batches=2, **QUIET)
    t.fit(Props(), loader(16, 4))
    assert seen == [
        (0, 0, "cpu", 0),
        (0, 0, "cpu", 1),
        (0, 1, "cpu", 2),
        (0, 1, "cpu", 3),
        (1, 2, "cpu", 4),
        (1, 2, "cpu", 5),
        (1, 3, "cpu", 6),
        (1, 3, "cpu", 7),
    ]
    assert (t.current_epoch, t.global_step, t.batches_seen) == (2, 4, 8)


def test_trainer_property_without_a_trainer():
    with pytest.raises(RuntimeError, match="not attached to a Trainer"):
        _ = ToyModel().trainer
    m = ToyModel()
    assert m.current_epoch == 0 and m.global_step == 0 and m.logger is None


# ---------------------------------------------------------- configure_optimizers
def lrs_after(conf_fn, **trainer_args):
    """The learning rate of the first param group after a fit over 4 batches an epoch."""

    class M(ToyModel):
        def configure_optimizers(self):
            return conf_fn(self)

    m = M()
    t = Trainer(**{**QUIET, "max_epochs": 3, **trainer_args})
    t.fit(m, loader(16, 4), loader(8, 4))
    return t.optimizers[0].param_groups[0]["lr"], t


def test_optimizer_forms():
    lr, t = lrs_after(lambda m: SGD(m.parameters(), lr=0.1))
    assert lr == 0.1 and t.lr_scheduler_configs == []
    lr, t = lrs_after(lambda m: [Adam(m.parameters(), lr=0.01)])
    assert isinstance(t.optimizers[0], Adam) and t.global_step == 12


def test_pair_of_lists_steps_the_scheduler_every_epoch():
    def conf(m):
        opt = SGD(m.parameters(), lr=0.1)
        return [opt], [StepLR(opt, step_size=1, gamma=0.5)]

    lr, t = lrs_after(conf)
    assert lr == pytest.approx(0.1 * 0.5**3)
    config = t.lr_scheduler_configs[0]
    assert (config.interval, config.frequency, config.monitor) == ("epoch", 1, None)


def test_scheduler_dict_with_step_interval_and_frequency():
    def conf(m):
        opt = SGD(m.parameters(), lr=0.1)
        sched = StepLR(opt, step_size=1, gamma=0.5)
        return {
            "optimizer": opt,
            "lr_scheduler": {
                "scheduler": sched,
                "interval": "step",
                "frequency": 3,
                "name": "my_lr",
            },
        }

    lr, t = lrs_after(conf)  # 12 optimizer steps -> 4 scheduler steps
    assert lr == pytest.approx(0.1 * 0.5**4)
    assert t.lr_scheduler_configs[0].name == "my_lr"


def test_step_interval_counts_optimizer_steps_under_accumulation():
    def conf(m):
        opt = SGD(m.parameters(), lr=0.1)
        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": StepLR(opt, 1, 0.5), "interval": "step", "frequency": 2},
        }

    lr, t = lrs_after(conf, accumulate_grad_batches=2)  # 6 optimizer steps
    assert t.global_step == 6 and lr == pytest.approx(0.1 * 0.5**3)


def test_reduce_lr_on_plateau_steps_with_the_monitored_metric():
    class Flat(ToyModel):
        def validation_step(self, batch, batch_idx):
            self.log("flat", 1.0)  # never improves

        def configure_optimizers(self):
            opt = SGD(self.parameters(), lr=0.1)
            return {
                "optimizer": opt,
                "lr_scheduler": {
                    "scheduler": ReduceLROnPlateau(opt, patience=0, factor=0.5),
                    "monitor": "flat",
                },
            }

    t = Trainer(max_epochs=3, **QUIET)
    t.fit(Flat(), loader(16, 4), loader(8, 4))
    # epoch 0 sets the best value, epochs 1 and 2 do not improve on it
    assert t.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.025)


def test_top_level_monitor_and_list_of_dicts():
    def conf(m):
        opt = SGD(m.parameters(), lr=0.1)
        return [{"optimizer": opt, "lr_scheduler": ReduceLROnPlateau(opt), "monitor": "val_loss"}]

    _, t = lrs_after(conf)
    assert t.lr_scheduler_configs[0].monitor == "val_loss"
    assert t.lr_scheduler_configs[0].reduce_on_plateau


def test_optimizers_and_lr_schedulers_accessors():
    got = {}

    class Access(ToyModel):
        def on_train_start(self):
            got["opt"] = self.optimizers()
            got["sched"] = self.lr_schedulers()

        def configure_optimizers(self):
            opt = SGD(self.parameters(), lr=0.1)
            return [opt], [StepLR(opt, 1)]

    t = Trainer(max_epochs=1, **QUIET)
    t.fit(Access(), loader(8, 4))
    assert got["opt"].optimizer is t.optimizers[0]
    assert got["opt"].param_groups is t.optimizers[0].param_groups
    assert got["sched"] is t.lr_scheduler_configs[0].scheduler


# -------------------------------------------------------------- step outputs
def test_training_step_returning_none_skips_the_batch():
    class Skip(ToyModel):
        def training_step(self, batch, batch_idx):
            return None

    m = Skip()
    before = weights(m)
    Trainer(max_epochs=2, **QUIET).fit(m, loader(8, 4))
    for a, b in zip(before, weights(m)):
        np.testing.assert_array_equal(a, b)


def test_training_step_dict_outputs_reach_on_train_batch_end():
    outs = []

    class DictOut(ToyModel):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            return {"loss": loss, "extra": loss * 2, "tag": "x"}

        def on_train_batch_end(self, outputs, batch, batch_idx):
            outs.append(outputs)

    Trainer(max_epochs=1, **QUIET).fit(DictOut(), loader(8, 4))
    assert len(outs) == 2 and set(outs[0]) == {"loss", "extra", "tag"}
    assert not outs[0]["loss"].requires_grad and not outs[0]["extra"].requires_grad
    assert outs[0]["extra"].item() == pytest.approx(2 * outs[0]["loss"].item())


def test_on_train_batch_start_minus_one_skips_the_rest_of_the_epoch():
    class Short(ToyModel):
        def on_train_batch_start(self, batch, batch_idx):
            return -1 if batch_idx == 2 else None

    t = Trainer(max_epochs=2, **QUIET)
    t.fit(Short(), loader(32, 4))
    assert t.batches_seen == 4 and t.current_epoch == 2


def test_training_step_without_batch_idx():
    class NoIdx(ToyModel):
        def training_step(self, batch):
            return super().training_step(batch, 0)

    t = Trainer(max_epochs=1, **QUIET)
    t.fit(NoIdx(), loader(8, 4))
    assert t.global_step == 2


# ------------------------------------------------------ validation conditions
def test_validation_runs_in_eval_mode_without_grad_and_restores_modes():
    seen = []

    class Modes(ToyModel):
        def __init__(self):
            super().__init__()
            self.frozen = nn.Dropout(0.5)
            self.frozen.eval()  # a submodule the user keeps in eval mode

        def training_step(self, batch, batch_idx):
            seen.append(("train", self.training, self.frozen.training, ember.is_grad_enabled()))
            return super().training_step(batch, batch_idx)

        def validation_step(self, batch, batch_idx):
            seen.append(("val", self.training, self.layer.training, ember.is_grad_enabled()))
            return super().validation_step(batch, batch_idx)

    m = Modes()
    Trainer(max_epochs=1, num_sanity_val_steps=1, **QUIET).fit(m, loader(8, 4), loader(4, 4))
    assert seen == [
        ("val", False, False, False),
        ("train", True, False, True),
        ("train", True, False, True),
        ("val", False, False, False),
    ]
    assert m.training and not m.frozen.training


# -------------------------------------------------------------------- data
class Data(DataModule):
    def __init__(self):
        super().__init__()
        self.events = []

    def prepare_data(self):
        self.events.append("prepare_data")

    def setup(self, stage):
        self.events.append(f"setup({stage})")

    def teardown(self, stage):
        self.events.append(f"teardown({stage})")

    def train_dataloader(self):
        return loader(8, 4)

    def val_dataloader(self):
        return loader(8, 4)

    def test_dataloader(self):
        return loader(4, 4)

    def predict_dataloader(self):
        return [x for x, _ in loader(4, 2)]

    def state_dict(self):
        return {"events": len(self.events)}


def test_datamodule_hooks_and_dataloaders():
    data = Data()
    t = Trainer(max_epochs=1, **QUIET)
    t.fit(ToyModel(), data)  # a DataModule passed positionally works too
    t.test(datamodule=data, verbose=False)
    preds = t.predict(datamodule=data)
    assert len(preds) == 2
    assert data.events == [
        "prepare_data",
        "setup(fit)",
        "teardown(fit)",
        "prepare_data",
        "setup(test)",
        "teardown(test)",
        "prepare_data",
        "setup(predict)",
        "teardown(predict)",
    ]
    assert data.trainer is t and data.state_dict() == {"events": 9}


def test_from_datasets():
    x, y = toy_data(12)
    ds = TensorDataset(x, y)
    dm = DataModule.from_datasets(train_dataset=ds, val_dataset=ds, batch_size=4)
    t = Trainer(max_epochs=1, **QUIET)
    t.fit(ToyModel(), datamodule=dm)
    assert t.num_training_batches == 3 and t.num_val_batches == [3]
    assert isinstance(t.train_dataloader, DataLoader)


def test_transfer_batch_to_device_override():
    class Wrapped:
        def __init__(self, x, y):
            self.x, self.y = x, y

    class Custom(ToyModel):
        def transfer_batch_to_device(self, batch, device, dataloader_idx):
            x, y = batch
            return Wrapped(x.to(device), y.to(device))

        def training_step(self, batch, batch_idx):
            assert isinstance(batch, Wrapped)
            return super().training_step((batch.x, batch.y), batch_idx)

    t = Trainer(max_epochs=1, **QUIET)
    t.fit(Custom(), loader(8, 4))
    assert t.global_step == 2


def test_estimated_stepping_batches_inside_configure_optimizers():
    got = []

    class Sized(ToyModel):
        def configure_optimizers(self):
            got.append(self.trainer.estimated_stepping_batches)
            return super().configure_optimizers()

    Trainer(max_epochs=3, accumulate_grad_batches=3, **QUIET).fit(Sized(), loader(32, 4))
    Trainer(max_steps=5, **QUIET).fit(Sized(), loader(32, 4))
    assert got == [9, 5]  # ceil(8 / 3) * 3 epochs; max_steps
