"""Normalisation: batch_norm, layer_norm, group_norm, rms_norm (torch.nn.functional's forms).

batch_norm and layer_norm sit on the hot path of the reference workloads (BatchNorm2d after
every conv, LayerNorm twice per transformer block), so each is one fused Function: a raw-array
forward with one or two full-size temporaries, and the closed-form backward

    dx = rstd / N * (N * dxhat - sum(dxhat) - xhat * sum(dxhat * xhat))

on raw arrays. float16/bfloat16 inputs get float32 statistics. Under ``create_graph`` the
backward switches to the same formula in Tensor ops, so double backward works. The composites
(``batch_norm_composite``, ``layer_norm_composite``), built from ember ops, are the oracles the
tests hold the fused versions to.
"""

from __future__ import annotations

import math

import numpy as np

from ember.autograd import autocast_state as _amp
from ember.autograd.autocast_state import state as _autocast
from ember.autograd.function import Function
from ember.autograd.grad_mode import no_grad, state
from ember.cpu import batchnorm as cpu_bn
from ember.ops.parallel import run_blocks
from ember.ops.pointwise import quiet, to_float32
from ember.ops.shape import reshape
from ember.ops.unary import rsqrt
from ember.tensor import dtypes
from ember.tensor.backend import get_array_module
from ember.tensor.tensor import Tensor

__all__ = ["batch_norm", "layer_norm", "group_norm", "rms_norm", "instance_norm"]


from ember.nn.functional._group_norm import GroupNormFn, fused_kernels
from ember.nn.functional._layer_norm import LayerNormFn  # noqa: F401 (re-exported)
from ember.nn.functional._norm_common import (  # noqa: F401 (SyncBatchNorm reaches them here)
    _cast,
    _channel_dot,
    _channel_sum,
    _norm_backward_graph,
    _row,
    _rowdot,
    _shape,
    eps_of,
)


