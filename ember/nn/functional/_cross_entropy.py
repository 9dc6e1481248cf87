"""Cross-entropy as ONE fused Function: log-softmax and the negative log-likelihood in a single
raw-array pass over (M, C) logits, because it sits on the hot path of every classifier.

Forward: one batch-wide shift (the global max: NumPy's per-row max over short rows costs more
than the rest of the loss; rows far below it are redone around their own max), one shifted copy
of the logits, the picked (and, with label smoothing, the weighted row sum of the) shifted
logits, ``exp`` in place, the row sums as a matrix-vector product; what is kept is the
exponentials and their row sums. Backward: ``grad = scale * (k * softmax - q)`` written into one
fresh array, where ``q`` is the (smoothed, weighted) target distribution and ``k`` its row sum;
the one-hot part is a fancy-indexed subtraction, never a dense one-hot.

Under ``create_graph`` backward switches to the same formula written with Tensor ops on the
saved input, so double backward works (the composite ``log_softmax`` + ``nll_loss`` in the tests
is the oracle for both).
"""

from __future__ import annotations

import numpy as np

from ember.autograd.function import Function
from ember.autograd.grad_mode import state
from ember.cuda import cross_entropy as cuda_ce
from ember.cuda.compile import kernels_enabled
from ember.ops import index_kernels as K
from ember.tensor.backend import get_array_module
from ember.tensor.tensor import Tensor

# A row whose exponentials sum below this under the batch-wide shift is recomputed around its
# own max (it sits more than ~16 below the batch max: float32 would start losing digits).
_TINY = 1e-7


def work(a):
    """Half-precision arrays are computed in float32 (as PyTorch accumulates them)."""
    return a.astype(np.float32) if a.dtype.itemsize < 4 else a


class IndexTarget:
    """Class-index targets checked and prepared once (shared by cross_entropy and nll_loss).

    ``y``: the targets with ignored entries replaced by class 0 (safe to index with);
    ``valid``: float mask of the non-ignored entries, or None when none is ignored;
    ``wy``: the class weight of each entry, or None without ``weight``;
    ``denom``: what ``reduction='mean'`` divides by (the summed weights of the valid entries).
    """

    __slots__ = ("y", "valid", "wy", "denom")

    def __init__(self, y, num_classes: int, weight, ignore_index: int, dtype, op: str):
        xp = get_array_module(y)
        if y.dtype != np.int64:
            y = y.astype(np.int64)
        lo, hi = K.bounds(y)
        valid = None
        if y.size and lo <= ignore_index <= hi:
            keep = y != ignore_index
            y = xp.where(keep, y, 0)
            valid = keep.astype(dtype)
            lo, hi = K.bounds(y)
        if y.size and (lo < 0 or hi >= num_classes):
            bad = hi if hi >= num_classes else lo
            raise IndexError(
                f"{op}: target {bad} is out of bounds for input with {num_classes} classes"
            )
        self.y, self.valid = y, valid
        self.wy = None if weight is None else weight[y]
        if self.wy is not None:
            coef = self.wy if valid is None else self.wy * valid
            self.denom = float(coef.sum())
        else:
            self.denom = float(y.size if valid is None else valid.sum())

    def coef(self):
        """Per-entry factor of the NLL term (weight times validity), or None for all ones."""
        if self.wy is None:
            return self.valid
        return self.wy if self.valid is None else self.wy * self.valid


