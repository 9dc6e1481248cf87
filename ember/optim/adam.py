"""Adam and AdamW (torch.optim.Adam / AdamW): moment estimates with bias correction,
optional AMSGrad, L2 (Adam) or decoupled (AdamW) weight decay."""

from __future__ import annotations

import numpy as np

from ember.cuda import multi_tensor as cuda_mt
from ember.cuda.compile import kernels_enabled
from ember.optim.foreach import effective_grad, lerp_
from ember.optim.optimizer import Optimizer
from ember.tensor.backend import get_array_module
from ember.tensor.tensor import Tensor


class Adam(Optimizer):
    """``m = b1 m + (1-b1) g``, ``v = b2 v + (1-b2) g^2``,
    ``p -= lr / (1-b1^t) * m / (sqrt(v) / sqrt(1-b2^t) + eps)``, in torch's operation order."""

    _uses_step = True

    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
    ):
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        defaults = {
            "lr": lr,
            "betas": (float(betas[0]), float(betas[1])),
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
            "maximize": maximize,
            "foreach": foreach,
            "fused": fused,
            "decoupled_weight_decay": decoupled_weight_decay,
        }
        super().__init__(params, defaults)

    def _state_names(self, group: dict) -> tuple:
        if group["amsgrad"]:
            return ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
        return ("exp_avg", "exp_avg_sq")

    def _init_state(self, group: dict, p: Tensor, state: dict) -> None:
        xp = get_array_module(p.data)
        state["step"] = Tensor(np.zeros((), dtype=np.float32))
        state["exp_avg"] = Tensor(xp.zeros_like(p.data))
        state["exp_avg_sq"] = Tensor(xp.zeros_like(p.data))
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = Tensor(xp.zeros_like(p.data))

    def _make_kernel(self, group: dict, step, fresh: bool, xp):
        lr = float(group["lr"])
        beta1, beta2 = (float(b) for b in group["betas"])
        eps, wd = float(group["eps"]), float(group["weight_decay"])
        amsgrad, maximize = group["amsgrad"], group["maximize"]
        decoupled = group.get("decoupled_weight_decay", False)
        step_size = lr / (1 - beta1**step)
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        keep = 1 - lr * wd

        def kernel(p, g, m, v, *rest):
            if amsgrad:
                vmax, t0, t1 = rest
            else:
                t0, t1 = rest
            if decoupled:
                if wd != 0:
                    p *= keep
                g = effective_grad(xp, p, g, 0.0, maximize, t0)
            else:
                g = effective_grad(xp, p, g, wd, maximize, t0)
            lerp_(xp, m, g, 1 - beta1, t1)
            v *= beta2
            xp.multiply(g, 1 - beta2, out=t1)
            t1 *= g
            v += t1
            if amsgrad:
                xp.maximum(vmax, v, out=vmax)
                v = vmax
            xp.sqrt(v, out=t1)
            t1 /= bias_correction2_sqrt
            t1 += eps
            xp.multiply(m, -step_size, out=t0)  # the gradient is no longer needed
            t0 /= t1
            p += t0

        if xp is np or not kernels_enabled():
            return kernel

        def fused(p, g, m, v, vmax=None):  # ember/cuda/multi_tensor.cu: one launch
            cuda_mt.adam_step_(
                p, g, m, v, step=step, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                weight_decay=wd, decoupled=decoupled, maximize=maximize, max_exp_avg_sq=vmax,
            )  # fmt: skip

        return cuda_mt.attach(kernel, fused)


class AdamW(Adam):
    """Adam with decoupled weight decay: ``p *= 1 - lr * weight_decay`` before the update."""

    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
    ):
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            foreach=foreach,
            maximize=maximize,
            fused=fused,
            decoupled_weight_decay=True,
        )

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True
