"""Trainer(precision=...): parsing, what each mode does to the module, the inputs and the
optimizer, the GradScaler in the step (unscaled before on_before_optimizer_step and
clipping; a skipped step advances neither global_step nor the step schedulers), manual
optimization, and exact resume with the scaler's state."""

from __future__ import annotations

import math

import numpy as np
import pytest

import ember
from ember.callbacks import Callback
from ember.optim import SGD, Adam
from ember.optim.lr_scheduler import ReduceLROnPlateau, StepLR
from ember.trainer import Trainer
from ember.trainer.precision import Precision, parse_precision
from tests.trainer.helpers import QUIET, ToyModel, loader


@pytest.mark.parametrize(
    "value, name",
    [
        (None, "32-true"), ("32", "32-true"), (32, "32-true"), ("32-true", "32-true"),
        ("16", "16-mixed"), (16, "16-mixed"), ("16-mixed", "16-mixed"), ("bf16", "bf16-mixed"),
        ("bf16-mixed", "bf16-mixed"), ("16-true", "16-true"), ("bf16-true", "bf16-true"),
        ("64", "64-true"), (64, "64-true"), ("64-true", "64-true"),
    ],
)  # fmt: skip
def test_precision_names(value, name):
    assert parse_precision(value) == name
    assert Trainer(precision=value, **QUIET).precision == name


@pytest.mark.parametrize("bad", ["8-mixed", "fp16", True, "transformer-engine"])
def test_bad_precision_is_a_clear_error(bad):
    with pytest.raises(ValueError, match=r"Trainer\(precision=.*\) is not supported; expected"):
        Trainer(precision=bad, **QUIET)


class Probe(ToyModel):
    """Records the dtypes seen inside training_step and the gradients seen before each step."""

    def __init__(self, lr=0.1, opt="sgd"):
        super().__init__(lr)
        self.opt, self.seen, self.grads = opt, [], []

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.seen.append((x.dtype, logits.dtype, ember.zeros(1).dtype))
        return ember.nn.functional.cross_entropy(logits, y)

    def on_before_optimizer_step(self, optimizer):
        self.grads.append(self.layer.weight.grad.data.astype(np.float64).copy())

    def configure_optimizers(self):
        if self.opt == "adam":
            return Adam(self.parameters(), lr=self.hparams.lr)
        return SGD(self.parameters(), lr=self.hparams.lr)


def _fit(precision, make=None, epochs=1, **kwargs):
    ember.manual_seed(0)
    model = make() if make is not None else Probe()
    trainer = Trainer(precision=precision, max_epochs=epochs, **QUIET, **kwargs)
    trainer.fit(model, loader(16, 4))
    return trainer, model


@pytest.mark.parametrize("precision, low", [("16-mixed", "float16"), ("bf16-mixed", "bfloat16")])
def test_mixed_keeps_float32_params_and_state_and_unscales_before_the_hooks(precision, low):
    ref_trainer, ref = _fit("32-true", lambda: Probe(opt="adam"))
    trainer, model = _fit(precision, lambda: Probe(opt="adam"))
    low = getattr(ember, low)
    assert all(s == (ember.float32, low, ember.float32) for s in model.seen)
    assert all(p.dtype == ember.float32 for p in model.parameters())
    for state in trainer.optimizers[0].state.values():
        assert all(v.dtype == ember.float32 for v in state.values() if hasattr(v, "dtype"))
    # the hooks see unscaled gradients, equal to float32's up to the low precision
    tol = 3e-2 if low is ember.bfloat16 else 3e-3
    np.testing.assert_allclose(model.grads[0], ref.grads[0], rtol=tol, atol=tol)
    assert trainer.global_step == ref_trainer.global_step == 4
    scaler = trainer.precision_plugin.scaler
    assert (scaler is not None) == (precision == "16-mixed")
    if scaler is not None:
        assert scaler.get_scale() == 65536.0


@pytest.mark.parametrize("precision, dtype", [("bf16-true", "bfloat16"), ("64-true", "float64")])
def test_true_precisions_cast_the_module_and_the_inputs(precision, dtype):
    trainer, model = _fit(precision, Probe)
    dtype = getattr(ember, dtype)
    assert all(p.dtype == dtype for p in model.parameters())
    assert all(s == (dtype, dtype, dtype) for s in model.seen)
    assert trainer.precision_plugin.scaler is None
    assert ember.get_default_dtype() == ember.float32  # restored after each step


def test_16_true_trains():
    trainer, model = _fit("16-true", lambda: Probe(lr=0.05))
    assert model.layer.weight.dtype == ember.float16 and trainer.global_step == 4
    assert np.isfinite(model.layer.weight.data.astype(np.float32)).all()