class CrossEntropy(Function):
    """Fused ``nll(log_softmax(x), target)`` with label smoothing on 2-D logits (M, C).

    ``target`` is an :class:`IndexTarget` or a float (M, C) array of class probabilities;
    ``weight`` a (C,) array or None (a constant: torch gives it no gradient either).
    """

    def __init__(self, target, weight, smoothing: float, reduction: str, x: Tensor):
        self.target, self.weight = target, weight
        self.eps, self.reduction = float(smoothing), reduction
        self.prob = not isinstance(target, IndexTarget)
        self._x, self._x_version = x, x._vc[0]  # only for double backward
        self.dtype = x.data.dtype

    # ------------------------------------------------------------------ forward
    def forward(self, x):
        xp = get_array_module(x)
        self.fused = (
            xp is not np and kernels_enabled() and cuda_ce.supports(x, self.weight, self.prob)
        )
        if self.fused:  # ember/cuda/cross_entropy.cu: keeps only the per-row log-sum-exp
            return self._forward_kernel(x)
        w = work(x)
        if not w.flags.c_contiguous:  # p (and so the gradient) must be C-ordered
            w = xp.ascontiguousarray(w)
        m_rows, c = w.shape
        eps, weight = self.eps, self.weight
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            # One shift for the whole batch: NumPy's per-row max over short rows costs more
            # than the rest of the loss. Rows far below it are redone with their own max.
            p = w - (w.max() if w.size else w.dtype.type(0))  # the one (M, C) array
            if self.prob:
                tw = self._target_weights(w.dtype, c)
                picked = xp.einsum("ij,ij->i", tw, p)
            else:
                tgt = self.target
                self.flat = xp.arange(0, m_rows * c, c) + tgt.y  # (row, y) in the flat array
                picked = p.reshape(-1)[self.flat]
                if eps:
                    smooth = p @ (xp.ones(c, w.dtype) if weight is None else weight)
            xp.exp(p, out=p)
            s = p @ xp.ones(c, w.dtype)
            low = s < _TINY
            corr = self._rescale_rows(w, p, s, low, xp) if m_rows and bool(low.any()) else 0
            lse = xp.log(s)
            lse += corr  # the log-sum-exp minus the batch-wide shift
            if self.prob:
                self.row_sum = tw.sum(axis=1)
                loss = lse * self.row_sum - picked
                denom = float(m_rows)
            else:
                loss = lse - picked  # -log p[y]
                if tgt.wy is not None:
                    loss *= tgt.wy
                if eps:
                    total = float(c) if weight is None else weight.sum()
                    loss *= 1.0 - eps
                    loss += (lse * total - smooth) * (eps / c)
                if tgt.valid is not None:
                    loss *= tgt.valid
                denom = tgt.denom
            self.denom = denom
            if self.reduction == "none":
                out = loss
            elif self.reduction == "sum":
                out = loss.sum()
            else:
                out = loss.sum() / w.dtype.type(denom)
        self.save_for_backward(p, s)  # softmax = p / s, all that backward needs
        return out.astype(x.dtype, copy=False)

    def _forward_kernel(self, x):
        tgt = self.target
        loss, lse = cuda_ce.cross_entropy_forward(x, tgt.y, tgt.valid, self.eps)
        self.denom = tgt.denom
        if self.reduction == "sum":
            loss = loss.sum()
        elif self.reduction == "mean":
            loss = loss.sum() / np.float32(tgt.denom)
        self.save_for_backward(x, lse)
        return loss.astype(x.dtype, copy=False)

    @staticmethod
    def _rescale_rows(w, p, s, low, xp):
        """Rows whose exponentials (nearly) underflowed under the shared shift: recompute them
        around their own max; returns the correction to add to their log-sum-exp."""
        rows = xp.nonzero(low)[0]
        sub = w[rows]
        top = sub.max(axis=1, keepdims=True)
        e = xp.exp(sub - top)
        p[rows] = e
        s[rows] = e.sum(axis=1)
        corr = xp.zeros(s.shape, w.dtype)
        corr[rows] = top[:, 0] - w.max()
        return corr

    def _target_weights(self, dtype, c: int):
        """The smoothed, class-weighted target distribution ``q`` (kept for backward)."""
        t = self.target.astype(dtype, copy=False)
        if self.eps:
            t = t * (1.0 - self.eps) + self.eps / c
        if self.weight is not None:
            t = t * self.weight
        self.tw = t
        return t

    # ----------------------------------------------------------------- backward
    def _scale(self, g):
        """The upstream gradient per row (or a scalar), divided for 'mean'."""
        s = g if self.reduction == "none" else g.reshape(())
        if self.reduction == "mean":  # nothing counted (all ignored): zero gradient, as torch
            s = s / s.dtype.type(self.denom) if self.denom else s * 0
        return s

    def backward(self, g):
        if state.enabled:
            return self._backward_graph(g)
        if self.fused:  # saved (logits, lse): the kernel writes the gradient in one pass
            x, lse = self.saved_tensors
            scale = self._scale(work(g.data))
            tgt = self.target
            return Tensor(
                cuda_ce.cross_entropy_backward(x.data, tgt.y, lse.data, scale, tgt.valid, self.eps)
            )
        p, s = self.saved_tensors
        p, s = p.data, s.data
        xp = get_array_module(p)
        m_rows, c = p.shape
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            scale = self._scale(work(g.data))
            if self.prob:
                grad = p * (self.row_sum / s)[:, None]
                grad -= self.tw
                grad *= scale[:, None] if scale.ndim else scale
            else:
                grad = self._index_grad(p, s, scale, xp, m_rows, c)
        return Tensor(grad.astype(self.dtype, copy=False))

    def _index_grad(self, p, s, scale, xp, m_rows: int, c: int):
        tgt, eps = self.target, self.eps
        a1 = 1.0 - eps if tgt.wy is None else tgt.wy * (1.0 - eps)
        if tgt.valid is not None:
            scale = scale * tgt.valid
        if not eps:  # one pass: grad = scale * w[y] * (softmax - onehot)
            a = a1 * scale
            grad = p * (a / s)[:, None]
            grad.reshape(-1)[self.flat] -= a
            return grad
        total = float(c) if self.weight is None else self.weight.sum()
        k = a1 + (eps / c) * total
        grad = p * (k / s)[:, None]
        grad -= (eps / c) if self.weight is None else (eps / c) * self.weight
        grad.reshape(-1)[self.flat] -= a1
        grad *= scale[:, None] if scale.ndim else scale
        return grad

    def _backward_graph(self, g):
        """The same gradient with Tensor ops on the input, so it can be differentiated."""
        from ember.ops.nn_ops import softmax

        self.saved_tensors  # noqa: B018 - raises when the graph was already freed
        x = self._x
        if x._vc[0] != self._x_version:
            raise RuntimeError(
                "one of the variables needed for gradient computation has been modified by an "
                f"inplace operation: the logits of {self.name()}"
            )
        xp = get_array_module(x.data)
        m_rows, c = x.data.shape
        dt = x.data.dtype
        if self.prob:
            q, k = self.tw, self.row_sum
            valid = None
        else:
            tgt = self.target
            a1 = (1.0 - self.eps) * (xp.ones(m_rows, dt) if tgt.wy is None else tgt.wy)
            q = xp.zeros((m_rows, c), dt)
            q[xp.arange(m_rows), tgt.y] = a1
            total = float(c) if self.weight is None else self.weight.sum()
            k = a1 + (self.eps / c) * total
            if self.eps:
                q += (self.eps / c) if self.weight is None else (self.eps / c) * self.weight
            valid = tgt.valid
        scale = g if self.reduction == "none" else g.reshape(())
        if self.reduction == "mean":
            scale = scale / self.denom if self.denom else scale * 0
        if valid is not None:
            scale = scale * Tensor(valid.astype(dt, copy=False))
        if scale.data.ndim:
            scale = scale.reshape(m_rows, 1)
        probs = softmax(x, 1)
        k_t = Tensor(xp.asarray(k, dtype=dt).reshape(m_rows, 1))
        return (probs * k_t - Tensor(q.astype(dt, copy=False))) * scale

    def _release(self) -> None:
        super()._release()
        self._x = None
