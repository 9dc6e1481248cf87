"""Op benchmarks: Ember against PyTorch (CPU) in one process, forward + backward.

    python -m benchmarks.ops [--repeat N] [--quick] [--only NAME]

Two kinds of workload (issue 2, Performance):
- per-op overhead on 16x16 float32 tensors (add, mul, matmul): the Python cost of recording a
  node, running the engine and accumulating leaf gradients dominates; target <= 2x PyTorch;
- throughput on large float32 tensors (a 1024x1024 matmul, an elementwise chain on 4M
  elements): the array work dominates; target <= 1.1x PyTorch.

Every step starts with ``a.grad = b.grad = None`` (what ``optimizer.zero_grad()`` does), so
both frameworks pay for a fresh leaf gradient each time.
"""

from __future__ import annotations

import numpy as np

from benchmarks.common import Case, base_parser, run_cases, setup_torch

SMALL = (16, 16)
MATMUL = (1024, 1024)
CHAIN = (2048, 2048)  # 4,194,304 elements


def _pair(shape, seed):
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal(shape, dtype=np.float32),
        rng.standard_normal(shape, dtype=np.float32),
    )


def _ember_leaves(arrays):
    import ember

    return [ember.tensor(a.copy(), requires_grad=True) for a in arrays]


def _torch_leaves(torch, arrays):
    return [torch.from_numpy(a.copy()).requires_grad_() for a in arrays]


def binary_case(name, op, shape, target, torch, threaded=False):
    """``y = op(a, b); y.backward(ones)`` on two leaves of ``shape``."""

    def ember_step():
        import ember

        a, b = _ember_leaves(_pair(shape, 0))
        g = ember.ones(*shape)

        def step():
            a.grad = b.grad = None
            op(a, b).backward(g)

        return step

    def torch_step():
        a, b = _torch_leaves(torch, _pair(shape, 0))
        g = torch.ones(*shape)

        def step():
            a.grad = b.grad = None
            op(a, b).backward(g)

        return step

    dims = "x".join(map(str, shape))
    return Case(
        name,
        f"a, b: {dims} f32 leaves; a.grad = b.grad = None; y = {op.__doc__}; y.backward(ones)",
        ember_step,
        torch_step,
        target,
        threaded,
    )


def chain_case(torch, target):
    """An elementwise chain ending in ``.sum().backward()``; uses tanh/exp when Ember has them."""
    import ember

    fancy = all(hasattr(ember, n) for n in ("tanh", "exp"))
    if fancy:
        text = "(tanh(x * y + x) * 0.5 - exp(y)).sum().backward()"

        def chain(lib, x, y):
            return (lib.tanh(x * y + x) * 0.5 - lib.exp(y)).sum()
    else:
        text = "((x * y + x) * 0.5 - y).sum().backward()  [ember has no tanh/exp yet]"

        def chain(lib, x, y):
            return ((x * y + x) * 0.5 - y).sum()

    def ember_step():
        x, y = _ember_leaves(_pair(CHAIN, 1))

        def step():
            x.grad = y.grad = None
            chain(ember, x, y).backward()

        return step

    def torch_step():
        x, y = _torch_leaves(torch, _pair(CHAIN, 1))

        def step():
            x.grad = y.grad = None
            chain(torch, x, y).backward()

        return step

    n = CHAIN[0] * CHAIN[1]
    name = "chain 4M " + ("tanh/exp" if fancy else "mul/add")
    return Case(
        name,
        f"x, y: {n:,} f32 leaves; x.grad = y.grad = None; {text}",
        ember_step,
        torch_step,
        target,
        threaded=True,
    )


def _add(a, b):
    """a + b"""
    return a + b


def _mul(a, b):
    """a * b"""
    return a * b


def _matmul(a, b):
    """a @ b"""
    return a @ b


def cases(torch) -> list:
    return [
        binary_case("add 16x16", _add, SMALL, 2.0, torch),
        binary_case("mul 16x16", _mul, SMALL, 2.0, torch),
        binary_case("matmul 16x16", _matmul, SMALL, 2.0, torch),
        binary_case("matmul 1024x1024", _matmul, MATMUL, 1.1, torch, threaded=True),
        chain_case(torch, 1.1),
    ]


def main(argv=None) -> None:
    args = base_parser(__doc__.splitlines()[0]).parse_args(argv)
    torch = setup_torch(args.threads)
    run_cases(cases(torch), args, "Ember vs PyTorch: forward + backward, float32, CPU", torch)


if __name__ == "__main__":
    main()
