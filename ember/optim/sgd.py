"""SGD with momentum, dampening, Nesterov, weight decay and maximize (torch.optim.SGD)."""

from __future__ import annotations

import numpy as np

from ember.cuda import multi_tensor as cuda_mt
from ember.cuda.compile import kernels_enabled
from ember.optim.foreach import effective_grad
from ember.optim.optimizer import Optimizer, required
from ember.tensor.backend import get_array_module
from ember.tensor.tensor import Tensor


class SGD(Optimizer):
    """``p -= lr * d`` where ``d`` is the gradient (plus ``weight_decay * p``), or with
    ``momentum`` the buffer ``b = momentum * b + (1 - dampening) * g`` (the first step sets
    ``b = g``), or with ``nesterov`` ``g + momentum * b``."""

    def __init__(
        self,
        params,
        lr=1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
    ):
        if lr is not required and lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
            "foreach": foreach,
            "fused": fused,
        }
        super().__init__(params, defaults)

    def _state_names(self, group: dict) -> tuple:
        return ("momentum_buffer",) if group["momentum"] != 0 else ()

    def _needs_init(self, group: dict, state: dict) -> bool:
        return "momentum_buffer" not in state

    def _init_state(self, group: dict, p: Tensor, state: dict) -> None:
        state["momentum_buffer"] = Tensor(get_array_module(p.data).zeros_like(p.data))

    def _make_kernel(self, group: dict, step, fresh: bool, xp):
        lr = float(group["lr"])
        momentum, dampening = float(group["momentum"]), float(group["dampening"])
        wd, nesterov, maximize = float(group["weight_decay"]), group["nesterov"], group["maximize"]

        def kernel(p, g, *rest):
            if momentum != 0:
                buf, t0, t1 = rest
            else:
                t0, t1 = rest
            g = effective_grad(xp, p, g, wd, maximize, t0)
            if momentum != 0:
                if fresh:
                    xp.copyto(buf, g)  # torch: the first buffer is a clone of the gradient
                else:
                    buf *= momentum
                    if dampening != 0:
                        xp.multiply(g, 1 - dampening, out=t1)
                        buf += t1
                    else:
                        buf += g
                if nesterov:
                    xp.multiply(buf, momentum, out=t1)
                    xp.add(g, t1, out=t1)
                    g = t1
                else:
                    g = buf
            xp.multiply(g, -lr, out=t0)
            p += t0

        if xp is np or not kernels_enabled():
            return kernel

        def fused(p, g, buf=None):  # ember/cuda/multi_tensor.cu: one launch
            cuda_mt.sgd_step_(
                p, g, buf if momentum != 0 else None, lr=lr, momentum=momentum,
                dampening=dampening, weight_decay=wd, nesterov=nesterov, maximize=maximize,
                first=fresh,
            )  # fmt: skip

        return cuda_mt.attach(kernel, fused)
