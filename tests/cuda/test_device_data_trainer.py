"""Pinned batches, non-blocking uploads on a side stream, and a Trainer fit on the device,
all on the fake CuPy (tests/cuda/fake_cupy.py); plus the inert pinning of a CPU-only machine."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import ember
from ember.data import DataLoader, TensorDataset
from ember.tensor import backend
from ember.tensor.random import get_cuda_rng_states
from ember.trainer import Trainer
from ember.trainer.checkpoint_state import rng_states, set_rng_states
from tests.trainer.helpers import QUIET, ToyModel, toy_data


def _loader(**kw):
    x, y = toy_data(16)
    return DataLoader(TensorDataset(x, y), batch_size=4, **kw)


@pytest.mark.parametrize("workers", [0, 2])
def test_pinned_batches_upload_on_the_side_stream(fake_cuda, workers):
    ctx = {"multiprocessing_context": "thread"} if workers else {}
    batches = list(_loader(pin_memory=True, num_workers=workers, **ctx))
    plain = list(_loader())
    assert len(batches) == 4
    for (x, y), (px, py) in zip(batches, plain):
        assert x.is_pinned() and y.is_pinned() and not px.is_pinned()
        dx = x.to("cuda", non_blocking=True)
        assert isinstance(dx.data, fake_cuda.ndarray)
        np.testing.assert_array_equal(dx.cpu().numpy(), px.numpy())
        np.testing.assert_array_equal(y.numpy(), py.numpy())
    stream = backend.copy_stream(0)
    assert stream.copies == 4  # one asynchronous copy per non-blocking upload
    assert len(fake_cuda.cuda.get_current_stream().waited) >= 4  # compute waits on the device
    # an unpinned source, or a blocking call, takes the plain synchronous path
    plain[0][0].to("cuda", non_blocking=True)
    batches[0][0].to("cuda")
    assert stream.copies == 4


def test_pin_memory_on_tensors_and_errors(fake_cuda):
    t = ember.arange(6.0).reshape(2, 3)
    p = t.pin_memory()
    assert p.is_pinned() and p.pin_memory() is p and p[1:].is_pinned()
    np.testing.assert_array_equal(p.numpy(), t.numpy())
    with pytest.raises(RuntimeError, match="cannot pin a tensor on cuda:0"):
        t.cuda().pin_memory()


def test_pin_memory_is_inert_without_cuda(monkeypatch):
    monkeypatch.setattr(backend, "_cupy", None)
    monkeypatch.setattr(backend, "_cupy_error", ImportError("No module named 'cupy'"))
    loader = _loader(pin_memory=True)
    with pytest.warns(UserWarning, match="CUDA is not available"):
        first = list(loader)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per loader
        second = list(loader)
    for (a, _), (b, _), (c, _) in zip(first, second, _loader()):
        assert not a.is_pinned() and a.device == "cpu"
        np.testing.assert_array_equal(a.numpy(), c.numpy())
        np.testing.assert_array_equal(b.numpy(), c.numpy())
    assert ember.ones(2).pin_memory().is_pinned() is False


class DeviceProbe(ToyModel):
    """Records where its batches and parameters live."""

    def __init__(self):
        super().__init__(lr=0.1)
        self.seen = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.seen.append((x.device, y.device, self.layer.weight.device))
        return super().training_step(batch, batch_idx)


def _fit(accelerator: str, pin: bool = False):
    ember.manual_seed(0)
    model = DeviceProbe()
    trainer = Trainer(**{**QUIET, "accelerator": accelerator}, max_epochs=2)
    trainer.fit(model, _loader(pin_memory=pin))
    return model, trainer


def test_trainer_on_cuda_moves_module_and_batches_and_matches_cpu(fake_cuda):
    cpu_model, _ = _fit("cpu")
    model, trainer = _fit("cuda", pin=True)
    assert trainer.strategy.root_device == "cuda:0"
    assert model.seen and all(s == ("cuda:0",) * 3 for s in model.seen)
    assert all(s == ("cpu",) * 3 for s in cpu_model.seen)
    for p, q in zip(cpu_model.parameters(), model.parameters()):
        assert q.device == "cuda:0"
        np.testing.assert_allclose(q.detach().cpu().numpy(), p.detach().numpy(), rtol=1e-5)
    assert backend.copy_stream(0).copies > 0  # pinned batches went up asynchronously


def test_checkpoint_rng_states_carry_the_device_generators(fake_cuda):
    ember.manual_seed(5)
    ember.rand(3, device="cuda")
    saved = rng_states()
    assert set(saved["cuda"]) == {"0"} and saved["cuda"]["0"].dtype == np.uint8
    expected = ember.rand(4, device="cuda").cpu().numpy()
    ember.manual_seed(99)
    set_rng_states(saved)
    np.testing.assert_array_equal(ember.rand(4, device="cuda").cpu().numpy(), expected)
    assert list(get_cuda_rng_states()) == [0]


@pytest.mark.parametrize("precision, low", [("16-mixed", "float16"), ("bf16-mixed", "bfloat16")])
def test_mixed_precision_on_cuda_matches_the_cpu_run(fake_cuda, precision, low):
    """The GPU recipe's setting: autocast keyed on the device type 'cuda' (the module's
    products run in the low dtype there), float32 parameters, and the GradScaler's state."""

    class LowProbe(DeviceProbe):
        def training_step(self, batch, batch_idx):
            x, _ = batch
            self.seen.append((x.device, self(x).dtype))
            return super().training_step(batch, batch_idx)

    runs = {}
    for accelerator in ("cpu", "cuda"):
        ember.manual_seed(0)
        model = LowProbe()
        trainer = Trainer(
            **{**QUIET, "accelerator": accelerator}, precision=precision, max_epochs=2
        )
        trainer.fit(model, _loader())
        runs[accelerator] = (model, trainer)
    (cpu_model, cpu_trainer), (model, trainer) = runs["cpu"], runs["cuda"]
    low = getattr(ember, low)
    lows = [s for s in model.seen if len(s) == 2]
    assert lows and all(s == ("cuda:0", low) for s in lows)
    assert all(p.dtype == ember.float32 and p.device == "cuda:0" for p in model.parameters())
    for p, q in zip(cpu_model.parameters(), model.parameters()):
        np.testing.assert_allclose(
            q.detach().cpu().numpy(), p.detach().numpy(), rtol=1e-4, atol=1e-5
        )
    assert trainer.global_step == cpu_trainer.global_step > 0
    scaler = trainer.precision_plugin.scaler
    if precision == "16-mixed":
        assert scaler.state_dict() == cpu_trainer.precision_plugin.scaler.state_dict()
    else:
        assert scaler is None
