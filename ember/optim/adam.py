"""Adam and AdamW (torch.optim.Adam / AdamW): moment estimates with bias correction,
optional AMSGrad, L2 (Adam) or decoupled (AdamW) weight decay."""

from __future__ import annotations

import numpy as np

from ember.cpu import adam as cpu_adam
from ember.cuda import multi_tensor as cuda_mt
from ember.cuda.compile import kernels_enabled
from ember.ops.parallel import get_num_threads, run_blocks, split
from ember.optim import foreach
from ember.optim.foreach import effective_grad, lerp_
from ember.optim.optimizer import Optimizer
from ember.tensor.backend import get_array_module
from ember.tensor.tensor import Tensor

# The fused CPU step (ember/cpu/_adam_kernels.py) runs on the calling thread below
# CPU_SPLIT_MIN elements, above it in two blocks per CPU thread. It is bound by memory
# bandwidth, so a thread wake (60-130 us) pays off late. 2 cores, one thread vs two: arrays
# in cache 393K elements 157 vs 155 us, 670K 260 vs 212, 1M 408 vs 294; arrays out of cache
# 524K 311 vs 315, 670K 442 vs 411, 1M 674 vs 588.
CPU_SPLIT_MIN = 1 << 19
CPU_BLOCK_MIN = 1 << 17


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

        if xp is np:
            return _attach_cpu(kernel, group, step_size, bias_correction2_sqrt, keep)
        if not kernels_enabled():
            return kernel

        def fused(p, g, m, v, vmax=None):  # ember/cuda/multi_tensor.cu: one launch
            cuda_mt.adam_step_(
                p, g, m, v, step=step, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                weight_decay=wd, decoupled=decoupled, maximize=maximize, max_exp_avg_sq=vmax,
            )  # fmt: skip

        return cuda_mt.attach(kernel, fused)


def _attach_cpu(kernel, group: dict, step_size: float, bias_correction2_sqrt: float, keep: float):
    """Give the NumPy kernel a fused path (ember/cpu): ``run_kernel`` calls ``run_fused(arrays)``
    first, which runs the whole step as one loop over contiguous float32 arrays and returns
    False for anything else (other dtypes, strided arrays), which then takes the NumPy path.
    The kernel is unchanged while CPU kernels are off."""
    kernels = cpu_adam.adam_step_kernels()
    if kernels is None:
        return kernel
    f32 = np.float32
    beta1, beta2 = (float(b) for b in group["betas"])
    wd = float(group["weight_decay"])
    decoupled = bool(group.get("decoupled_weight_decay", False))
    weight = 1 - beta1
    low = weight < 0.5  # lerp_'s choice of formula, on the float64 weight as there
    # every scalar rounded to float32 as NumPy rounds a Python float against a float32 array
    scalars = (
        f32(keep), f32(wd), f32(weight if low else 1 - weight), f32(beta2), f32(1 - beta2),
        f32(bias_correction2_sqrt), f32(group["eps"]), f32(-step_size),
        decoupled and wd != 0, not decoupled and wd != 0, bool(group["maximize"]), low,
    )  # fmt: skip
    fn = kernels[1] if group["amsgrad"] else kernels[0]

    def run_fused(arrays) -> bool:
        if not cpu_adam.supports(arrays):
            return False
        flats = [a.reshape(-1) for a in arrays]  # views: every array is contiguous
        n = flats[0].size
        threads = (foreach.NUM_THREADS or get_num_threads()) if n >= CPU_SPLIT_MIN else 1
        if threads == 1:
            fn(*flats, *scalars)
            return True

        def part(lo, hi):
            fn(*[a[lo:hi] for a in flats], *scalars)

        run_blocks(part, n, split(n, CPU_BLOCK_MIN, threads, per_thread=2), threads)
        return True

    kernel.run_fused = run_fused
    return kernel


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
