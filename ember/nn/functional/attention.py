"""Scaled dot-product attention as ONE fused Function (torch's
``F.scaled_dot_product_attention``), and torch's ``multi_head_attention_forward``.

Forward works on raw arrays: ``q * scale @ k^T`` (one batched GEMM), then every mask is folded
into ONE subtraction (``bias = shift - float_mask``, ``+inf`` where a bool or causal mask
forbids), ``exp`` in place, row sums as a matrix-vector product, and ``E @ v`` scaled by
``1 / rowsum`` afterwards, so the (L, S) probabilities are never normalised in a separate pass.
The shift is one batch-wide maximum (NumPy's per-row max over short rows costs as much as the
exponential); rows that sink far below it are recomputed around their own max. Fully masked
rows give zeros, as torch's (safe) softmax does.

Backward uses FlashAttention's identity ``rowsum(P * dP) = rowsum(dO * O)`` (a cheap (L, Ev)
reduction instead of one over (L, S)), and applies ``1 / rowsum`` to the small (L, d) operands
and results rather than to the (L, S) matrices.
Under ``create_graph`` backward is written with Tensor ops instead (double backward works).
"""

from __future__ import annotations

import math

import numpy as np

from ember.autograd import autocast_state as _amp
from ember.autograd.autocast_state import state as _autocast
from ember.autograd.function import Function
from ember.autograd.grad_mode import state
from ember.nn.functional import _causal_attention as _causal
from ember.nn.functional._cross_entropy import work
from ember.ops.promotion import check_same_device
from ember.tensor import dtypes
from ember.tensor.backend import get_array_module
from ember.tensor.random import draw_uniform
from ember.tensor.tensor import Tensor

__all__ = ["scaled_dot_product_attention", "multi_head_attention_forward"]

_TINY = 1e-20  # a row whose exponentials sum below this is recomputed around its own max
_TRIL: dict = {}


def _tril(xp, tgt: int, src: int):
    """The causal (top-left aligned) allowed-mask, cached per shape."""
    key = (xp.__name__, tgt, src)
    m = _TRIL.get(key)
    if m is None:
        m = _TRIL[key] = xp.tril(xp.ones((tgt, src), dtype=bool))
    return m


def _sum_to(arr, shape):
    """Reduce a broadcast raw gradient back to ``shape``."""
    if arr.shape == tuple(shape):
        return arr
    from ember.ops.reduction import sum_to_shape

    return sum_to_shape(Tensor(arr), tuple(shape)).data


def _t(a, xp):
    """``a^T`` (last two dims) as a C-contiguous array: NumPy's stacked matmul leaves BLAS when
    its SECOND operand is a transposed view (a transposed first operand is fine)."""
    return xp.ascontiguousarray(xp.swapaxes(a, -1, -2))


def _rowsum(a, xp):
    return a @ xp.ones(a.shape[-1], a.dtype)


