"""Layer benchmarks outside the reference workloads: Ember against PyTorch (CPU) in one process,
forward + backward of one functional call on one float32 leaf.

    python -m benchmarks.layers [--repeat N] [--quick] [--only NAME]

Informative (no targets): they show where a layer a user may reach for stands against torch.
Now: F.interpolate by 2 of (8, 64, 64, 64), nearest and bilinear.
"""

from __future__ import annotations

import numpy as np

from benchmarks.common import Case, base_parser, run_cases, setup_torch

IMAGE = (8, 64, 64, 64)


def interpolate_case(mode: str, torch, **kw) -> Case:
    """``F.interpolate(x, scale_factor=2, mode=mode).backward(g)`` on an IMAGE leaf."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(IMAGE, dtype=np.float32)
    g = rng.standard_normal(IMAGE[:2] + tuple(2 * n for n in IMAGE[2:]), dtype=np.float32)

    def make(lib, functional, leaf, grad):
        def step():
            leaf.grad = None
            functional.interpolate(leaf, scale_factor=2, mode=mode, **kw).backward(grad)

        return step

    def ember_step():
        import ember
        import ember.nn.functional as F

        return make(ember, F, ember.tensor(x.copy(), requires_grad=True), ember.tensor(g))

    def torch_step():
        leaf = torch.from_numpy(x.copy()).requires_grad_()
        return make(torch, torch.nn.functional, leaf, torch.from_numpy(g.copy()))

    extra = "".join(f", {k}={v}" for k, v in kw.items())
    dims = "x".join(map(str, IMAGE))
    return Case(
        f"interpolate {mode}{' ac' if kw.get('align_corners') else ''}",
        f"x: {dims} f32 leaf; x.grad = None; interpolate(x, scale_factor=2, mode={mode!r}"
        f"{extra}).backward(g)",
        ember_step,
        torch_step,
        None,
        threaded=True,
    )


def cases(torch) -> list:
    return [
        interpolate_case("nearest", torch),
        interpolate_case("bilinear", torch),
        interpolate_case("bilinear", torch, align_corners=True),
    ]


def main(argv=None) -> None:
    args = base_parser(__doc__.splitlines()[0]).parse_args(argv)
    torch = setup_torch(args.threads)
    run_cases(cases(torch), args, "Ember vs PyTorch: layers, forward + backward, CPU", torch)


if __name__ == "__main__":
    main()
