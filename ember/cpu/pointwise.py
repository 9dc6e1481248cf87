"""Launcher of the piecewise activation and loss loops (``_pointwise_kernels.py``): leaky_relu,
elu (selu, celu) and smooth_l1 / huber's quadratic-then-linear; imports no numba.

Each getter returns ``(forward, backward)`` loops over contiguous 1-D float32 arrays, or None
while CPU kernels are off (the caller keeps NumPy's path). Every loop takes its arrays, then
its float32 scalars, then ``out``. ``blocks`` says how the caller
should split an array over the CPU threads (``ember.ops.parallel.run_blocks``).
"""

from __future__ import annotations

from ember.cpu.compile import float32_numpy, load

# The loops run 0.2-0.5 ns per element (memory-bound; elu's polynomial adds a little): below
# ~100 us of work a second thread's wake-up (60-130 us on this VM) costs more than it saves.
MIN_SPLIT = 1 << 18


def blocks(n: int, threads: int) -> tuple[int, int]:
    """``(block, threads)`` for ``run_blocks`` over ``n`` elements: one thread below
    ``MIN_SPLIT``, else about two blocks per thread of at least ``MIN_SPLIT / 2``."""
    if n < MIN_SPLIT or threads <= 1:
        return max(n, 1), 1
    return max(MIN_SPLIT // 2, -(-n // (2 * threads))), threads


def _pair(forward: str, backward: str):
    kernels = load("pointwise")
    return None if kernels is None else (getattr(kernels, forward), getattr(kernels, backward))


def leaky_relu():
    """``f(x, slope, out)``, ``grad(g, x, slope, out)``."""
    return _pair("leaky_relu", "leaky_relu_grad")


def elu():
    """``f(x, input_scale, neg_coef, scale, out)``, ``grad(g, x, input_scale, neg_coef,
    scale, out)``; only for ``input_scale > 0`` (the exp argument is then never positive)."""
    return _pair("elu", "elu_grad")


def quadratic_then_linear():
    """``f(d, cut, k, slope, out)``, ``grad(g, d, k, slope, out)``, and as a third loop
    ``grad_scalar(d, g, k, slope, out)`` with one float ``g`` (a broadcast gradient)."""
    kernels = load("pointwise")
    if kernels is None:
        return None
    return (
        kernels.quadratic_then_linear,
        kernels.quadratic_then_linear_grad,
        kernels.quadratic_then_linear_grad_scalar,
    )


supports = float32_numpy  # the loops take float32 NumPy arrays
