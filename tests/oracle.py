"""PyTorch as an oracle: run the same op in Ember and in torch on the same arrays and compare
the forward result and every input gradient.

    from tests.oracle import check_op
    check_op(lambda x, y: x * y, [rand(3, 4), rand(4)])          # same code, both frameworks
    check_op(ember_fn, inputs, torch_fn=lambda x: torch.special.erf(x))

Tests skip cleanly when torch is not installed.

``EMBER_TEST_DEVICE=cuda`` (a GPU) or ``fake-cuda`` (tests/cuda/fake_cupy.py, any machine) puts
every Ember input on the device, so the same suites check each op's forward and gradients there
against torch's CPU results: ``EMBER_TEST_DEVICE=fake-cuda pytest tests/ops tests/nn``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import ember

torch = pytest.importorskip("torch")


def rand(*shape, dtype=np.float32, low=-2.0, high=2.0, seed=None, positive=False):
    rng = np.random.default_rng(seed)
    arr = rng.uniform(low, high, size=shape)
    if positive:
        arr = np.abs(arr) + 0.1
    return arr.astype(dtype)


def to_torch(arr, requires_grad):
    t = torch.from_numpy(np.array(arr, copy=True))
    if requires_grad and t.is_floating_point():
        t.requires_grad_(True)
    return t


DEVICE = "cuda" if os.environ.get("EMBER_TEST_DEVICE", "cpu") in ("cuda", "fake-cuda") else "cpu"


def cpu_only(why: str):
    """Skip a test under ``EMBER_TEST_DEVICE=cuda|fake-cuda``: it checks a CPU-only path or
    artefact (a NumPy-only fast path, the CPU thread pool), which device arrays never take."""
    return pytest.mark.skipif(DEVICE != "cpu", reason=f"CPU-only: {why}")


def to_ember(arr, requires_grad):
    t = ember.tensor(np.array(arr, copy=True), device=DEVICE)
    if requires_grad and t.is_floating_point():
        t.requires_grad_(True)
    return t


def _outputs(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _np(x):
    if isinstance(x, ember.Tensor):
        return np.asarray(x.detach().numpy())
    if isinstance(x, torch.Tensor):
        return x.detach().numpy()
    return np.asarray(x)


def check_op(
    fn, inputs, torch_fn=None, *, grad=True, atol=1e-5, rtol=1e-4, noncontiguous=False, seed=0
):
    """Compare ``fn`` (Ember) with ``torch_fn`` (default: the same ``fn``) forward and backward.

    ``inputs`` are NumPy arrays (floating ones get requires_grad) or plain Python values
    (passed through unchanged). With ``noncontiguous`` every array input is given to Ember
    as a transposed view of a transposed copy (same values, non-contiguous memory).
    """
    torch_fn = torch_fn or fn
    e_in, t_in = [], []
    for x in inputs:
        if isinstance(x, np.ndarray):
            e = to_ember(x, grad)
            if noncontiguous and x.ndim >= 2:
                base = ember.tensor(np.ascontiguousarray(np.swapaxes(x, 0, 1)), device=DEVICE)
                if grad and base.is_floating_point():
                    base.requires_grad_(True)
                e_leaf = base
                e = base.transpose(0, 1)
                assert not e.is_contiguous()
                e = (e, e_leaf)
            e_in.append(e)
            t_in.append(to_torch(x, grad))
        else:
            e_in.append(x)
            t_in.append(x)
    e_args = [
        x[0] if isinstance(x, tuple) and len(x) == 2 and isinstance(x[1], ember.Tensor) else x
        for x in e_in
    ]
    e_out = _outputs(fn(*e_args))
    t_out = _outputs(torch_fn(*t_in))
    assert len(e_out) == len(t_out), f"{len(e_out)} outputs vs torch's {len(t_out)}"
    for i, (eo, to) in enumerate(zip(e_out, t_out)):
        if isinstance(to, torch.Tensor):
            assert isinstance(eo, ember.Tensor), f"output {i}: expected a Tensor, got {type(eo)}"
            assert tuple(eo.shape) == tuple(to.shape), (
                f"output {i}: shape {tuple(eo.shape)} vs torch {tuple(to.shape)}"
            )
            assert eo.dtype.name == str(to.dtype).removeprefix("torch."), (
                f"output {i}: dtype {eo.dtype} vs torch {to.dtype}"
            )
        np.testing.assert_allclose(
            _np(eo).astype(np.float64) if _np(eo).dtype != bool else _np(eo),
            _np(to).astype(np.float64) if _np(to).dtype != bool else _np(to),
            atol=atol,
            rtol=rtol,
            err_msg=f"forward output {i}",
        )
    if not grad:
        return e_out
    rng = np.random.default_rng(seed)
    e_diff, t_diff, seeds = [], [], []
    for eo, to in zip(e_out, t_out):
        if isinstance(to, torch.Tensor) and to.requires_grad:
            g = rng.standard_normal(tuple(to.shape)).astype(_np(to).dtype)
            e_diff.append(eo)
            t_diff.append(to)
            seeds.append(g)
    if not t_diff:
        return e_out
    torch.autograd.backward(t_diff, [torch.from_numpy(g.copy()) for g in seeds])
    ember.autograd.backward(e_diff, [ember.tensor(g.copy(), device=DEVICE) for g in seeds])
    for k, (ex, tx) in enumerate(zip(e_in, t_in)):
        if not isinstance(tx, torch.Tensor) or not tx.requires_grad:
            continue
        leaf = ex[1] if isinstance(ex, tuple) else ex
        tg = tx.grad
        eg = leaf.grad
        if isinstance(ex, tuple):
            eg = None if eg is None else eg.transpose(0, 1)
        if tg is None:
            assert eg is None or np.allclose(_np(eg), 0), f"input {k}: grad should be None/zero"
            continue
        assert eg is not None, f"input {k}: Ember produced no gradient, torch did"
        assert tuple(eg.shape) == tuple(tg.shape), f"input {k}: grad shape {tuple(eg.shape)}"
        np.testing.assert_allclose(
            _np(eg).astype(np.float64),
            _np(tg).astype(np.float64),
            atol=atol,
            rtol=rtol,
            err_msg=f"gradient of input {k}",
        )
    return e_out


def gradcheck_op(fn, inputs, **kw):
    """ember.autograd.gradcheck on float64 copies of the array inputs."""
    args = []
    for x in inputs:
        if isinstance(x, np.ndarray) and x.dtype.kind == "f":
            args.append(ember.tensor(x.astype(np.float64), requires_grad=True))
        elif isinstance(x, np.ndarray):
            args.append(ember.tensor(x))
        else:
            args.append(x)
    assert ember.autograd.gradcheck(fn, args, **kw)