class BatchNormFn(Function):
    """y = (x - mean) * rstd * w + b per channel of an (N, C, *) input.

    Training normalises with the batch statistics (kept on the node as ``mean``/``var`` for
    the running-stat update); eval with the given running statistics (raw arrays).

    The per-channel elementwise steps run on the (N, C*L) view against a (C*L,) row of
    per-channel values: NumPy broadcasts a long contiguous row about 1.7x faster than a
    (C, 1) column, which makes it walk the array in L-long pieces.

    float32 NumPy inputs with L >= _BN_MIN_L go through ember/cpu's channel loops instead
    (``_forward_fused``/``_backward_fused``): a channel's passes stay in cache, and its sums
    are float64 across rows, so they are more accurate than the NumPy passes (the oracle).
    """

    def __init__(self, training: bool, eps: float, running_mean=None, running_var=None):
        self.training, self.eps = training, eps
        self.rm, self.rv = running_mean, running_var
        self.mean_lo = None  # from ember/cpu's forward: what rounding the mean to float32 lost

    def name(self) -> str:
        return "NativeBatchNormBackward"

    def forward(self, x, weight, bias):
        xp = get_array_module(x)
        n, c, L = x.shape[0], x.shape[1], math.prod(x.shape[2:])  # noqa: N806
        x2 = to_float32(x).reshape(n, c * L)
        wd, m = x2.dtype, n * L
        self.b_dtype = None if bias is None else bias.dtype
        self.save_for_backward(x, weight)
        if m == 0:
            self.mean = self.var = self.rstd = xp.zeros(c, wd)
            return xp.empty(x.shape, x.dtype)
        fused = cpu_bn.channel_kernels() if L >= _BN_MIN_L and cpu_bn.supports(x2) else None
        if fused is not None:  # ember/cpu: a channel block at a time
            out = self._forward_fused(fused[0], x2.reshape(n, c, L), weight, bias)
            return _cast(out.reshape(x.shape), x.dtype)
        with quiet():
            if self.training:
                mean = _channel_sum(xp, x2.reshape(n, c, L)) / m
                out = x2 - _row(xp, mean, L)
                out3 = out.reshape(n, c, L)
                self.var = _channel_dot(xp, out3, out3) / m
                var = self.var
            else:
                mean, var = self.rm.astype(wd), self.rv.astype(wd)  # copies: buffers move
            rstd = xp.sqrt(var + eps_of(self.eps, wd))
            xp.reciprocal(rstd, out=rstd)
            scale = rstd if weight is None else rstd * _cast(weight, wd)
            if self.training:
                out *= _row(xp, scale, L)
                if bias is not None:
                    out += _row(xp, _cast(bias, wd), L)
            else:
                shift = -mean * scale
                if bias is not None:
                    shift += _cast(bias, wd)
                out = x2 * _row(xp, scale, L)
                out += _row(xp, shift, L)
        self.mean, self.rstd = mean, rstd
        return _cast(out.reshape(x.shape), x.dtype)

    def backward(self, g):
        x, w = self.saved_tensors
        if state.enabled:  # create_graph: the same formula, recorded
            view = (x.data.shape[1],) + (1,) * (x.data.ndim - 2)
            axes = (0,) + tuple(range(2, x.data.ndim))
            stats = None if self.training else (self.mean.reshape(view), self.rstd.reshape(view))
            return _norm_backward_graph(
                g, x, w, axes, view, view[:1], self.eps, stats, self.needs_input_grad
            )
        return tuple(
            None if a is None else Tensor(a)
            for a in self._backward_arrays(g.data, x.data, None if w is None else w.data)
        )

    def _backward_arrays(self, g, x, w):
        xp = get_array_module(x)
        need_x, need_w, need_b = self.needs_input_grad
        n, c, L = x.shape[0], x.shape[1], math.prod(x.shape[2:])  # noqa: N806
        x2 = to_float32(x).reshape(n, c * L)
        g2 = to_float32(g).reshape(n, c * L)
        wd, m = x2.dtype, n * L
        if m == 0:
            return (
                xp.zeros(x.shape, x.dtype) if need_x else None,
                xp.zeros(w.shape, w.dtype) if need_w else None,
                xp.zeros(c, self.b_dtype) if need_b else None,
            )
        mean, rstd = self.mean, self.rstd
        fused = None
        if L >= _BN_MIN_L and cpu_bn.supports(g2, x2, mean, rstd):
            fused = cpu_bn.channel_kernels()
        if fused is not None:
            dx, dw, db = self._backward_fused(
                fused[1], g2.reshape(n, c, L), x2.reshape(n, c, L), None if w is None else w
            )
            return (
                None if dx is None else _cast(dx.reshape(x.shape), x.dtype),
                None if dw is None else _cast(dw, w.dtype),
                None if db is None else _cast(db, self.b_dtype),
            )
        dx = dw = db = None
        with quiet():
            sum_g = _channel_sum(xp, g2.reshape(n, c, L))
            if need_w or (need_x and self.training):
                xc = x2 - _row(xp, mean, L)
                sum_gxc = _channel_dot(xp, g2.reshape(n, c, L), xc.reshape(n, c, L))
                if need_w:
                    dw = _cast(sum_gxc * rstd, w.dtype)
            if need_b:
                db = _cast(sum_g, self.b_dtype)
            if need_x:
                k = rstd if w is None else rstd * _cast(w, wd)
                if self.training:  # k * (g - mean(g) - xc * rstd^2 * mean(g * xc))
                    xc *= _row(xp, rstd * rstd * sum_gxc / -m, L)
                    xc += g2
                    xc -= _row(xp, sum_g / m, L)
                    xc *= _row(xp, k, L)
                    dx = xc
                else:
                    dx = g2 * _row(xp, k, L)
                dx = _cast(dx.reshape(x.shape), x.dtype)
        return dx, dw, db

    def _forward_fused(self, kernel, x3, weight, bias):
        """The forward of ember/cpu's channel loops on a float32 (N, C, L) array: statistics
        and output in one call per channel block (training), or the output alone (eval)."""
        n, c, L = x3.shape  # noqa: N806
        f32 = np.float32
        x3 = np.ascontiguousarray(x3)
        out = np.empty_like(x3)
        wv = np.ones(c, f32) if weight is None else np.ascontiguousarray(weight, f32)
        bv = np.zeros(c, f32) if bias is None else np.ascontiguousarray(bias, f32)
        e, training = f32(self.eps), self.training
        var = np.empty(c, f32)  # written in training only
        mean_lo = np.empty(c, f32) if training else np.zeros(c, f32)
        if training:
            mean, rstd = np.empty(c, f32), np.empty(c, f32)
        else:
            mean = self.rm.astype(f32)  # copies: buffers move
            with quiet():
                rstd = np.sqrt(self.rv.astype(f32) + e)
                np.reciprocal(rstd, out=rstd)
        run_blocks(
            lambda lo, hi: kernel(x3, wv, bv, e, training, out, mean, mean_lo, var, rstd, lo, hi),
            c, _bn_channels(n * L, c), BN_THREADS,
        )  # fmt: skip
        self.mean, self.mean_lo, self.rstd = mean, mean_lo, rstd
        if training:
            self.var = var
        return out

    def _backward_fused(self, kernel, g3, x3, w):
        """(dx, dw, db) float32 from ember/cpu's channel loops (None where not wanted)."""
        need_x, need_w, need_b = self.needs_input_grad
        n, c, L = x3.shape  # noqa: N806
        g3, x3 = np.ascontiguousarray(g3), np.ascontiguousarray(x3)
        mean, rstd = np.ascontiguousarray(self.mean), np.ascontiguousarray(self.rstd)
        mean_lo = np.zeros(c, np.float32) if self.mean_lo is None else self.mean_lo
        wv = np.ones(c, np.float32) if w is None else np.ascontiguousarray(w, np.float32)
        dx = np.empty_like(g3) if need_x else g3  # g3: a placeholder the kernel never writes
        dw, db = np.empty(c, np.float32), np.empty(c, np.float32)
        need_sums = need_w or need_b or (need_x and self.training)
        training = self.training
        run_blocks(
            lambda lo, hi: kernel(
                g3, x3, mean, mean_lo, rstd, wv, training, need_x, need_sums, dx, dw, db, lo, hi
            ),
            c, _bn_channels(n * L, c), BN_THREADS,
        )  # fmt: skip
        return (dx if need_x else None, dw if need_w else None, db if need_b else None)


