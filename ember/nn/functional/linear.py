"""linear and bilinear.

``linear`` is one fused Function: one GEMM against ``weight.T`` (BLAS reads the transpose in
place) with the bias added in place, and a backward of two GEMMs and one sum. Leading batch
dims are folded into the GEMM's rows first: NumPy's stacked matmul with a transposed operand
leaves BLAS and is orders of magnitude slower. Backward is written with Tensor ops (matmul,
sum), so double backward works; without create_graph it runs on raw arrays (ember.ops.parallel's
threaded gemm).
"""

from __future__ import annotations

import numpy as np

from ember.autograd import autocast_state as _amp
from ember.autograd.autocast_state import state as _autocast
from ember.autograd.engine import Deferred, deferring
from ember.autograd.function import Function
from ember.autograd.grad_mode import state
from ember.ops.linalg import matmul
from ember.ops.parallel import GEMM_MIN_MACS, gemm, get_num_threads, help_active, submit
from ember.ops.promotion import check_same_device
from ember.tensor.tensor import Tensor

_RAW = (np.dtype(np.float32), np.dtype(np.float64))


class _Linear(Function):
    def forward(self, x, w, b):
        ng = self.needs_input_grad
        self.save_for_backward(x if ng[1] else None, w if ng[0] else None)
        self.x_shape = x.shape
        x2 = x.reshape(-1, x.shape[-1]) if x.ndim != 2 else x
        if b is not None and x.dtype.kind == "f" and x.dtype.itemsize >= 4 and b.dtype == x.dtype:
            out = gemm(x2, w.T, b)  # large products: row blocks on the CPU threads, + bias
        else:
            out = gemm(x2, w.T)
            if out.dtype != x.dtype:  # ml_dtypes' bfloat16 matmul answers in float32
                out = out.astype(x.dtype)
            if b is not None:
                out += b
        return out.reshape(x.shape[:-1] + (w.shape[0],)) if x.ndim != 2 else out

    def backward(self, g):
        x, w = self.saved_tensors
        ng = self.needs_input_grad
        out_f = g.data.shape[-1]
        if not state.enabled and type(g.data) is np.ndarray and g.data.dtype in _RAW:
            return self._backward_raw(g.data, x, w, out_f)
        g2 = g.reshape(-1, out_f) if g.ndim != 2 else g
        gx = gw = gb = None
        if ng[0]:
            gx = matmul(g2, w)
            if len(self.x_shape) != 2:
                gx = gx.reshape(self.x_shape)
        if ng[1]:
            x2 = x.reshape(-1, self.x_shape[-1]) if len(self.x_shape) != 2 else x
            gw = matmul(g2.transpose(0, 1), x2)
        if ng[2]:
            gb = g2.sum(0)
        return gx, gw, gb

    def _backward_raw(self, g, x, w, out_f):
        """No create_graph: the same three products on raw arrays, the bias gradient as a
        ones-row GEMM (a NumPy column sum over 2048 rows is 3x slower), all through gemm.

        When the weight (and bias) are leaves of a plain backward and the input gradient is
        needed too, the two independent products run at once, each whole on its own core: the
        weight's (and bias') as a Task on a pool thread, returned as ``Deferred`` (the engine
        delivers it after the last node), the input's here. Measured on the quiet 2-core
        machine against splitting each product over both cores: mlp step 4.8 -> 4.5 ms, gpt
        106 -> 101 ms; computing the input gradient split first and leaving the weight's to
        the pool thread measured slower (5.1 and 110 ms)."""
        ng = self.needs_input_grad
        g2 = g.reshape(-1, out_f)
        gx = gw = gb = None
        task = None
        if ng[1]:
            x2 = x.data.reshape(-1, self.x_shape[-1])
            big = g2.shape[0] * out_f * x2.shape[1] >= GEMM_MIN_MACS  # else not worth a thread
            edges = self.next_edges
            if big and ng[0] and edges[1][0] is None and x2.dtype == g2.dtype and deferring():
                with_b = ng[2] and edges[2][0] is None
                task = submit(_param_grads(g2, x2, out_f, with_b))
                if task is not None:
                    gw = Deferred(task, 0)
                    if with_b:
                        gb = Deferred(task, 1)
        if ng[0]:
            threads = None if task is None else max(1, get_num_threads() - 1)
            gx = Tensor(gemm(g2, w.data, None, threads).reshape(self.x_shape))
        if ng[1] and gw is None:
            gw = Tensor(gemm(g2.T, x2) if x2.dtype == g2.dtype else g2.T @ x2)
        if ng[2] and gb is None:
            gb = Tensor(_bias_grad(g2, out_f))
        return gx, gw, gb


def _bias_grad(g2, out_f, threads=None):
    return gemm(np.ones((1, g2.shape[0]), g2.dtype), g2, None, threads).reshape(out_f)


