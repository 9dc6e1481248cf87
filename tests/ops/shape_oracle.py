"""Helpers shared by the shape and join tests: one fn for both libraries, and a second-order
check (a Hessian-vector product through the op) against PyTorch."""

from __future__ import annotations

import numpy as np

import ember
from tests.oracle import torch


def lib(t):
    """``ember`` for an Ember tensor, ``torch`` for a torch tensor: ``lib(x).cat([x, y])``."""
    return ember if isinstance(t, ember.Tensor) else torch


def _outs(y):
    return list(y) if isinstance(y, (tuple, list)) else [y]


def _hvp(mod, fn, arrays, seed):
    """d/dx sum(u * d/dx sum(w * fn(x)**2)): backward of the op's backward."""
    rng = np.random.default_rng(seed)
    xs = [mod.tensor(a.copy(), requires_grad=True) for a in arrays]
    ys = _outs(fn(*xs))
    s = None
    for y in ys:
        w = mod.tensor(rng.standard_normal(tuple(y.shape)).astype(arrays[0].dtype))
        term = (y * y * w).sum()
        s = term if s is None else s + term
    gs = mod.autograd.grad(s, xs, create_graph=True)
    h = None
    for x, g in zip(xs, gs):
        u = mod.tensor(rng.standard_normal(tuple(x.shape)).astype(arrays[0].dtype))
        term = (g * u).sum()
        h = term if h is None else h + term
    return [np.asarray(g.detach().numpy()) for g in mod.autograd.grad(h, xs)]


def check_double_backward(fn, arrays, torch_fn=None, seed=0):
    """Compare a Hessian-vector product through ``fn`` with PyTorch's (float64 inputs)."""
    arrays = [a.astype(np.float64) for a in arrays]
    mine = _hvp(ember, fn, arrays, seed)
    ref = _hvp(torch, torch_fn or fn, arrays, seed)
    for k, (m, r) in enumerate(zip(mine, ref)):
        np.testing.assert_allclose(m, r, rtol=1e-7, atol=1e-9, err_msg=f"input {k}")


def first_grad_gradcheck(fn, array):
    """gradcheck of backward itself: the input gradient as a function of grad_output."""
    x = ember.tensor(array.astype(np.float64), requires_grad=True)
    shapes = [tuple(y.shape) for y in _outs(fn(x))]
    rng = np.random.default_rng(1)
    vs = [ember.tensor(rng.standard_normal(s), requires_grad=True) for s in shapes]

    def grad_of(*v):
        return ember.autograd.grad(_outs(fn(x)), [x], list(v), create_graph=True)[0]

    assert ember.autograd.gradcheck(grad_of, vs)
