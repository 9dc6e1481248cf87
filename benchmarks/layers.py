"""Layer benchmarks outside the reference workloads: Ember against PyTorch (CPU) in one process,
forward + backward of one functional call on float32 leaves.

    python -m benchmarks.layers [--repeat N] [--quick] [--only NAME]

Informative (no targets): where a layer a user may reach for stands against torch. The cases
are the ones a sweep of ~80 layers found 4-26x slower than torch and that were then reworked
(benchmarks/notes/layers.md), so a regression shows here.
"""

from __future__ import annotations

import numpy as np

from benchmarks.common import Case, base_parser, run_cases, setup_torch

IMAGE = (8, 64, 64, 64)
MAPS = (32, 64, 32, 32)
SEQ = (32, 128, 512)
SCORES = (16, 8, 128, 128)


def _arrays(shapes, seed: int):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s, dtype=np.float32) for s in shapes]


def fb_case(name: str, text: str, shapes, call, torch, extra=None) -> Case:
    """``call(f, lib, *leaves, *extra)`` forward, then backward (a fixed random gradient for
    a tensor output, plain ``backward()`` for a loss) into leaves of ``shapes``."""
    leaves_np = _arrays(shapes, 0)

    def make(lib, functional, leaf, tensor):
        leaves = [leaf(a) for a in leaves_np]
        consts = [tensor(c) for c in (extra or [])]
        out = call(functional, lib, *leaves, *consts)
        grad = None
        if out.ndim:
            g = np.random.default_rng(1).standard_normal(tuple(out.shape), dtype=np.float32)
            grad = tensor(g)

        def step():
            for t in leaves:
                t.grad = None
            y = call(functional, lib, *leaves, *consts)
            y.backward() if grad is None else y.backward(grad)

        return step

    def ember_step():
        import ember
        import ember.nn.functional as F

        return make(
            ember,
            F,
            lambda a: ember.tensor(a.copy(), requires_grad=True),
            lambda a: ember.tensor(np.array(a, copy=True)),
        )

    def torch_step():
        return make(
            torch,
            torch.nn.functional,
            lambda a: torch.from_numpy(a.copy()).requires_grad_(),
            lambda a: torch.from_numpy(np.array(a, copy=True)),
        )

    dims = ", ".join("x".join(map(str, s)) for s in shapes)
    return Case(name, f"{dims} f32 leaves; {text}; backward", ember_step, torch_step, None, True)


def _tokens():
    idx = np.random.default_rng(2).integers(1, 10000, (32, 128))
    idx[:, -16:] = 0  # the padding index, 512 times
    return idx


def cases(torch) -> list:
    nearest = "interpolate(x, scale_factor=2, mode='nearest')"
    bilinear = "interpolate(x, scale_factor=2, mode='bilinear')"
    return [
        fb_case(
            "interpolate nearest",
            nearest,
            [IMAGE],
            lambda f, lib, x: f.interpolate(x, scale_factor=2, mode="nearest"),
            torch,
        ),
        fb_case(
            "interpolate bilinear",
            bilinear,
            [IMAGE],
            lambda f, lib, x: f.interpolate(x, scale_factor=2, mode="bilinear"),
            torch,
        ),
        fb_case(
            "adaptive_avg_pool2d 1",
            "adaptive_avg_pool2d(x, 1)",
            [MAPS],
            lambda f, lib, x: f.adaptive_avg_pool2d(x, 1),
            torch,
        ),
        fb_case(
            "leaky_relu",
            "leaky_relu(x, 0.01)",
            [SEQ],
            lambda f, lib, x: f.leaky_relu(x, 0.01),
            torch,
        ),
        fb_case("elu", "elu(x)", [SEQ], lambda f, lib, x: f.elu(x), torch),
        fb_case(
            "where",
            "where(x > 0, x, y)",
            [SEQ, SEQ],
            lambda f, lib, x, y: lib.where(x > 0, x, y),
            torch,
        ),
        fb_case(
            "smooth_l1_loss",
            "smooth_l1_loss(x, y)",
            [SEQ, SEQ],
            lambda f, lib, x, y: f.smooth_l1_loss(x, y),
            torch,
        ),
        fb_case(
            "huber_loss",
            "huber_loss(x, y)",
            [SEQ, SEQ],
            lambda f, lib, x, y: f.huber_loss(x, y),
            torch,
        ),
        fb_case(
            "mse_loss", "mse_loss(x, y)", [SEQ, SEQ], lambda f, lib, x, y: f.mse_loss(x, y), torch
        ),
        fb_case(
            "embedding padding",
            "embedding(idx 32x128, w, padding_idx=0), idx 0 x512",
            [(10000, 512)],
            lambda f, lib, w, idx: f.embedding(idx, w, padding_idx=0),
            torch,
            extra=[_tokens()],
        ),
        fb_case(
            "softmax attn",
            "softmax(x, -1)",
            [SCORES],
            lambda f, lib, x: f.softmax(x, -1),
            torch,
        ),
        fb_case(
            "log_softmax",
            "log_softmax(x, -1)",
            [SEQ],
            lambda f, lib, x: f.log_softmax(x, -1),
            torch,
        ),
        fb_case(
            "conv2d depthwise",
            "conv2d(x, w (64, 1, 3, 3), padding=1, groups=64)",
            [MAPS, (64, 1, 3, 3)],
            lambda f, lib, x, w: f.conv2d(x, w, padding=1, groups=64),
            torch,
        ),
        fb_case(
            "pad reflect",
            "pad(x, (1, 1, 1, 1), mode='reflect')",
            [MAPS],
            lambda f, lib, x: f.pad(x, (1, 1, 1, 1), mode="reflect"),
            torch,
        ),
        fb_case("cumsum -1", "cumsum(x, -1)", [SEQ], lambda f, lib, x: lib.cumsum(x, -1), torch),
        fb_case("cumsum 1", "cumsum(x, 1)", [SEQ], lambda f, lib, x: lib.cumsum(x, 1), torch),
    ]


def main(argv=None) -> None:
    args = base_parser(__doc__.splitlines()[0]).parse_args(argv)
    torch = setup_torch(args.threads)
    run_cases(cases(torch), args, "Ember vs PyTorch: layers, forward + backward, CPU", torch)


if __name__ == "__main__":
    main()
