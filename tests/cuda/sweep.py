"""A sweep over the op registry (``ember.ops.FUNCTIONS``): every function is called with the
first argument pattern that works on the CPU, then on the device with the same values, and
the forward results and both input gradients are compared.

Used on the fake CuPy (tests/cuda/test_device_sweep.py, default suite) and on a real GPU
(tests/cuda/test_gpu_device.py, marked ``cuda``).
"""

from __future__ import annotations

import numpy as np

import ember
from ember.ops import FUNCTIONS

# the argument patterns tried, in order: (a, b) are float (3, 4) tensors in (0.1, 1)
PATTERNS = (
    ("f(a)", lambda f, a, b: f(a)),
    ("f(a, b)", lambda f, a, b: f(a, b)),
    ("f(a, 1)", lambda f, a, b: f(a, 1)),
    ("f(a, 0)", lambda f, a, b: f(a, 0)),
    ("f([a, b])", lambda f, a, b: f([a, b])),
    ("f(a, b, 0.3)", lambda f, a, b: f(a, b, 0.3)),
    ("f(a > 0.5, a, b)", lambda f, a, b: f(a > 0.5, a, b)),
    ("f(a, (1, 0))", lambda f, a, b: f(a, (1, 0))),
    ("f(a, 1, 0, 2)", lambda f, a, b: f(a, 1, 0, 2)),
    ("f(a, 0, 1)", lambda f, a, b: f(a, 0, 1)),
)
# functions that need arguments no pattern gives (indices, shapes): their own calls
SPECIAL = {
    "gather": lambda f, a, b: f(a, 1, _idx(a, [[0, 3], [1, 1], [2, 0]])),
    "take_along_dim": lambda f, a, b: f(a, _idx(a, [[0, 3], [1, 1], [2, 0]]), 1),
    "index_select": lambda f, a, b: f(a, 1, _idx(a, [3, 0, 0])),
    "take": lambda f, a, b: f(a, _idx(a, [0, 5, 11])),
    "index_add": lambda f, a, b: f(a, 1, _idx(a, [0, 2]), b[:, :2]),
    "index_fill": lambda f, a, b: f(a, 1, _idx(a, [0, 2]), -1.0),
    "scatter": lambda f, a, b: f(a, 1, _idx(a, [[0], [1], [3]]), b[:, :1]),
    "scatter_add": lambda f, a, b: f(a, 1, _idx(a, [[0, 0], [1, 3], [3, 3]]), b[:, :2]),
    "masked_fill": lambda f, a, b: f(a, a > 0.5, 2.0),
    "masked_select": lambda f, a, b: f(a, b > 0.5),
    "one_hot": lambda f, a, b: f(_idx(a, [0, 2, 1]), 4),
    "reshape": lambda f, a, b: f(a, (4, 3)),
    "broadcast_to": lambda f, a, b: f(a[:1], (2, 3, 4)),
    "tile": lambda f, a, b: f(a, (2, 1)),
    "unflatten": lambda f, a, b: f(a, 1, (2, 2)),
    "mv": lambda f, a, b: f(a, b[0]),
    "dot": lambda f, a, b: f(a[0], b[0]),
    "bmm": lambda f, a, b: f(a[None], b.T[None]),
    "mm": lambda f, a, b: f(a, b.T),
    "matmul": lambda f, a, b: f(a, b.T),
    "lerp": lambda f, a, b: f(a, b, 0.3),
    "softmax": lambda f, a, b: f(a, -1),
    "log_softmax": lambda f, a, b: f(a, 0),
}
SKIP = {  # not array ops: integer-only, or results whose order is unspecified
    "bitwise_and",
    "bitwise_or",
    "bitwise_xor",
    "bitwise_not",
}


def _idx(like: ember.Tensor, values) -> ember.Tensor:
    return ember.tensor(values, device=like.device)


def _inputs(device: str):
    rng = np.random.default_rng(0)
    leaves = [
        ember.tensor(
            rng.uniform(0.1, 1.0, (3, 4)).astype(np.float32), device=device
        ).requires_grad_()
        for _ in range(2)
    ]
    return leaves, [t * 1.0 for t in leaves]  # non-leaves: in-place variants work on them


def _flat_outputs(out) -> list:
    if isinstance(out, ember.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _flat_outputs(o)]
    return [out]  # Python values (allclose, equal)


def run(name: str, call, device: str):
    """(forward values, gradients of both inputs) of one call on ``device``, as NumPy."""
    leaves, (a, b) = _inputs(device)
    outs = _flat_outputs(call(FUNCTIONS[name], a, b))
    values, diff = [], []
    for o in outs:
        if isinstance(o, ember.Tensor):
            assert o.device.type == device, f"{name}: output on {o.device}, expected {device}"
            values.append(o.detach().cpu().numpy())
            if o.requires_grad and o.is_floating_point() and o.numel():
                diff.append(o)
        else:
            values.append(o)
    if diff:
        total = sum((o * (k + 1.0)).sum() for k, o in enumerate(diff))
        total.backward()
    grads = [None if t.grad is None else t.grad.cpu().numpy() for t in leaves]
    return values, grads


def cpu_pattern(name: str):
    """The first call that works on the CPU for ``name``, or None."""
    if name in SPECIAL:
        return SPECIAL[name]
    for _, call in PATTERNS:
        try:
            run(name, call, "cpu")
        except Exception:
            continue
        return call
    return None


def compare(name: str, call, device: str = "cuda", rtol=1e-5, atol=1e-6) -> None:
    expected = run(name, call, "cpu")
    got = run(name, call, device)
    for kind, e_list, g_list in (("output", *[x[0] for x in (expected, got)]),):
        assert len(e_list) == len(g_list), f"{name}: {len(g_list)} {kind}s vs {len(e_list)}"
    for i, (e, g) in enumerate(zip(expected[0], got[0])):
        if isinstance(e, np.ndarray):
            assert e.dtype == g.dtype and e.shape == g.shape, f"{name}: output {i} dtype/shape"
            np.testing.assert_allclose(g, e, rtol=rtol, atol=atol, err_msg=f"{name} output {i}")
        else:
            assert g == e, f"{name}: output {i} is {g!r} on the device, {e!r} on the CPU"
    for i, (e, g) in enumerate(zip(expected[1], got[1])):
        assert (e is None) == (g is None), f"{name}: gradient {i} missing on one side"
        if e is not None:
            np.testing.assert_allclose(g, e, rtol=rtol, atol=atol, err_msg=f"{name} grad {i}")


def names() -> list:
    return sorted(n for n in FUNCTIONS if n not in SKIP)
