"""Causal attention on NumPy in query-row blocks: the block of rows [lo, hi) only sees the keys
[0, min(hi, S)), so the masked upper triangle is (mostly) never computed.

Why: with ``is_causal`` half of the (L, S) scores are masked. Splitting the rows into about
eight blocks skips most of that half in every GEMM, ``exp`` and reduction (the work drops to
(n + 1) / 2n of the full product; 4 blocks: 62%), and the blocks are small enough to stay in
cache. The leading batch dim is also split into chunks run on the CPU threads
(``ember.ops.parallel``). The arithmetic is the fused Function's (one shift per block instead
of one per batch, underflowing rows recomputed around their own max; backward with
``rowsum(P * dP) = rowsum(dO * O)``), so results agree with it to rounding.

Used by ``ScaledDotProductAttention`` for ``is_causal=True`` without a float mask or dropout,
when q, k and v share their batch shape.

On CuPy arrays the same case goes to ``CudaCausal`` (end of file): the ember/cuda kernels, either
two cuBLAS GEMMs around the fused scale+mask+softmax or, with ``EMBER_CUDA_FLASH=1``, the
flash-style kernel that never stores the (L, S) matrix.
"""

from __future__ import annotations

import os

import numpy as np

from ember.autograd.function import Function
from ember.autograd.grad_mode import state
from ember.cuda import attention as cuda_attn
from ember.cuda import flash_attention as cuda_flash
from ember.cuda.compile import kernels_enabled
from ember.ops.parallel import run_blocks, split
from ember.tensor.backend import get_array_module
from ember.tensor.tensor import Tensor

_TINY = 1e-20  # as attention._TINY: rows summing below it are redone around their own max
_MIN_ROWS = 32  # query rows per block: smaller blocks cost more in calls than they save
# Batch chunks per thread. One: the per-chunk work is many small NumPy calls that hold the
# GIL, so more chunks only add contention (f+b of the gpt shapes on 2 threads: 4.4 ms with 1
# per thread, 5.1-6.9 ms with 2, 6.8 ms on one thread).
PER_THREAD = 1