class ScaledDotProductAttention(Function):
    """``softmax(q k^T * scale + mask) @ v`` with dropout on the probabilities.

    Inputs: q, k, v and an optional float (additive) mask Tensor; ``allowed`` is the combined
    bool/causal mask (True = may attend) as a raw array or None, ``keep`` the dropout mask
    already scaled by 1 / (1 - p), or None.
    """

    def __init__(self, allowed, scale: float, keep, causal: bool = False):
        self.allowed, self.scale, self.keep = allowed, scale, keep
        self.causal = causal  # row-blocked causal path (ember.nn.functional._causal_attention)

    def forward(self, q, k, v, fmask):
        xp = get_array_module(q)
        qw, kw, vw = work(q), work(k), work(v)
        if self.causal:
            out, blocks = _causal.forward(self, qw, kw, vw, self.allowed, q.dtype)
            self.save_for_backward(q, k, v, None, None, out, *blocks)
            return out
        s = (qw * self.scale) @ _t(kw, xp)
        bias = self._bias(s, fmask, xp)
        with np.errstate(invalid="ignore", over="ignore"):
            if np.broadcast_shapes(s.shape, getattr(bias, "shape", ())) == s.shape:
                s -= bias
            else:
                s = s - bias
            xp.exp(s, out=s)
            sums = _rowsum(s, xp)
            low = sums < _TINY
            if bool(low.any()):
                self._rescue(s, sums, low, qw, kw, bias, self.scale, xp)
            dead = sums == 0  # every key masked out: torch's safe softmax gives 0
            r = 1.0 / xp.where(dead, 1.0, sums).astype(s.dtype)
            if bool(dead.any()):
                r[dead] = 0
                self.dead = dead
        e = s if self.keep is None else s * self.keep
        out = e @ vw
        out *= r[..., None]
        out = out.astype(q.dtype, copy=False)
        self.r = r
        self.save_for_backward(q, k, v, fmask, s, out)
        return out

    def _bias(self, s, fmask, xp):
        """What to subtract from the scores: the shift minus the float mask, +inf where
        attention is not allowed."""
        top = s.max() if s.size else s.dtype.type(0)
        bias = top
        if fmask is not None:
            fm = work(fmask).astype(s.dtype, copy=False)
            fin = fm[xp.isfinite(fm)]
            if fin.size:
                bias = top + max(float(fin.max()), 0.0)
            bias = bias - fm
        if self.allowed is not None:
            bias = xp.where(self.allowed, bias, xp.inf).astype(s.dtype, copy=False)
        return bias

    @staticmethod
    def _rescue(s, sums, low, qw, kw, bias, scale: float, xp):
        """Redo the rows that (nearly) underflowed, each around its own maximum."""
        idx = xp.nonzero(low)
        full = s.shape[:-2]
        qrow = xp.broadcast_to(qw, full + qw.shape[-2:])[idx]
        krow = xp.broadcast_to(kw, full + kw.shape[-2:])[idx[:-1]]
        logits = xp.einsum("ne,nse->ns", qrow * scale, krow)
        if getattr(bias, "ndim", 0):
            logits -= xp.broadcast_to(bias, s.shape)[idx]
        top = logits.max(axis=-1, keepdims=True)
        top[~xp.isfinite(top)] = 0
        e = xp.exp(logits - top)
        s[idx] = e
        sums[idx] = e.sum(axis=-1)

    def backward(self, g):
        if state.enabled:
            return self._backward_graph(g)
        saved = [t if t is None else t.data for t in self.saved_tensors]
        q, k, v, fmask, e, out = saved[:6]
        ng = self.needs_input_grad
        g, out = work(g.data), work(out)
        qw, kw, vw = work(q), work(k), work(v)
        if self.causal:
            grads = _causal.backward(self, g, out, qw, kw, vw, saved[6:], ng)
            return tuple(
                None if a is None else Tensor(a.astype(dt, copy=False))
                for a, dt in zip(grads + (None,), (q.dtype, k.dtype, v.dtype, None))
            )
        xp = get_array_module(e)
        r, keep = self.r, self.keep
        c = xp.einsum("...i,...i->...", g, out)  # rowsum(P * dP)
        dq = dk = dv = dm = None
        if ng[2]:
            ek = e if keep is None else e * keep
            dv = _sum_to(xp.swapaxes(ek, -1, -2) @ (g * r[..., None]), v.shape)
        if not (ng[0] or ng[1] or ng[3]):
            return None, None, dv, None
        d = g @ _t(vw, xp)  # dP
        if keep is not None:
            d *= keep
        d -= c[..., None]
        d *= e  # dS / r: the scores' gradient up to the row factor r
        rs = (r * self.scale)[..., None]
        if ng[0]:
            dq = d @ kw
            dq *= rs
            dq = _sum_to(dq, q.shape)
        if ng[1]:
            dk = _sum_to(xp.swapaxes(d, -1, -2) @ (qw * rs), k.shape)
        if ng[3]:
            dm = _sum_to(d * r[..., None], fmask.shape)
        return tuple(
            None if a is None else Tensor(a.astype(dt, copy=False))
            for a, dt in (
                (dq, q.dtype),
                (dk, k.dtype),
                (dv, v.dtype),
                (dm, None if fmask is None else fmask.dtype),
            )
        )

    def _backward_graph(self, g):
        """The same gradients with Tensor ops on the saved inputs (double backward)."""
        from ember.ops.reduction import sum_to_shape

        q, k, v, fmask = self.saved_tensors[:4]
        ng = self.needs_input_grad
        p = attention_probs(q, k, fmask, self.allowed, self.scale, getattr(self, "dead", None))
        keep = None if self.keep is None else Tensor(self.keep.astype(q.data.dtype))
        pd = p if keep is None else p * keep
        dv = sum_to_shape(pd.transpose(-1, -2).matmul(g), v.data.shape) if ng[2] else None
        dp = g.matmul(v.transpose(-1, -2).contiguous())
        if keep is not None:
            dp = dp * keep
        ds = p * (dp - (dp * p).sum(-1, keepdim=True))
        dq = sum_to_shape(ds.matmul(k) * self.scale, q.data.shape) if ng[0] else None
        dk = (
            sum_to_shape(ds.transpose(-1, -2).matmul(q) * self.scale, k.data.shape)
            if ng[1]
            else None
        )
        dm = sum_to_shape(ds, fmask.data.shape) if ng[3] else None
        return dq, dk, dv, dm