class InfAt(Probe):
    """Makes one gradient entry inf after the backward of the listed batches."""

    def __init__(self, bad_batches=(), **kwargs):
        super().__init__(**kwargs)
        self.bad, self.batch = {tuple(b) for b in bad_batches}, None

    def on_train_batch_start(self, batch, batch_idx):
        self.batch = (self.current_epoch, batch_idx)

    def on_after_backward(self):
        if self.batch in self.bad:
            self.layer.weight.grad.data[0, 0] = math.inf

    def configure_optimizers(self):
        opt = SGD(self.parameters(), lr=0.1)
        sched = StepLR(opt, step_size=1, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class Clip(Callback):
    def __init__(self):
        self.norms = []

    def on_before_optimizer_step(self, trainer, module, optimizer):
        self.norms.append(float(np.linalg.norm(module.layer.weight.grad.data)))


def test_skipped_step_advances_neither_global_step_nor_schedulers():
    trainer, model = _fit(
        "16-mixed", lambda: InfAt([(0, 1), (0, 2)]), callbacks=[Clip()], gradient_clip_val=0.5
    )
    weights = model.layer.weight
    # 4 batches, 2 skipped: 2 optimizer steps, 2 scheduler steps, the scale halved twice
    assert trainer.global_step == 2
    sched = trainer.lr_scheduler_configs[0].scheduler
    assert sched.last_epoch == 2
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**2)
    assert trainer.precision_plugin.scaler.get_scale() == 2.0**14
    assert np.isfinite(weights.data).all()
    # the skipped batches changed nothing: the same as a float32 run on batches 0 and 3
    ember.manual_seed(0)
    clean = InfAt()  # the same optimizer and StepLR, fed batches 0 and 3 only
    ref = Trainer(precision="32-true", max_epochs=1, gradient_clip_val=0.5, **QUIET)
    ref.fit(clean, [b for i, b in enumerate(loader(16, 4)) if i in (0, 3)])
    np.testing.assert_allclose(weights.data, clean.layer.weight.data, rtol=1e-3, atol=1e-3)


class PlateauInfAt(InfAt):
    """InfAt with a per-step ReduceLROnPlateau on the logged training loss."""

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        opt = SGD(self.parameters(), lr=0.1)
        sched = ReduceLROnPlateau(opt, patience=0, factor=0.5, threshold=10.0)
        config = {"scheduler": sched, "interval": "step", "monitor": "train_loss"}
        return {"optimizer": opt, "lr_scheduler": config}


class SaveAt(Callback):
    def __init__(self, path, batch_idx):
        self.path, self.batch_idx = path, batch_idx

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if batch_idx == self.batch_idx:
            trainer.save_checkpoint(self.path)


def test_resume_right_after_a_skipped_step_is_exact(tmp_path):
    """A checkpoint saved at the end of a skipped batch: the resumed run finishes that batch
    without stepping the per-step plateau scheduler, as the uninterrupted run did."""
    path = str(tmp_path / "skipped.ckpt")
    full, model = _fit("16-mixed", lambda: PlateauInfAt([(0, 1)]), callbacks=[SaveAt(path, 1)])
    ember.manual_seed(0)
    resumed_model = PlateauInfAt([(0, 1)])
    resumed = Trainer(precision="16-mixed", max_epochs=1, **QUIET)
    resumed.fit(resumed_model, loader(16, 4), ckpt_path=path)
    want = full.lr_scheduler_configs[0].scheduler.state_dict()
    got = resumed.lr_scheduler_configs[0].scheduler.state_dict()
    assert want["last_epoch"] == 3  # 4 batches, one skipped
    assert got == want
    assert resumed.global_step == full.global_step == 3
    np.testing.assert_array_equal(resumed_model.layer.weight.data, model.layer.weight.data)


def test_clipping_and_callbacks_see_unscaled_gradients():
    clip = Clip()
    _, model = _fit("16-mixed", lambda: InfAt(()), callbacks=[clip], gradient_clip_val=1e-3)
    assert 0 < clip.norms[0] < 10  # not 65536 times the gradient
    ref_clip = Clip()
    _fit("32-true", lambda: InfAt(()), callbacks=[ref_clip], gradient_clip_val=1e-3)
    np.testing.assert_allclose(clip.norms, ref_clip.norms, rtol=1e-2)


class Manual(Probe):
    def __init__(self):
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        opt.zero_grad()
        x, y = batch
        loss = ember.nn.functional.cross_entropy(self(x), y)
        self.manual_backward(loss)
        opt.step()
        return loss


def test_manual_optimization_scales_and_unscales():
    trainer, model = _fit("16-mixed", Manual)
    _, ref = _fit("32-true", Manual)
    assert trainer.global_step == 4 and trainer.precision_plugin.scaler.get_scale() == 65536.0
    np.testing.assert_allclose(model.grads[0], ref.grads[0], rtol=3e-3, atol=3e-3)
    np.testing.assert_allclose(model.layer.weight.data, ref.layer.weight.data, rtol=1e-2, atol=1e-2)


def test_precision_plugin_on_its_own():
    plugin = Precision("bf16-mixed")
    assert plugin.active and plugin.mixed and plugin.scaler is None
    assert plugin.convert_input((ember.ones(2),))[0].dtype == ember.float32
    true = Precision("16-true")
    x, i = true.convert_input({"x": ember.ones(2), "i": ember.tensor([1])}).values()
    assert x.dtype == ember.float16 and i.dtype == ember.int64
    assert not Precision("32").active