def spans(tgt: int, src: int) -> list:
    """(lo, hi, keys) per query-row block: rows [lo, hi) attend keys [0, keys)."""
    rows = max(_MIN_ROWS, -(-tgt // 8))
    return [(lo, min(tgt, lo + rows), min(min(tgt, lo + rows), src)) for lo in range(0, tgt, rows)]


def _chunks(n0: int, ndim: int):
    """Block length over the leading batch dim (the whole array when there is none)."""
    return (1, 1) if ndim < 3 else (n0, split(n0, 1, per_thread=PER_THREAD))


def _out_like(qw, dv: int):
    """The output in q's memory order, as torch's CPU flash attention: heads made by a
    ``view(b, t, h, d).transpose(1, 2)`` get an output whose ``transpose(1, 2)`` back is
    already contiguous (the usual ``.contiguous().view(b, t, c)`` then copies nothing)."""
    if qw.ndim == 4 and qw.strides[1] < qw.strides[2]:
        b, h, t = qw.shape[:3]
        return np.empty((b, t, h, dv), qw.dtype).transpose(0, 2, 1, 3)
    return np.empty(qw.shape[:-1] + (dv,), qw.dtype)


def forward(fn, qw, kw, vw, tril, dtype):
    """out, the per-block exponentials (kept for backward) and 1 / rowsum; fills ``fn.r``."""
    tgt, src = qw.shape[-2], kw.shape[-2]
    sp = spans(tgt, src)
    batch = qw.shape[:-2]
    out = _out_like(qw, vw.shape[-1])
    rs = np.empty(qw.shape[:-1], qw.dtype)
    blocks = [np.empty(batch + (hi - lo, keys), qw.dtype) for lo, hi, keys in sp]
    scale, inf = qw.dtype.type(fn.scale), qw.dtype.type(np.inf)
    n0, per = _chunks(qw.shape[0], qw.ndim)

    def chunk(a, b):
        sl = slice(a, b) if qw.ndim >= 3 else slice(None)
        q, k, v, o, r_all = qw[sl], kw[sl], vw[sl], out[sl], rs[sl]
        kt = np.ascontiguousarray(np.swapaxes(k, -1, -2))
        qs = q * scale
        for (lo, hi, keys), blk in zip(sp, blocks):
            s = np.matmul(qs[..., lo:hi, :], kt[..., :keys], out=blk[sl])
            bias = np.where(tril[lo:hi, :keys], s.max(), inf).astype(s.dtype, copy=False)
            s -= bias
            np.exp(s, out=s)
            sums = s @ np.ones(keys, s.dtype)
            low = sums < _TINY
            if bool(low.any()):
                fn._rescue(s, sums, low, q[..., lo:hi, :], k[..., :keys, :], bias, fn.scale, np)
            r = r_all[..., lo:hi]
            np.divide(1, sums, out=r)
            ob = s @ v[..., :keys, :]
            ob *= r[..., None]
            o[..., lo:hi, :] = ob

    with np.errstate(invalid="ignore", over="ignore"):
        run_blocks(chunk, n0, per)
    fn.r = rs
    return out.astype(dtype, copy=False), blocks


def backward(fn, g, out, qw, kw, vw, blocks, ng):
    """(dq, dk, dv) in the work dtype (None where not needed)."""
    tgt, src = qw.shape[-2], kw.shape[-2]
    sp = spans(tgt, src)
    rs, scale = fn.r, fn.scale
    # *_like keeps the inputs' memory order: heads made by a transposed view get gradients
    # whose transpose back is contiguous again (no copy in the view/reshape backward)
    dq = np.empty_like(qw) if ng[0] else None
    dk = np.zeros_like(kw) if ng[1] else None
    dv = np.zeros_like(vw) if ng[2] else None
    n0, per = _chunks(qw.shape[0], qw.ndim)

    def chunk(a, b):
        sl = slice(a, b) if qw.ndim >= 3 else slice(None)
        gg, q, k, r_all = g[sl], qw[sl], kw[sl], rs[sl]
        c = np.einsum("...i,...i->...", gg, out[sl])  # rowsum(P * dP)
        vt = np.ascontiguousarray(np.swapaxes(vw[sl], -1, -2)) if (ng[0] or ng[1]) else None
        for (lo, hi, keys), blk in zip(sp, blocks):
            e, r, gb = blk[sl], r_all[..., lo:hi], gg[..., lo:hi, :]
            if ng[2]:
                dv[sl][..., :keys, :] += np.swapaxes(e, -1, -2) @ (gb * r[..., None])
            if not (ng[0] or ng[1]):
                continue
            d = gb @ vt[..., :keys]  # dP
            d -= c[..., lo:hi, None]
            d *= e  # dS / r
            rsc = (r * scale)[..., None]
            if ng[0]:
                t = d @ k[..., :keys, :]
                t *= rsc
                dq[sl][..., lo:hi, :] = t
            if ng[1]:
                dk[sl][..., :keys, :] += np.swapaxes(d, -1, -2) @ (q[..., lo:hi, :] * rsc)

    with np.errstate(invalid="ignore", over="ignore"):
        run_blocks(chunk, n0, per)
    return dq, dk, dv


# --------------------------------------------------------------------------- CUDA path
def cuda_ok(q, k, v) -> bool:
    """ember/cuda kernels take this causal attention (CuPy arrays, no mask, no dropout)."""
    if type(q) is np.ndarray or not kernels_enabled():
        return False
    if flash_enabled() and cuda_flash.supports(q, k, v):
        return True
    return (  # the GEMM path: CuPy's matmul needs a real float dtype (no bf16 bit patterns)
        q.dtype.name in ("float32", "float16")
        and q.dtype == k.dtype == v.dtype
        and q.ndim >= 2
        and q.shape[:-2] == k.shape[:-2] == v.shape[:-2]
        and q.size > 0
        and k.size > 0
    )


def flash_enabled() -> bool:
    """``EMBER_CUDA_FLASH=1``: the flash kernel (no (T, S) matrix: the memory-lean choice for
    long blocks) instead of two cuBLAS GEMMs around the fused scale+mask+softmax kernel."""
    return os.environ.get("EMBER_CUDA_FLASH", "0") == "1"


class CudaCausal(Function):
    """softmax(q k^T * scale, causal) @ v on the GPU. Forward and backward on raw arrays with
    the ember/cuda kernels; under ``create_graph`` the backward is the composite written with
    Tensor ops (double backward works)."""

    def __init__(self, scale: float):
        self.scale = scale

    def forward(self, q, k, v):
        self.flash = flash_enabled() and cuda_flash.supports(q, k, v)
        if self.flash:
            out, lse = cuda_flash.flash_attention_forward(q, k, v, self.scale)
            self.save_for_backward(q, k, v, out, lse)
        else:
            out, probs = cuda_attn.causal_attention(q, k, v, self.scale)
            self.save_for_backward(q, k, v, probs)
        return out

    def backward(self, g):
        if state.enabled:
            return self._backward_graph(g)
        saved = [t.data for t in self.saved_tensors]
        if self.flash:
            grads = cuda_flash.flash_attention_backward(
                *saved[:3], saved[3], saved[4], g.data, self.scale
            )
        else:
            grads = cuda_attn.causal_attention_backward(g.data, *saved, self.scale)
        return tuple(Tensor(a) for a in grads)

    def _backward_graph(self, g):
        from ember.nn.functional.attention import _tril, attention_probs

        q, k, v = self.saved_tensors[:3]
        tgt, src = q.data.shape[-2], k.data.shape[-2]
        p = attention_probs(q, k, None, _tril(get_array_module(q.data), tgt, src), self.scale)
        dv = p.transpose(-1, -2).matmul(g)
        dp = g.matmul(v.transpose(-1, -2).contiguous())
        ds = p * (dp - (dp * p).sum(-1, keepdim=True))
        return ds.matmul(k) * self.scale, ds.transpose(-1, -2).matmul(q) * self.scale, dv
