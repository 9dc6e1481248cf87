"""ember.nn.utils against torch.nn.utils: gradient clipping and parameter/vector conversion."""

from __future__ import annotations

import math
import types

import numpy as np
import pytest

import ember
from ember import nn
from ember.nn import utils

torch = pytest.importorskip("torch")

SHAPES = [(5, 4), (4,), (3, 5, 2), (), (0, 3)]


def make(dtype=np.float32, scale=1.0, seed=0, grads=True):
    rng = np.random.default_rng(seed)
    vals = [np.asarray(rng.normal(size=s), dtype=dtype) for s in SHAPES]
    gvals = [np.asarray(rng.normal(size=s) * scale, dtype=dtype) for s in SHAPES]
    ep = [nn.Parameter(ember.tensor(v.copy())) for v in vals]
    tp = [torch.nn.Parameter(torch.from_numpy(v.copy())) for v in vals]
    if grads:
        for e, t, g in zip(ep, tp, gvals):
            e.grad = ember.tensor(g.copy())
            t.grad = torch.from_numpy(g.copy())
    return ep, tp


@pytest.mark.parametrize("norm_type", [2.0, 1, 3.5, math.inf, "inf", -math.inf, 0])
@pytest.mark.parametrize("max_norm,scale", [(1.0, 1.0), (100.0, 1.0), (0.5, 1e-3)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_grad_norm_matches_torch(norm_type, max_norm, scale, dtype):
    ep, tp = make(dtype, scale)
    if math.isinf(float(norm_type)):  # an empty gradient has no inf norm (both raise)
        ep, tp = ep[:4], tp[:4]
    total = utils.clip_grad_norm_(ep, max_norm, norm_type=norm_type)
    ttotal = torch.nn.utils.clip_grad_norm_(tp, max_norm, norm_type=norm_type)
    assert isinstance(total, ember.Tensor) and total.ndim == 0
    assert str(total.dtype).split(".")[-1] == str(ttotal.dtype).split(".")[-1]
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(total.item(), ttotal.item(), rtol=rtol)
    for e, t in zip(ep, tp):
        np.testing.assert_allclose(e.grad.numpy(), t.grad.numpy(), rtol=rtol, atol=1e-30)


def test_inf_norm_of_empty_gradient_raises_like_torch():
    ep, tp = make()
    with pytest.raises(RuntimeError, match="cannot compute the inf norm on an empty tensor"):
        utils.clip_grad_norm_(ep, 1.0, norm_type=math.inf)
    with pytest.raises(RuntimeError, match="cannot compute the infinity norm on an empty"):
        torch.nn.utils.clip_grad_norm_(tp, 1.0, norm_type=math.inf)


def test_clip_grad_norm_scales_in_place_and_bumps_version():
    ep, _ = make()
    grads = [p.grad for p in ep]
    arrays = [g.data for g in grads]
    versions = [g._version for g in grads]
    utils.clip_grad_norm_(ep, 0.1)
    assert all(p.grad is g and g.data is a for p, g, a in zip(ep, grads, arrays))
    assert all(g._version == v + 1 for g, v in zip(grads, versions))
    assert abs(utils.get_total_norm([p.grad for p in ep]).item() - 0.1) < 1e-5


def test_clip_grad_norm_single_tensor_generator_and_no_grads():
    ep, tp = make()
    total = utils.clip_grad_norm_(ep[0], 1.0)
    ttotal = torch.nn.utils.clip_grad_norm_(tp[0], 1.0)
    np.testing.assert_allclose(total.item(), ttotal.item(), rtol=1e-6)
    ep, _ = make(grads=False)
    total = utils.clip_grad_norm_(ep, 1.0)
    assert total.item() == 0.0 and total.dtype is ember.float32
    with pytest.warns(UserWarning, match="empty generator"):
        utils.clip_grad_norm_((p for p in []), 1.0)
    ep, tp = make()
    gen = (p for p in ep)
    assert isinstance(gen, types.GeneratorType)
    np.testing.assert_allclose(
        utils.clip_grad_norm_(gen, 1.0).item(),
        torch.nn.utils.clip_grad_norm_(iter(tp), 1.0).item(),
        rtol=1e-6,
    )


def test_clip_grad_norm_nonfinite():
    ep, tp = make()
    ep[0].grad.data[0, 0] = np.inf
    tp[0].grad[0, 0] = math.inf
    with pytest.raises(
        RuntimeError,
        match=r"The total norm of order 2.0 for gradients from "
        r"`parameters` is non-finite \(inf\)",
    ):
        utils.clip_grad_norm_(ep, 1.0, error_if_nonfinite=True)
    ep[0].grad.data[0, 0] = np.nan
    with pytest.raises(RuntimeError, match=r"non-finite \(nan\)"):
        utils.clip_grad_norm_(ep[:4], 1.0, norm_type="inf", error_if_nonfinite=True)
    ep[0].grad.data[0, 0] = np.inf
    total = utils.clip_grad_norm_(ep, 1.0)  # without the flag: scaled by the inf norm
    ttotal = torch.nn.utils.clip_grad_norm_(tp, 1.0)
    assert total.item() == ttotal.item() == math.inf
    for e, t in zip(ep, tp):
        np.testing.assert_array_equal(e.grad.numpy(), t.grad.numpy())


def test_clip_grad_norm_deprecated_alias():
    ep, _ = make()
    with pytest.warns(FutureWarning):
        utils.clip_grad_norm(ep, 1.0)


@pytest.mark.parametrize("clip", [0.0, 0.3, 1, 10.0])
def test_clip_grad_value_matches_torch(clip):
    ep, tp = make()
    ep[1].grad.data[0] = np.nan
    tp[1].grad[0] = math.nan
    versions = [p.grad._version for p in ep]
    assert utils.clip_grad_value_(ep, clip) is None
    torch.nn.utils.clip_grad_value_(tp, clip)
    for e, t, v in zip(ep, tp, versions):
        np.testing.assert_array_equal(e.grad.numpy(), t.grad.numpy())
        assert e.grad._version == v + 1
    utils.clip_grad_value_(ep[0], 0.1)  # a single tensor
    assert np.abs(ep[0].grad.numpy()).max() <= 0.1


def test_clip_grad_skips_params_without_grad():
    ep, _ = make()
    ep[1].grad = None
    utils.clip_grad_value_(ep, 0.1)
    utils.clip_grad_norm_(ep, 0.1)
    assert ep[1].grad is None


def test_parameters_to_vector_and_back():
    ep, tp = make()
    vec = utils.parameters_to_vector(ep)
    tvec = torch.nn.utils.parameters_to_vector(tp)
    np.testing.assert_array_equal(vec.detach().numpy(), tvec.detach().numpy())
    assert vec.shape == (sum(p.numel() for p in ep),) and vec.requires_grad
    (vec * ember.arange(vec.numel(), dtype=ember.float32)).sum().backward()  # differentiable
    (tvec * torch.arange(tvec.numel(), dtype=torch.float32)).sum().backward()
    for e, t in zip(ep, tp):
        np.testing.assert_array_equal(e.grad.numpy(), t.grad.numpy())
    new = ember.arange(vec.numel(), dtype=ember.float64) * 0.5
    utils.vector_to_parameters(new, ep)
    torch.nn.utils.vector_to_parameters(torch.from_numpy(new.numpy().copy()), tp)
    for e, t in zip(ep, tp):
        assert e.shape == t.shape and e.dtype is ember.float64
        np.testing.assert_array_equal(e.detach().numpy(), t.detach().numpy())
    new.data[0] = 123.0  # the parameters are views of the vector, as in torch
    assert ep[0].data[0, 0] == 123.0


def test_vector_to_parameters_errors():
    ep, _ = make()
    with pytest.raises(TypeError, match="expected ember.Tensor, but got: ndarray"):
        utils.vector_to_parameters(np.zeros(100), ep)
    with pytest.raises(
        RuntimeError,
        match="expected a 1-d vector of at least 55 elements, got "
        r"shape \(10,\)",
    ):
        utils.vector_to_parameters(ember.zeros(10), ep)


def test_exported_from_nn():
    assert nn.utils.clip_grad_norm_ is utils.clip_grad_norm_
    assert callable(nn.utils.parameters_to_vector)
