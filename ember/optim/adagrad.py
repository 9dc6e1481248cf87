"""Adagrad (torch.optim.Adagrad): each coordinate's step shrinks with its summed squared
gradients; the learning rate itself decays as ``lr / (1 + (t - 1) lr_decay)``."""

from __future__ import annotations

import numpy as np

from ember.optim.foreach import effective_grad
from ember.optim.optimizer import Optimizer
from ember.tensor.backend import get_array_module
from ember.tensor.tensor import Tensor


class Adagrad(Optimizer):
    """``sum += g^2``, ``p -= clr * g / (sqrt(sum) + eps)``. As in torch, the state (with
    ``initial_accumulator_value``) exists from construction on."""

    _uses_step = True

    def __init__(
        self,
        params,
        lr=1e-2,
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        fused: bool | None = None,
    ):
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= lr_decay:
            raise ValueError(f"Invalid lr_decay value: {lr_decay}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not 0.0 <= initial_accumulator_value:
            raise ValueError(
                f"Invalid initial_accumulator_value value: {initial_accumulator_value}"
            )
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        defaults = {
            "lr": lr,
            "lr_decay": lr_decay,
            "eps": eps,
            "weight_decay": weight_decay,
            "initial_accumulator_value": initial_accumulator_value,
            "foreach": foreach,
            "maximize": maximize,
            "fused": fused,
        }
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                self._init_state(group, p, self.state[p])

    def _state_names(self, group: dict) -> tuple:
        return ("sum",)

    def _init_state(self, group: dict, p: Tensor, state: dict) -> None:
        xp = get_array_module(p.data)
        state["step"] = Tensor(np.zeros((), dtype=np.float32))
        state["sum"] = Tensor(xp.full_like(p.data, group["initial_accumulator_value"]))

    def _make_kernel(self, group: dict, step, fresh: bool, xp):
        lr, lr_decay, eps = float(group["lr"]), float(group["lr_decay"]), float(group["eps"])
        wd, maximize = float(group["weight_decay"]), group["maximize"]
        clr = lr / (1 + (step - 1) * lr_decay)

        def kernel(p, g, acc, t0, t1):
            g = effective_grad(xp, p, g, wd, maximize, t0)
            xp.multiply(g, g, out=t1)
            acc += t1
            xp.sqrt(acc, out=t1)
            t1 += eps
            xp.multiply(g, -clr, out=t0)
            t0 /= t1
            p += t0

        return kernel
