"""Finite-difference gradient checks in float64 (``gradcheck`` and ``gradgradcheck``)."""

from __future__ import annotations

import numpy as np

from ember.tensor.backend import get_array_module, to_backend
from ember.tensor.device import CPU
from ember.tensor.tensor import Tensor, writable


def _as_tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _host64(arr) -> np.ndarray:
    """A float64 host copy (the Jacobians are assembled on the host, whatever the device)."""
    return to_backend(arr, CPU).astype(np.float64)


def _numerical_jacobian(fn, inputs, eps):
    """Central differences: one column block per element of each differentiable input."""
    outputs = [_host64(o.data) for o in _as_tuple(fn(*inputs)) if isinstance(o, Tensor)]
    jac = []
    for x in inputs:
        if not (isinstance(x, Tensor) and x.requires_grad):
            jac.append(None)
            continue
        flat = x.data.reshape(-1)  # a view: x.data must be contiguous (checked by the caller)
        cols = [np.zeros((flat.size, o.size)) for o in outputs]
        for j in range(flat.size):
            orig = flat[j].item()
            flat[j] = orig + eps
            plus = [
                _host64(o.data).ravel() for o in _as_tuple(fn(*inputs)) if isinstance(o, Tensor)
            ]
            flat[j] = orig - eps
            minus = [
                _host64(o.data).ravel() for o in _as_tuple(fn(*inputs)) if isinstance(o, Tensor)
            ]
            flat[j] = orig
            for c, p, m in zip(cols, plus, minus):
                c[j] = (p - m) / (2 * eps)
        jac.append(cols)
    return outputs, jac


def _analytical_jacobian(fn, inputs, outputs_shape):
    from ember.autograd import grad

    outs = [o for o in _as_tuple(fn(*inputs)) if isinstance(o, Tensor)]
    diff_inputs = [x for x in inputs if isinstance(x, Tensor) and x.requires_grad]
    jac = [[np.zeros((x.data.size, o.data.size)) for o in outs] for x in diff_inputs]
    for k, o in enumerate(outs):
        if not o.requires_grad:
            continue
        for j in range(o.data.size):
            seed = np.zeros(o.data.size, dtype=o.data.dtype)
            seed[j] = 1
            gs = grad(
                [o],
                diff_inputs,
                [Tensor(to_backend(seed.reshape(o.data.shape), o.device))],
                retain_graph=True,
                allow_unused=True,
            )
            for i, g in enumerate(gs):
                if g is not None:
                    jac[i][k][:, j] = _host64(g.data).ravel()
    return jac


def gradcheck(
    fn,
    inputs,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    raise_exception: bool = True,
) -> bool:
    """Compare backward's Jacobian with central finite differences.

    Differentiable inputs must be float64 (as in PyTorch) so the differences are accurate.
    """
    inputs = _as_tuple(inputs)
    for i, x in enumerate(inputs):
        if isinstance(x, Tensor) and x.requires_grad:
            if x.data.dtype != np.float64:
                raise ValueError(f"gradcheck: input {i} is {x.dtype}; use float64 inputs")
            if not x.data.flags.c_contiguous or not writable(x.data):
                x.data = get_array_module(x.data).ascontiguousarray(x.data).copy()
    outputs, numerical = _numerical_jacobian(fn, inputs, eps)
    analytical = _analytical_jacobian(fn, inputs, [o.shape for o in outputs])
    diff_idx = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    for a_cols, i in zip(analytical, diff_idx):
        for k, (a, n) in enumerate(zip(a_cols, numerical[i])):
            if not np.allclose(a, n, atol=atol, rtol=rtol):
                if raise_exception:
                    err = np.abs(a - n).max()
                    raise RuntimeError(
                        f"gradcheck: Jacobian mismatch for output {k} with respect to input {i} "
                        f"(max abs error {err:.3g}).\nnumerical:\n{n}\nanalytical:\n{a}"
                    )
                return False
    return True


def gradgradcheck(
    fn, inputs, grad_outputs=None, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3
) -> bool:
    """gradcheck of the first derivative: checks double backward (create_graph=True)."""
    from ember.autograd import grad

    inputs = _as_tuple(inputs)
    outs = [o for o in _as_tuple(fn(*inputs)) if isinstance(o, Tensor)]
    if grad_outputs is None:
        rng = np.random.default_rng(0)
        grad_outputs = [
            Tensor(to_backend(rng.standard_normal(o.data.shape), o.device)) for o in outs
        ]
    diff_inputs = [x for x in inputs if isinstance(x, Tensor) and x.requires_grad]

    def first_grad(*xs):
        ys = [o for o in _as_tuple(fn(*xs)) if isinstance(o, Tensor)]
        dx = [x for x in xs if isinstance(x, Tensor) and x.requires_grad]
        return tuple(
            g
            for g in grad(ys, dx, grad_outputs, create_graph=True, allow_unused=True)
            if g is not None
        )

    del diff_inputs
    return gradcheck(first_grad, inputs, eps=eps, atol=atol, rtol=rtol)