# Rows of g and x per step of a deferred weight gradient: between steps the pool thread
# helps the caller's parallel regions (ember.ops.parallel.help_active). Fixed steps, so the
# sum is the same whichever thread computes it.
K_STEP = 512


def _param_grads(g2, x2, out_f, with_b: bool):
    """The task computing the weight gradient (and the bias gradient with ``with_b``): the
    product over the batch rows in steps of K_STEP, summed in order."""

    rows = g2.shape[0]
    step = K_STEP if g2.dtype in _RAW else rows  # half products: one rounding, as torch's

    def run(threads):
        gw = gemm(g2[:step].T, x2[:step], None, threads)
        for lo in range(step, rows, step):
            help_active()
            gw += gemm(g2[lo : lo + step].T, x2[lo : lo + step], None, threads)
        return (gw, _bias_grad(g2, out_f, threads)) if with_b else (gw,)

    return run


def _check(input, weight, bias, name: str) -> None:
    if not isinstance(input, Tensor) or not isinstance(weight, Tensor):
        raise TypeError(
            f"{name}: expected Tensors, got {type(input).__name__} and {type(weight).__name__}"
        )
    if weight.data.ndim not in (1, 2):
        raise RuntimeError(
            f"{name}: expected a 1D or 2D weight, got shape {tuple(weight.data.shape)}"
        )
    if input.data.ndim == 0 or input.data.shape[-1] != weight.data.shape[-1]:
        raise RuntimeError(
            f"{name}: expected input with last dimension "
            f"{weight.data.shape[-1]}, got input of shape "
            f"{tuple(input.data.shape)} (weight of shape "
            f"{tuple(weight.data.shape)})"
        )
    if input.data.dtype != weight.data.dtype:
        raise RuntimeError(
            f"{name}: expected input and weight to have the same dtype, got "
            f"{input.dtype} and {weight.dtype}"
        )
    check_same_device(input, weight, name)
    if bias is not None:
        if not isinstance(bias, Tensor):
            raise TypeError(
                f"{name}: expected bias to be a Tensor or None, got {type(bias).__name__}"
            )
        if bias.data.dtype != input.data.dtype:
            raise RuntimeError(
                f"{name}: expected input and bias to have the same dtype, got "
                f"{input.dtype} and {bias.dtype}"
            )
        check_same_device(input, bias, name)


def linear(input, weight, bias=None):
    """y = input @ weight.T + bias, with input (*, in_features) and weight (out, in)."""
    if _autocast.enabled:
        return _amp.call(_amp.LOW, linear, input, weight, bias)
    _check(input, weight, bias, "linear")
    if weight.data.ndim == 1 or input.data.ndim == 1:
        out = matmul(input, weight.t() if weight.data.ndim == 2 else weight)
        return out if bias is None else out + bias
    if bias is not None and bias.data.shape not in ((weight.data.shape[0],), (1,), ()):
        raise RuntimeError(
            f"linear: expected bias of shape ({weight.data.shape[0]},), got "
            f"{tuple(bias.data.shape)}"
        )
    if bias is not None and bias.data.shape != (weight.data.shape[0],):
        return _Linear().apply(input, weight, None) + bias
    return _Linear().apply(input, weight, bias)


def bilinear(input1, input2, weight, bias=None):
    """y[..., o] = input1 @ weight[o] @ input2 + bias[o], weight (out, in1, in2)."""
    if _autocast.enabled:
        return _amp.call(_amp.PROMOTE, bilinear, input1, input2, weight, bias)
    if not all(isinstance(t, Tensor) for t in (input1, input2, weight)):
        raise TypeError("bilinear: expected Tensors for input1, input2 and weight")
    w = weight.data.shape
    s1, s2 = tuple(input1.data.shape), tuple(input2.data.shape)
    if len(w) != 3 or not s1 or not s2 or s1[-1] != w[1] or s2[-1] != w[2] or s1[:-1] != s2[:-1]:
        raise RuntimeError(
            f"bilinear: expected inputs (*, {w[1] if len(w) == 3 else '?'}) and "
            f"(*, {w[2] if len(w) == 3 else '?'}) with the same batch shape for "
            f"weight of shape {tuple(w)}, got {s1} and {s2}"
        )
    out_f, in1, in2 = w
    lead = s1[:-1]
    x1 = input1.reshape(-1, in1)
    x2 = input2.reshape(-1, in2)
    # (B, in1) @ (in1, out * in2) -> (B, out, in2), then contract in2 with input2
    t = matmul(x1, weight.permute(1, 0, 2).reshape(in1, out_f * in2)).reshape(-1, out_f, in2)
    y = matmul(t, x2.unsqueeze(-1)).squeeze(-1)
    if bias is not None:
        y = y + bias
    return y.reshape(lead + (out_f,))


__all__ = ["linear", "bilinear"]