# ember/cpu's batch norm runs blocks of whole channels of about _BN_BLOCK elements (1 MB) on
# the CPU threads: a small input is one block on the calling thread; the cnn's (64, 32, 32, 32)
# is 8 blocks of 4 channels. Each channel's sums are its own, so the bits do not depend on it.
# Its rows are L long: an (N, C) input (L = 1) walks each channel a strided element at a time,
# 2.3x slower than NumPy's path for (4096, 256) f+b, which it therefore keeps; from L = 4 on
# the loops win ((1024, 256, 4) 4.9 vs 6.4 ms, (64, 256, 64) 1.0 vs 1.9 ms).
BN_THREADS = None  # the default thread count
_BN_BLOCK = 1 << 18
_BN_MIN_L = 4


def _bn_channels(m: int, c: int) -> int:
    return max(1, min(c, _BN_BLOCK // max(m, 1)))


def _verify_batch_size(shape: tuple, op: str) -> None:
    per_channel = shape[0] * math.prod(shape[2:])
    if per_channel == 1:
        raise ValueError(
            f"{op}: Expected more than 1 value per channel when training, got input size {shape}"
        )


def _check_batch_norm(input, running_mean, running_var, weight, bias, op: str) -> None:
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}(): argument 'input' must be Tensor, not {type(input).__name__}")
    if input.data.ndim < 2:
        raise ValueError(
            f"{op}: expected input with at least 2 dims (N, C, *), got shape {_shape(input)}"
        )
    if input.data.dtype not in dtypes.FLOATING_NP:
        raise RuntimeError(f"{op}: expected a floating point input, got {input.dtype.name}")
    c = input.data.shape[1]
    for name, t in (
        ("running_mean", running_mean),
        ("running_var", running_var),
        ("weight", weight),
        ("bias", bias),
    ):
        if t is not None and _shape(t) != (c,):
            raise RuntimeError(
                f"{op}: {name} should have shape ({c},) (one value per channel "
                f"of the input of shape {_shape(input)}), got {_shape(t)}"
            )


def _update_running(fn: BatchNormFn, running_mean, running_var, momentum, m: int) -> None:
    """running = (1 - momentum) * running + momentum * batch stat (unbiased var), in place."""
    with quiet():
        for buf, stat in (
            (running_mean, fn.mean),
            (running_var, None if running_var is None else fn.var * (m / (m - 1))),
        ):
            if buf is None:
                continue
            arr = buf.data
            arr *= 1.0 - momentum
            arr += _cast(stat * momentum, arr.dtype)
            buf._vc[0] += 1


def batch_norm(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Normalise each channel of an (N, C, *) input; in training, with the batch statistics
    (and update the running statistics in place), otherwise with the running statistics."""
    _check_batch_norm(input, running_mean, running_var, weight, bias, "batch_norm")
    if training:
        _verify_batch_size(_shape(input), "batch_norm")
        if eps <= 0.0:
            raise ValueError(f"batch_norm eps must be positive during training, but got {eps}")
    elif eps < 0.0:
        raise ValueError(f"batch_norm eps must be non-negative, but got {eps}")
    if not training and (running_mean is None or running_var is None):
        raise RuntimeError(
            "batch_norm: running_mean and running_var must be given when "
            "training=False (evaluation uses the running statistics)"
        )
    fn = BatchNormFn(
        training,
        eps,
        None if training else running_mean.data,
        None if training else running_var.data,
    )
    out = fn.apply(input, weight, bias)
    m = input.data.size // input.data.shape[1] if input.data.shape[1] else 0
    if training and m > 0 and (running_mean is not None or running_var is not None):
        _update_running(fn, running_mean, running_var, 0.0 if momentum is None else momentum, m)
    return out


# ------------------------------------------------------------------------ layer norm
def _normalized_shape(normalized_shape) -> tuple:
    if isinstance(normalized_shape, (int, np.integer)):
        return (int(normalized_shape),)
    return tuple(int(s) for s in normalized_shape)


def check_trailing(input: Tensor, normalized_shape: tuple, op: str) -> None:
    """The input's trailing dims must be ``normalized_shape``."""
    shape = _shape(input)
    k = len(normalized_shape)
    if k == 0 or len(shape) < k or shape[len(shape) - k :] != normalized_shape:
        raise RuntimeError(
            f"{op}: expected input with trailing shape {normalized_shape}, got shape {shape}"
        )


def _check_affine(t, normalized_shape: tuple, name: str, op: str) -> None:
    if t is not None and _shape(t) != normalized_shape:
        raise RuntimeError(
            f"{op}: {name} should have shape {normalized_shape} (the normalized "
            f"shape), got {_shape(t)}"
        )


def layer_norm(
    input: Tensor,
    normalized_shape,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """Normalise over the trailing ``normalized_shape`` dims, then scale and shift."""
    return _layer_norm(input, normalized_shape, weight, bias, eps, "layer_norm")


def _layer_norm(input, normalized_shape, weight, bias, eps, op: str) -> Tensor:
    if _autocast.enabled:  # layer/group/rms norm statistics run in float32 under autocast
        return _amp.call(_amp.FP32, _layer_norm, input, normalized_shape, weight, bias, eps, op)
    normalized_shape = _normalized_shape(normalized_shape)
    check_trailing(input, normalized_shape, op)
    if input.data.dtype not in dtypes.FLOATING_NP:
        raise RuntimeError(f"{op}: expected a floating point input, got {input.dtype.name}")
    _check_affine(weight, normalized_shape, "weight", op)
    _check_affine(bias, normalized_shape, "bias", op)
    return LayerNormFn(normalized_shape, eps).apply(input, weight, bias)


# ------------------------------------------------------------------------ group norm
def group_norm(
    input: Tensor,
    num_groups: int,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """Normalise each group of C / num_groups channels, then a per-channel scale and shift:
    float32 NumPy inputs in one fused Function (``_group_norm.GroupNormFn``, ember/cpu's
    loops), others as layer norm over (N, G, -1) followed by the affine in Tensor ops."""
    return _group_norm(input, num_groups, weight, bias, eps, "group_norm")


def _group_norm(input, num_groups, weight, bias, eps, op: str) -> Tensor:
    if _autocast.enabled:
        return _amp.call(_amp.FP32, _group_norm, input, num_groups, weight, bias, eps, op)
    shape = _shape(input)
    if len(shape) < 2:
        raise RuntimeError(
            f"{op}: Expected at least 2 dimensions for input tensor but "
            f"received {len(shape)} (shape {shape})"
        )
    n, c = shape[0], shape[1]
    if num_groups <= 0 or c % num_groups:
        raise RuntimeError(
            f"{op}: Expected number of channels in input to be divisible by "
            f"num_groups, but got input of shape {shape} and "
            f"num_groups={num_groups}"
        )
    _verify_batch_size((n * c // num_groups, num_groups) + shape[2:], op)
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and _shape(t) != (c,):
            raise RuntimeError(
                f"{op}: {name} should have shape ({c},) (one value per channel "
                f"of the input of shape {shape}), got {_shape(t)}"
            )
    kernels = fused_kernels(
        input.data,
        None if weight is None else weight.data,
        None if bias is None else bias.data,
        num_groups,
    )
    if kernels is not None:  # float32 NumPy: ember/cpu's (sample, group) loops
        return GroupNormFn(num_groups, eps, kernels).apply(input, weight, bias)
    if input.data.size == 0:
        grouped = reshape(input, shape)
    else:
        grouped = reshape(input, (n, num_groups, -1))
        grouped = LayerNormFn((grouped.data.shape[2],), eps).apply(grouped, None, None)
    out = reshape(grouped, shape)
    view = (c,) + (1,) * (len(shape) - 2)
    if weight is not None:
        out = out * reshape(weight, view)
    if bias is not None:
        out = out + reshape(bias, view)
    return out


# -------------------------------------------------------------------- instance norm
def _tile(arr, n: int):
    return get_array_module(arr).tile(arr, n)


def instance_norm(
    input: Tensor,
    running_mean: Tensor | None = None,
    running_var: Tensor | None = None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    use_input_stats: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Normalise each (sample, channel) plane: batch norm of the (1, N*C, *) view."""
    shape = _shape(input)
    if len(shape) < 3:
        raise ValueError(
            f"instance_norm: expected input with at least 3 dims (N, C, *), got shape {shape}"
        )
    if use_input_stats and math.prod(shape[2:]) == 1:
        raise ValueError(
            f"instance_norm: Expected more than 1 spatial element when training, "
            f"got input size {shape}"
        )
    n, c = shape[0], shape[1]
    rm = None if running_mean is None else Tensor(_tile(running_mean.data, n))
    rv = None if running_var is None else Tensor(_tile(running_var.data, n))
    flat = reshape(input, (1, n * c) + shape[2:])
    out = reshape(batch_norm(flat, rm, rv, None, None, use_input_stats, momentum, eps), shape)
    if use_input_stats and n:
        with no_grad():  # the running statistics average over the batch
            for buf, new in ((running_mean, rm), (running_var, rv)):
                if buf is not None:
                    buf.data[...] = new.data.reshape(n, c).mean(axis=0)
                    buf._vc[0] += 1
    view = (c,) + (1,) * (len(shape) - 2)
    if weight is not None:
        out = out * reshape(weight, view)
    if bias is not None:
        out = out + reshape(bias, view)
    return out


# -------------------------------------------------------------------------- rms norm
def rms_norm(
    input: Tensor, normalized_shape, weight: Tensor | None = None, eps: float | None = None
) -> Tensor:
    """x / sqrt(mean(x^2) + eps) over the trailing dims, times ``weight``; ``eps=None`` is
    the machine epsilon of the compute dtype (float32 for half inputs), as in torch."""
    return _rms_norm(input, normalized_shape, weight, eps, "rms_norm")


def _rms_norm(input, normalized_shape, weight, eps, op: str) -> Tensor:
    if _autocast.enabled:
        return _amp.call(_amp.FP32, _rms_norm, input, normalized_shape, weight, eps, op)
    normalized_shape = _normalized_shape(normalized_shape)
    check_trailing(input, normalized_shape, op)
    _check_affine(weight, normalized_shape, "weight", op)
    if input.data.dtype not in dtypes.FLOATING_NP:
        raise RuntimeError(f"{op}: expected a floating point input, got {input.dtype.name}")
    work = input
    if input.data.dtype.itemsize < 4:
        work = input.to(dtypes.float32)
    if eps is None:
        eps = float(np.finfo(work.data.dtype).eps)
    axes = tuple(range(input.data.ndim - len(normalized_shape), input.data.ndim))
    out = work * rsqrt((work * work).mean(axes, keepdim=True) + eps)
    if out.data.dtype != input.data.dtype:
        out = out.to(input.dtype)
    return out if weight is None else out * weight
