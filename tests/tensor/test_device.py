"""Devices: parsing like torch.device, and a clear error for CUDA when CuPy is missing."""

import numpy as np
import pytest

import ember
from ember.tensor import backend


@pytest.mark.parametrize(
    "spec,type_,index,text",
    [
        ("cpu", "cpu", None, "cpu"),
        ("cuda", "cuda", None, "cuda"),
        ("cuda:0", "cuda", 0, "cuda:0"),
        ("cuda:1", "cuda", 1, "cuda:1"),
    ],
)
def test_device_parses_like_torch(spec, type_, index, text):
    d = ember.device(spec)
    assert d.type == type_ and d.index == index and str(d) == text
    assert d == spec and d == ember.device(d) and hash(d) == hash(ember.device(spec))


def test_device_repr_and_index_argument():
    assert repr(ember.device("cuda:1")) == "device(type='cuda', index=1)"
    assert repr(ember.device("cpu")) == "device(type='cpu')"
    assert ember.device("cuda", 2) == ember.device("cuda:2")
    assert ember.device("cpu") != ember.device("cuda")


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "cuda:-1", "tpu:0"])
def test_bad_device_strings_raise(bad):
    with pytest.raises(RuntimeError, match="device"):
        ember.device(bad)


def test_bad_device_types():
    with pytest.raises(RuntimeError, match="index given twice"):
        ember.device("cuda:0", 1)
    with pytest.raises(TypeError):
        ember.device(3.5)


@pytest.fixture
def no_cupy(monkeypatch):
    """Behave as on a machine without CuPy, whatever this machine has."""
    monkeypatch.setattr(backend, "_cupy", None)
    monkeypatch.setattr(backend, "_cupy_error", ImportError("No module named 'cupy'"))


@pytest.mark.parametrize(
    "make",
    [
        lambda: ember.zeros(2, device="cuda"),
        lambda: ember.ones(2, device="cuda:1"),
        lambda: ember.tensor([1.0], device="cuda"),
        lambda: ember.randn(3, device="cuda"),
        lambda: ember.arange(3, device=ember.device("cuda:0")),
        lambda: ember.tensor([1.0]).to("cuda"),
        lambda: ember.tensor([1.0]).cuda(),
    ],
)
def test_cuda_without_cupy_is_a_clear_error(no_cupy, make):
    with pytest.raises(RuntimeError, match=r"CUDA is not available.*CuPy.*device='cpu'"):
        make()


def test_cuda_is_available_is_false_without_cupy(no_cupy):
    assert ember.cuda_is_available() is False


def test_array_module_is_numpy_on_cpu():
    x = ember.ones(2)
    assert ember.get_array_module(x.data) is np
    assert x.cpu() is x and x.device == "cpu"


def test_default_device_without_cupy_fails_clearly_and_resets(no_cupy):
    ember.set_default_device("cuda")
    try:
        assert ember.get_default_device() == "cuda"
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            ember.zeros(2)
        assert ember.zeros(2, device="cpu").device == "cpu"
    finally:
        ember.set_default_device("cpu")
    assert ember.get_default_device() == "cpu" and ember.ones(1).device == "cpu"


def test_cuda_generator_state_is_host_bytes_without_cupy(no_cupy):
    gen = ember.Generator("cuda:1")
    assert type(gen).__name__ == "CudaGenerator" and gen.device == "cuda:1"
    gen.manual_seed(5)
    state = gen.get_state()
    assert state.dtype == ember.uint8 and state.tolist() == [5] + [0] * 15
    gen.set_state(state)  # a GPU checkpoint's RNG state restores on a CPU-only machine
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        ember.rand(2, generator=gen, device="cuda:1")


def test_pinning_is_inert_without_cupy(no_cupy):
    x = ember.ones(3)
    assert x.pin_memory() is x and not x.is_pinned()
    assert x.to("cpu", non_blocking=True) is x


def test_device_index_normalisation():
    x = ember.ones(2)
    assert x.to("cpu") is x and x.to(ember.device("cpu")) is x
