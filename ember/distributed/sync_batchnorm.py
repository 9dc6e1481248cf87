"""SyncBatchNorm: batch normalisation with the statistics of the global batch (all ranks).

Forward: each rank computes its per-channel count, mean and centred sum of squares (M2); one
allgather brings everyone's, and Chan's parallel formula combines them in float64 (exact to
rounding, no cancellation, unlike sum/sum-of-squares). Backward: one allreduce of the two
per-channel sums the batch-norm gradient needs (sum(g) and sum(g * (x - mean))), then the same
closed form as ``ember.nn.functional.normalization``'s fused batch norm, with the global count.
Weight and bias gradients stay local: DistributedDataParallel averages them like any other.
The running statistics are updated with the global statistics (unbiased variance over the
global count), so every rank keeps the same buffers.

In eval mode, or with one process, it is plain BatchNorm.
"""

from __future__ import annotations

import math

import numpy as np

from ember.autograd.function import Function, once_differentiable
from ember.nn.functional import normalization as N
from ember.nn.layers.normalization import _BatchNorm
from ember.ops.pointwise import quiet, to_float32
from ember.tensor.backend import get_array_module
from ember.tensor.tensor import Tensor

__all__ = ["SyncBatchNorm", "convert_sync_batchnorm"]


class SyncBatchNormFn(Function):
    """(N, C, *) -> normalised with the global per-channel statistics."""

    def __init__(self, comm, eps: float):
        self.comm, self.eps = comm, eps

    def name(self) -> str:
        return "SyncBatchNormBackward"

    def forward(self, x, weight, bias):
        xp = get_array_module(x)
        n, c, L = x.shape[0], x.shape[1], math.prod(x.shape[2:])  # noqa: N806
        x2 = to_float32(x).reshape(n, c * L)
        wd, m = x2.dtype, n * L
        self.b_dtype = None if bias is None else bias.dtype
        with quiet():
            if m:
                mean = N._channel_sum(xp, x2.reshape(n, c, L)) / m
                xc = x2 - N._row(xp, mean, L)
                m2 = N._channel_dot(xp, xc.reshape(n, c, L), xc.reshape(n, c, L))
            else:
                mean = m2 = xp.zeros(c, wd)
            local = np.concatenate(
                [[float(m)], _host(mean).astype(np.float64), _host(m2).astype(np.float64)]
            )
            every = self.comm.allgather(local)  # (ranks, 1 + 2C)
            counts, means, m2s = every[:, :1], every[:, 1 : 1 + c], every[:, 1 + c :]
            total = counts.sum()
            if total <= 1:
                raise ValueError(
                    f"SyncBatchNorm: Expected more than 1 value per channel when "
                    f"training, got {int(total)} over all ranks"
                )
            gmean = (counts * means).sum(axis=0) / total
            gm2 = m2s.sum(axis=0) + (counts * (means - gmean) ** 2).sum(axis=0)
            gvar = gm2 / total
            self.count = int(total)
            self.mean = xp.asarray(gmean.astype(wd))
            self.var = xp.asarray(gvar.astype(wd))
            rstd = xp.asarray((1.0 / np.sqrt(gvar + self.eps)).astype(wd))
            self.rstd = rstd
            self.save_for_backward(x, weight)
            if not m:
                return xp.empty(x.shape, x.dtype)
            out = x2 - N._row(xp, self.mean, L)
            scale = rstd if weight is None else rstd * N._cast(weight, wd)
            out *= N._row(xp, scale, L)
            if bias is not None:
                out += N._row(xp, N._cast(bias, wd), L)
        return N._cast(out.reshape(x.shape), x.dtype)

    @once_differentiable
    def backward(self, g):
        x, w = self.saved_tensors
        x, g, w = x.data, g.data, None if w is None else w.data
        xp = get_array_module(x)
        need_x, need_w, need_b = self.needs_input_grad
        n, c, L = x.shape[0], x.shape[1], math.prod(x.shape[2:])  # noqa: N806
        x2 = to_float32(x).reshape(n, c * L)
        g2 = to_float32(g).reshape(n, c * L)
        wd = x2.dtype
        with quiet():
            if n * L:
                sum_g = N._channel_sum(xp, g2.reshape(n, c, L))
                xc = x2 - N._row(xp, self.mean, L)
                sum_gxc = N._channel_dot(xp, g2.reshape(n, c, L), xc.reshape(n, c, L))
            else:
                sum_g = sum_gxc = xp.zeros(c, wd)
                xc = x2
            dw = N._cast(sum_gxc * self.rstd, w.dtype) if need_w else None
            db = N._cast(sum_g, self.b_dtype) if need_b else None
            dx = None
            if need_x:  # the input gradient needs the sums over the global batch
                sums = np.concatenate([_host(sum_g), _host(sum_gxc)]).astype(np.float64)
                self.comm.allreduce(sums, "sum")
                gs, gsx = (xp.asarray(a.astype(wd)) for a in (sums[:c], sums[c:]))
                total = self.count
                rstd = self.rstd
                k = rstd if w is None else rstd * N._cast(w, wd)
                xc *= N._row(xp, rstd * rstd * gsx / -total, L)
                xc += g2
                xc -= N._row(xp, gs / total, L)
                xc *= N._row(xp, k, L)
                dx = N._cast(xc.reshape(x.shape), x.dtype)
        return tuple(None if a is None else Tensor(a) for a in (dx, dw, db))


