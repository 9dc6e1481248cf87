"""On a real GPU (marked ``cuda``; skipped without CuPy or a device): every registry op's
forward and gradients against the CPU, a training step, checkpoints across devices, the device
RNG, pinned uploads and the NCCL path with world size 1. The fake-CuPy twins of these tests run
in the default suite (tests/cuda/test_device_*.py)."""

from __future__ import annotations

import numpy as np
import pytest

import ember
import ember.nn.functional as F
from tests.cuda import sweep
from tests.cuda.test_device_fake import OPTIMIZERS, TinyNet, _rand, _train_step

pytestmark = pytest.mark.cuda


@pytest.fixture(autouse=True)
def _gpu(real_cuda):
    from ember.tensor import random as ember_random

    ember_random._device_generators.clear()
    ember.set_default_device(None)  # these tests say where each tensor goes
    ember.manual_seed(0)
    yield real_cuda
    real_cuda.cuda.Device().synchronize()


@pytest.mark.parametrize("name", sweep.names())
def test_registry_op_gradient_on_gpu_matches_cpu(name):
    call = sweep.cpu_pattern(name)
    assert call is not None, f"{name}: no argument pattern works on the CPU"
    sweep.compare(name, call, "cuda", rtol=2e-4, atol=2e-5)  # cuBLAS, kernels: other orders


def test_training_step_on_gpu_matches_cpu():
    cpu_model, _, cpu_loss = _train_step("cpu")
    gpu_model, _, gpu_loss = _train_step("cuda")
    np.testing.assert_allclose(gpu_loss.item(), cpu_loss.item(), rtol=1e-4)
    for p, q in zip(cpu_model.parameters(), gpu_model.parameters()):
        assert q.is_cuda
        np.testing.assert_allclose(q.detach().cpu().numpy(), p.detach().numpy(), atol=2e-4)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_step_on_gpu_matches_cpu(name):
    out = {}
    for dev in ("cpu", "cuda"):
        w = ember.tensor(_rand(64, 32, seed=1), device=dev, requires_grad=True)
        opt = OPTIMIZERS[name]([w])
        for _ in range(3):
            opt.zero_grad()
            (w.tanh() ** 2).sum().backward()
            opt.step()
        out[dev] = w.detach().cpu().numpy()
    np.testing.assert_allclose(out["cuda"], out["cpu"], rtol=1e-4, atol=1e-5)


def test_checkpoint_saved_on_gpu_loads_on_cpu_and_the_reverse(tmp_path):
    model, opt, _ = _train_step("cuda", steps=1)
    path = tmp_path / "gpu.safetensors"
    ember.save({"model": model.state_dict(), "optim": opt.state_dict()}, path)
    on_cpu = ember.load(path, map_location="cpu")
    cpu_model = TinyNet()
    cpu_model.load_state_dict(on_cpu["model"])
    for (k, a), b in zip(cpu_model.state_dict().items(), model.state_dict().values()):
        assert a.device == "cpu", k
        np.testing.assert_array_equal(a.numpy(), b.cpu().numpy())
    path2 = tmp_path / "cpu.safetensors"
    ember.save(cpu_model.state_dict(), path2)
    back = ember.load(path2, map_location="cuda")
    gpu_model = TinyNet().to("cuda")
    gpu_model.load_state_dict(back)
    x = ember.tensor(_rand(2, 2, 4, 4, seed=3))
    cpu_model.eval(), gpu_model.eval()
    np.testing.assert_allclose(
        gpu_model(x.cuda()).detach().cpu().numpy(), cpu_model(x).detach().numpy(), atol=1e-4
    )


def test_device_rng_seeding_and_resume():
    from ember.tensor.random import cuda_generator

    ember.manual_seed(11)
    a = ember.randn(1000, device="cuda")
    gen = cuda_generator("cuda")
    state = gen.get_state()
    b = ember.rand(1000, device="cuda")
    drop = F.dropout(ember.ones(4096, device="cuda"), 0.5)
    ember.manual_seed(11)
    np.testing.assert_array_equal(ember.randn(1000, device="cuda").cpu().numpy(), a.cpu().numpy())
    gen.set_state(state)
    np.testing.assert_array_equal(ember.rand(1000, device="cuda").cpu().numpy(), b.cpu().numpy())
    np.testing.assert_array_equal(
        F.dropout(ember.ones(4096, device="cuda"), 0.5).cpu().numpy(), drop.cpu().numpy()
    )
    assert abs(float(a.mean().item())) < 0.15 and 0.85 < float(a.std().item()) < 1.15
    u = b.cpu().numpy()
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.05
    assert not np.array_equal(ember.rand(1000, device="cuda").cpu().numpy(), u)


def test_pinned_batches_upload_asynchronously():
    from ember.data import DataLoader, TensorDataset

    x = ember.tensor(_rand(64, 256, seed=4))
    batches = list(DataLoader(TensorDataset(x), batch_size=16, pin_memory=True))
    assert all(b[0].is_pinned() for b in batches)
    up = [b[0].to("cuda", non_blocking=True) for b in batches]
    got = np.concatenate([u.cpu().numpy() for u in up])
    np.testing.assert_array_equal(got, x.numpy())


def test_nccl_world_size_one():
    from ember.distributed.comm import LocalCommunicator
    from ember.distributed.nccl import CudaReducer, NcclCommunicator

    comm = NcclCommunicator(LocalCommunicator())
    arr = ember.arange(10.0, device="cuda").data
    comm.allreduce(arr, "sum")
    comm.join()
    assert arr.get().tolist() == list(range(10))
    ember.manual_seed(0)
    ref = TinyNet()
    ember.manual_seed(0)
    model = TinyNet().to("cuda")
    reducer = CudaReducer(model.parameters(), comm, bucket_cap_mb=0.01, first_bucket_mb=0.001)
    x = ember.tensor(_rand(2, 2, 4, 4, seed=6))
    for m, inp in ((ref, x), (model, x.cuda())):
        m.eval()
        m(inp).square().sum().backward()
    for p, q in zip(ref.parameters(), model.parameters()):
        np.testing.assert_allclose(q.grad.cpu().numpy(), p.grad.numpy(), atol=1e-4)
    reducer.close()
    comm.close()


def test_trainer_fit_on_gpu_matches_cpu(tmp_path):
    from tests.cuda.test_device_data_trainer import _fit

    cpu_model, _ = _fit("cpu")
    gpu_model, trainer = _fit("cuda", pin=True)
    assert trainer.strategy.root_device == "cuda:0"
    assert gpu_model.seen and all(s == ("cuda:0",) * 3 for s in gpu_model.seen)
    for p, q in zip(cpu_model.parameters(), gpu_model.parameters()):
        np.testing.assert_allclose(q.detach().cpu().numpy(), p.detach().numpy(), atol=1e-5)