def attention_probs(q: Tensor, k: Tensor, fmask, allowed, scale: float, dead=None) -> Tensor:
    """``softmax(q k^T * scale + mask)`` from plain ember ops (the differentiable composite).
    Rows listed in ``dead`` (fully masked) are zero, with a zero gradient."""
    from ember.ops.nn_ops import softmax
    from ember.ops.select import where

    sc = (q * scale).matmul(k.transpose(-1, -2).contiguous())
    if fmask is not None:
        sc = sc + fmask
    if allowed is not None:
        sc = sc.masked_fill(Tensor(~allowed), float("-inf"))
    if dead is None:
        return softmax(sc, -1)
    rows = Tensor(dead[..., None])
    return where(rows, 0.0, softmax(where(rows, 0.0, sc), -1))


# ------------------------------------------------------------------------- public API
def _check_qkv(q, k, v) -> None:
    op = "scaled_dot_product_attention"
    for name, t in (("query", q), ("key", k), ("value", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: {name} must be a Tensor, got {type(t).__name__}")
    if not (q.data.dtype == k.data.dtype == v.data.dtype):
        raise RuntimeError(
            f"{op}: Expected query, key, and value to have the same dtype, but "
            f"got query.dtype: {q.dtype.name} key.dtype: {k.dtype.name} and "
            f"value.dtype: {v.dtype.name} instead."
        )
    if q.data.dtype not in dtypes.FLOATING_NP:
        raise RuntimeError(
            f"{op}: expected floating point query, key and value, got {q.dtype.name}"
        )
    qs, ks, vs = q.data.shape, k.data.shape, v.data.shape
    if min(len(qs), len(ks), len(vs)) < 2:
        raise RuntimeError(
            f"{op}: query, key and value must be at least 2-D, got shapes "
            f"{tuple(qs)}, {tuple(ks)} and {tuple(vs)}"
        )
    if qs[-1] != ks[-1] or ks[-2] != vs[-2]:
        raise RuntimeError(
            f"{op}: query {tuple(qs)}, key {tuple(ks)} and value {tuple(vs)} "
            "must have shapes (..., L, E), (..., S, E) and (..., S, Ev)"
        )


def _check_batch(q, k, v) -> None:
    qs, ks, vs = q.data.shape, k.data.shape, v.data.shape
    try:
        np.broadcast_shapes(qs[:-2], ks[:-2], vs[:-2])
    except ValueError:
        raise RuntimeError(
            f"scaled_dot_product_attention: the batch dimensions of query "
            f"{tuple(qs)}, key {tuple(ks)} and value {tuple(vs)} cannot be "
            "broadcast"
        ) from None


def _repeat_heads(t: Tensor, rep: int) -> Tensor:
    """torch's ``repeat_interleave(rep, dim=-3)`` for grouped-query attention."""
    shape = t.data.shape
    h = shape[-3]
    expanded = t.unsqueeze(-3).expand(*shape[:-3], h, rep, *shape[-2:])
    return expanded.reshape(*shape[:-3], h * rep, *shape[-2:])


def _masks(attn_mask, is_causal: bool, q: Tensor, tgt: int, src: int):
    """Split ``attn_mask`` into (float mask Tensor or None, allowed bool array or None)."""
    op = "scaled_dot_product_attention"
    xp = get_array_module(q.data)
    fmask = allowed = None
    if is_causal:
        if attn_mask is not None:
            raise RuntimeError(f"{op}: Explicit attn_mask should not be set when is_causal=True")
        allowed = _tril(xp, tgt, src)
    elif attn_mask is not None:
        if not isinstance(attn_mask, Tensor):  # a NumPy array or a list: on the query's device
            from ember.tensor.creation import as_tensor

            attn_mask = as_tensor(attn_mask, device=q.device)
        check_same_device(q, attn_mask, op)
        if attn_mask.device != q.device:  # a CPU scalar joins the query's device, as in torch
            attn_mask = attn_mask.to(q.device)
        shape = attn_mask.data.shape
        try:
            np.broadcast_shapes(shape, (tgt, src))
        except ValueError:
            raise RuntimeError(
                f"{op}: attn_mask of shape {tuple(shape)} cannot be broadcast "
                f"to the attention scores' (L, S) = ({tgt}, {src})"
            ) from None
        if attn_mask.data.dtype == np.bool_:
            allowed = attn_mask.data
        elif attn_mask.data.dtype in dtypes.FLOATING_NP:
            fmask = attn_mask if attn_mask.data.dtype == q.data.dtype else attn_mask.to(q.dtype)
        else:
            raise RuntimeError(
                f"{op}: Expected attn_mask dtype to be bool or float or to match "
                f"query dtype, got {attn_mask.dtype.name}"
            )
    return fmask, allowed


def scaled_dot_product_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask=None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale=None,
    enable_gqa: bool = False,
) -> Tensor:
    """``softmax(query @ key^T * scale + mask) @ value`` (torch semantics).

    A bool ``attn_mask`` marks with True the positions that take part; a float one is added to
    the scores. ``is_causal`` uses the top-left aligned lower triangle (also when L != S).
    Dropout on the probabilities draws from Ember's default generator.
    """
    if _autocast.enabled:
        return _amp.call(
            _amp.LOW,
            scaled_dot_product_attention,
            query,
            key,
            value,
            attn_mask=attn_mask,
            dropout_p=dropout_p,
            is_causal=is_causal,
            scale=scale,
            enable_gqa=enable_gqa,
        )
    _check_qkv(query, key, value)
    if enable_gqa and query.data.ndim >= 3:
        hq, hk = query.data.shape[-3], key.data.shape[-3]
        if hq % hk or hq % value.data.shape[-3]:
            raise RuntimeError(
                "scaled_dot_product_attention: with enable_gqa the number of "
                f"query heads ({hq}) must be a multiple of the key/value heads "
                f"({hk}, {value.data.shape[-3]})"
            )
        if hk != hq:
            key = _repeat_heads(key, hq // hk)
        if value.data.shape[-3] != hq:
            value = _repeat_heads(value, hq // value.data.shape[-3])
    _check_batch(query, key, value)
    tgt, e = query.data.shape[-2:]
    src = key.data.shape[-2]
    scale = 1.0 / math.sqrt(e) if scale is None else float(scale)
    fmask, allowed = _masks(attn_mask, is_causal, query, tgt, src)
    keep = _keep_mask(query, key, value, fmask, allowed, dropout_p)
    if tgt == 0 or src == 0 or query.data.size == 0 or key.data.size == 0:
        p = attention_probs(query, key, fmask, allowed, scale)
        return p.matmul(value)
    if is_causal and keep is None and _causal.cuda_ok(query.data, key.data, value.data):
        return _causal.CudaCausal(scale).apply(query, key, value)  # ember/cuda kernels
    causal = (
        is_causal
        and keep is None
        and type(query.data) is np.ndarray
        and query.data.shape[:-2] == key.data.shape[:-2] == value.data.shape[:-2]
    )
    return ScaledDotProductAttention(allowed, scale, keep, causal).apply(query, key, value, fmask)


def _keep_mask(q, k, v, fmask, allowed, p: float):
    """The dropout keep-mask over the probabilities, scaled by 1 / (1 - p) (None: no dropout)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if p == 0.0:
        return None
    xp = get_array_module(q.data)
    shape = np.broadcast_shapes(
        q.data.shape[:-2],
        k.data.shape[:-2],
        v.data.shape[:-2],
        (fmask.data.shape if fmask is not None else ())[:-2],
        (allowed.shape if allowed is not None else ())[:-2],
    )
    shape = shape + (q.data.shape[-2], k.data.shape[-2])
    dt = work(q.data).dtype
    if p == 1.0:
        return xp.zeros(shape, dt)
    draw = draw_uniform(shape, np.float64 if dt == np.float64 else np.float32, q.device)
    return xp.where(draw >= p, dt.type(1.0 / (1.0 - p)), dt.type(0.0))


def multi_head_attention_forward(*args, **kwargs):
    """torch's ``F.multi_head_attention_forward`` (see ``ember.nn.functional._multi_head``)."""
    from ember.nn.functional._multi_head import multi_head_attention_forward as mha

    return mha(*args, **kwargs)