def _host(a):
    return a if isinstance(a, np.ndarray) else a.get()


def _update_running(module, fn: SyncBatchNormFn, factor: float) -> None:
    """running = (1 - f) * running + f * global statistic (unbiased variance), in place."""
    total = fn.count
    for buf, stat in (
        (module.running_mean, fn.mean),
        (module.running_var, fn.var * (total / max(total - 1, 1))),
    ):
        if buf is None:
            continue
        arr = buf.data
        arr *= 1.0 - factor
        arr += N._cast(stat * factor, arr.dtype)
        buf._vc[0] += 1


class SyncBatchNorm(_BatchNorm):
    """BatchNorm over the batch of every rank (torch.nn.SyncBatchNorm). ``process_group``
    is an Ember communicator (default: ``world()``)."""

    _ranks = tuple(range(2, 9))
    _layout = "(N, C, *)"

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        process_group=None,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        self.process_group = process_group

    def _comm(self):
        if self.process_group is None:
            from ember.distributed.comm import world

            return world()
        return self.process_group

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        comm = self._comm()
        use_batch = self.training or (self.running_mean is None and self.running_var is None)
        if not use_batch or comm.size == 1:
            return super().forward(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.data += 1
            self.num_batches_tracked._vc[0] += 1
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked.item())
        N._check_batch_norm(
            input, self.running_mean, self.running_var, self.weight, self.bias, "SyncBatchNorm"
        )
        fn = SyncBatchNormFn(comm, self.eps)
        out = fn.apply(input, self.weight, self.bias)
        if self.training and self.track_running_stats:
            _update_running(self, fn, factor)
        return out

    @classmethod
    def convert_sync_batchnorm(cls, module, process_group=None):
        return convert_sync_batchnorm(module, process_group)


def convert_sync_batchnorm(module, process_group=None):
    """``module`` with every BatchNorm1d/2d/3d replaced by a SyncBatchNorm holding the same
    parameters, buffers, training mode and requires_grad (returns the new root)."""
    out = module
    if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNorm):
        out = SyncBatchNorm(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
            process_group,
        )
        if module.affine:
            out.weight = module.weight
            out.bias = module.bias
        out.running_mean = module.running_mean
        out.running_var = module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.training = module.training
    for name, child in list(module._modules.items()):
        if child is not None:
            new = convert_sync_batchnorm(child, process_group)
            if new is not child:
                setattr(out, name, new)
    return out
