"""RMSprop (torch.optim.RMSprop): a running average of squared gradients scales each step;
optionally centered (minus the squared mean gradient) and with momentum."""

from __future__ import annotations

import numpy as np

from ember.optim.foreach import effective_grad, lerp_
from ember.optim.optimizer import Optimizer
from ember.tensor.backend import get_array_module
from ember.tensor.tensor import Tensor


class RMSprop(Optimizer):
    """``s = alpha s + (1-alpha) g^2``, ``avg = sqrt(s [- mean_g^2]) + eps``, then
    ``p -= lr g / avg`` or, with momentum, ``b = momentum b + g / avg; p -= lr b``."""

    _uses_step = True

    def __init__(
        self,
        params,
        lr=1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
    ):
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= momentum:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not 0.0 <= alpha:
            raise ValueError(f"Invalid alpha value: {alpha}")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "alpha": alpha,
            "eps": eps,
            "centered": centered,
            "weight_decay": weight_decay,
            "foreach": foreach,
            "maximize": maximize,
        }
        super().__init__(params, defaults)

    def _state_names(self, group: dict) -> tuple:
        names = ("square_avg",)
        if group["momentum"] > 0:
            names += ("momentum_buffer",)
        if group["centered"]:
            names += ("grad_avg",)
        return names

    def _init_state(self, group: dict, p: Tensor, state: dict) -> None:
        xp = get_array_module(p.data)
        state["step"] = Tensor(np.zeros((), dtype=np.float32))
        state["square_avg"] = Tensor(xp.zeros_like(p.data))
        if group["momentum"] > 0:
            state["momentum_buffer"] = Tensor(xp.zeros_like(p.data))
        if group["centered"]:
            state["grad_avg"] = Tensor(xp.zeros_like(p.data))

    def _make_kernel(self, group: dict, step, fresh: bool, xp):
        lr, alpha, eps = float(group["lr"]), float(group["alpha"]), float(group["eps"])
        wd, momentum = float(group["weight_decay"]), float(group["momentum"])
        centered, maximize = group["centered"], group["maximize"]

        def kernel(p, g, sq, *rest):
            rest = list(rest)
            buf = rest.pop(0) if momentum > 0 else None
            gavg = rest.pop(0) if centered else None
            t0, t1 = rest
            g = effective_grad(xp, p, g, wd, maximize, t0)
            sq *= alpha
            xp.multiply(g, 1 - alpha, out=t1)
            t1 *= g
            sq += t1
            if centered:
                lerp_(xp, gavg, g, 1 - alpha, t1)
                xp.multiply(gavg, gavg, out=t1)
                xp.subtract(sq, t1, out=t1)
                xp.sqrt(t1, out=t1)
            else:
                xp.sqrt(sq, out=t1)
            t1 += eps
            if buf is not None:
                buf *= momentum
                xp.divide(g, t1, out=t1)
                buf += t1
                xp.multiply(buf, -lr, out=t1)
                p += t1
            else:
                xp.multiply(g, -lr, out=t0)
                t0 /= t1
                p += t0

        return kernel
