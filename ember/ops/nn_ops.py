"""softmax, log_softmax and the embedding lookup: the nn ops that sit on every model's hot
path (attention probabilities, the classifier's log-probabilities, token embeddings).

softmax and log_softmax subtract the row max before ``exp``, so rows around +-1000 stay
finite. Their backward takes a raw-array fast path when no graph is being built and is
written with Tensor ops under ``create_graph``, so double backward works.
"""

from __future__ import annotations

import warnings

import numpy as np

from ember.autograd import autocast_state as _amp
from ember.autograd.autocast_state import state as _autocast
from ember.autograd.function import Function
from ember.autograd.grad_mode import state
from ember.cpu import softmax as cpu_softmax
from ember.cuda import embedding as cuda_embedding
from ember.cuda import softmax as cuda_softmax
from ember.cuda.compile import kernels_enabled
from ember.ops import index_kernels as K
from ember.ops.dims import normalize_dim
from ember.ops.parallel import run_blocks, split
from ember.tensor import dtypes
from ember.tensor.backend import get_array_module
from ember.tensor.tensor import Tensor


def _work(a):
    """Half-precision inputs are computed in float32 (as PyTorch accumulates them)."""
    return a.astype(np.float32) if a.dtype.itemsize < 4 else a


def _shifted(a, axis: int):
    """``a - max(a)`` along ``axis`` in a fresh array (float32 for half inputs). A row that
    is all -inf gives NaN quietly, as in PyTorch."""
    work = _work(a)
    with np.errstate(invalid="ignore"):
        return work - work.max(axis=axis, keepdims=True)


def _kernel(xp, a, dim: int) -> bool:
    """A CUDA kernel (ember/cuda/softmax.cu) replaces the composite for this CuPy array."""
    return xp is not np and kernels_enabled() and cuda_softmax.supports(a, dim)


# Large float32/float64 arrays normalised along their last (contiguous) axis run in row blocks
# on the CPU threads (ember.ops.parallel), with the same per-row operations, so the result is
# the same bit for bit: softmax of (16, 8, 128, 128) forward 3.7 -> 2.2 ms on two cores.
# float32 ones take the fused row loops instead (ember/cpu/softmax.py) with the same blocks;
# they win at every size (forward + backward of (4, 10) 27 -> 20 us, (256, 256) 171 -> 88 us).
_BLOCKED_MIN = 1 << 17
_BLOCK_ELEMENTS = 1 << 15


def _row_blocks(a, dim: int) -> bool:
    return (
        type(a) is np.ndarray
        and a.size >= _BLOCKED_MIN
        and dim == a.ndim - 1
        and a.dtype in (np.float32, np.float64)
        and a.flags.c_contiguous
    )


def _same_rows(g, y, dim: int) -> bool:
    """The gradient can share ``y``'s row blocks (same shape and dtype, a NumPy array)."""
    return (
        _row_blocks(y, dim) and type(g) is np.ndarray and g.shape == y.shape and g.dtype == y.dtype
    )


def _by_rows(kernel, out, *arrays) -> None:
    """``kernel(out_rows, *rows)`` over blocks of the rows of same-shaped C-contiguous arrays."""
    n = out.shape[-1]
    views = [x.reshape(-1, n) for x in (out, *arrays)]
    rows = views[0].shape[0]

    def block(lo, hi):
        kernel(*(v[lo:hi] for v in views))

    run_blocks(block, rows, split(rows, max(1, _BLOCK_ELEMENTS // n)))


def _fused_rows(a, dim: int) -> bool:
    """The fused CPU row loops (ember/cpu/_softmax_kernels.py) take this array: float32 NumPy,
    normalised along its last axis, not empty (a strided one is made contiguous first)."""
    return cpu_softmax.supports(a) and a.size > 0 and dim == a.ndim - 1


def _run_fused(loop, *arrays) -> None:
    """``loop(*rows, lo, hi)`` over the rows of same-shaped C-contiguous float32 arrays (the
    output last): in row blocks on the CPU threads from ``_BLOCKED_MIN`` elements on, as the
    NumPy blocks. Each row is one call's work whatever the blocks, so the bits do not depend
    on the thread count."""
    n = arrays[0].shape[-1]
    views = [x.reshape(-1, n) for x in arrays]
    rows = views[0].shape[0]
    if arrays[0].size < _BLOCKED_MIN:
        loop(*views, 0, rows)
        return
    run_blocks(lambda lo, hi: loop(*views, lo, hi), rows, split(rows, max(1, _BLOCK_ELEMENTS // n)))


def _softmax_rows(o, a):
    np.subtract(a, a.max(axis=-1, keepdims=True), out=o)
    np.exp(o, out=o)
    o /= o.sum(axis=-1, keepdims=True)


def _log_softmax_rows(o, a):
    np.subtract(a, a.max(axis=-1, keepdims=True), out=o)
    lse = np.exp(o).sum(axis=-1, keepdims=True)
    np.log(lse, out=lse)
    o -= lse


def _softmax_grad_rows(o, g, y):
    np.multiply(g, y, out=o)
    o -= y * o.sum(axis=-1, keepdims=True)


def _log_softmax_grad_rows(o, g, y):
    p = np.exp(y)
    p *= g.sum(axis=-1, keepdims=True)
    np.subtract(g, p, out=o)


class _RowNormalized(Function):
    """softmax and log_softmax: the empty case, the CUDA kernel, the fused CPU row loops
    (float32 along the last axis), the NumPy row blocks, and the composite (``_composite`` /
    ``_grad`` in the subclasses) for everything else."""

    log = False
    rows = staticmethod(_softmax_rows)
    grad_rows = staticmethod(_softmax_grad_rows)

    def __init__(self, dim: int):
        self.dim = dim
        self.fused = False

    def forward(self, a):
        xp = get_array_module(a)
        if a.size == 0:
            y = a.copy()
        elif _kernel(xp, a, self.dim):
            self.fused = True
            y = cuda_softmax.softmax_forward(a, log=self.log)
        elif _fused_rows(a, self.dim) and (loops := cpu_softmax.row_kernels(self.log)):
            x = np.ascontiguousarray(a)
            y = np.empty_like(x)
            _run_fused(loops[0], x, y)
        elif _row_blocks(a, self.dim):
            y = np.empty_like(a)
            with np.errstate(invalid="ignore"):
                _by_rows(self.rows, y, a)
        else:
            y = self._composite(xp, a)
        self.save_for_backward(y)
        return y

    def backward(self, g):
        (y,) = self.saved_tensors
        if self.fused and not state.enabled and kernels_enabled():
            return Tensor(cuda_softmax.softmax_backward(y.data, g.data, log=self.log))
        if (
            not state.enabled
            and _fused_rows(y.data, self.dim)
            and cpu_softmax.supports(g.data)
            and g.data.shape == y.data.shape
            and (loops := cpu_softmax.row_kernels(self.log))
        ):
            yc = np.ascontiguousarray(y.data)
            out = np.empty_like(yc)
            _run_fused(loops[1], np.ascontiguousarray(g.data), yc, out)
            return Tensor(out)
        if not state.enabled and _same_rows(g.data, y.data, self.dim):
            out = np.empty_like(y.data)
            _by_rows(self.grad_rows, out, np.ascontiguousarray(g.data), y.data)
            return Tensor(out)
        return self._grad(g, y)


class Softmax(_RowNormalized):
    def _composite(self, xp, a):
        e = _shifted(a, self.dim)
        xp.exp(e, out=e)
        with np.errstate(invalid="ignore"):
            e /= e.sum(axis=self.dim, keepdims=True)
        return e.astype(a.dtype, copy=False)

    def _grad(self, g, y):
        if not state.enabled:  # plain backward: y * (g - sum(g * y)) on raw arrays
            gy = g.data * y.data
            gy -= y.data * gy.sum(axis=self.dim, keepdims=True)
            return Tensor(gy)
        return y * (g - (g * y).sum(self.dim, keepdim=True))


class LogSoftmax(_RowNormalized):
    log = True
    rows = staticmethod(_log_softmax_rows)
    grad_rows = staticmethod(_log_softmax_grad_rows)

    def _composite(self, xp, a):
        t = _shifted(a, self.dim)
        lse = xp.exp(t).sum(axis=self.dim, keepdims=True)
        xp.log(lse, out=lse)
        t -= lse
        return t.astype(a.dtype, copy=False)

    def _grad(self, g, y):
        if not state.enabled:  # plain backward: g - exp(y) * sum(g) on raw arrays
            xp = get_array_module(y.data)
            p = xp.exp(y.data)
            p *= g.data.sum(axis=self.dim, keepdims=True)
            return Tensor(g.data - p)
        from ember.ops.unary import exp

        return g - exp(y) * g.sum(self.dim, keepdim=True)


def _softmax_dim(op: str, ndim: int, dim):
    if dim is None:
        warnings.warn(
            f"Implicit dimension choice for {op} has been deprecated. Change the call "
            "to include dim=X as an argument.",
            UserWarning,
            stacklevel=3,
        )
        dim = 0 if ndim in (0, 1, 3) else 1
    return normalize_dim(dim, ndim, op)


def _prepare(input: Tensor, dtype, op: str) -> Tensor:
    if dtype is not None:
        from ember.ops.conversion import cast_to

        input = cast_to(input, dtype)
    if input.data.dtype not in dtypes.FLOATING_NP:
        raise RuntimeError(
            f"{op}: expected a floating point input, got {input.dtype.name} "
            "(pass dtype= to compute in a floating type)"
        )
    return input


def _along(fn_cls, input: Tensor, dim: int) -> Tensor:
    if input.data.ndim == 0:  # a single element: softmax 1, log_softmax 0
        from ember.ops.shape import reshape

        return reshape(fn_cls(0).apply(reshape(input, (1,))), ())
    return fn_cls(dim).apply(input)


def softmax(input: Tensor, dim=None, dtype=None, *, _stacklevel: int = 3) -> Tensor:
    """exp(x - max) / sum(exp(x - max)) along ``dim``."""
    if _autocast.enabled and dtype is None:
        return _amp.call(_amp.FP32, softmax, input, dim, _stacklevel=_stacklevel)
    input = _prepare(input, dtype, "softmax")
    return _along(Softmax, input, _softmax_dim("softmax", input.data.ndim, dim))


def log_softmax(input: Tensor, dim=None, dtype=None, *, _stacklevel: int = 3) -> Tensor:
    """x - max - log(sum(exp(x - max))) along ``dim``."""
    if _autocast.enabled and dtype is None:
        return _amp.call(_amp.FP32, log_softmax, input, dim, _stacklevel=_stacklevel)
    input = _prepare(input, dtype, "log_softmax")
    return _along(LogSoftmax, input, _softmax_dim("log_softmax", input.data.ndim, dim))


# ---------------------------------------------------------------------------- embedding
class Embedding(Function):
    """Rows of ``weight`` picked by integer indices (any shape)."""

    def __init__(self, idx, padding_idx):
        self.idx, self.padding_idx = idx, padding_idx

    def forward(self, w):
        self.num = w.shape[0]
        return get_array_module(w).take(w, self.idx, axis=0)

    def backward(self, g):
        return EmbeddingBackward(self.idx, self.num, self.padding_idx).apply(g)


class EmbeddingBackward(Function):
    """The weight gradient: each output row's gradient added into its weight row (repeated
    indices accumulate; the padding row stays zero)."""

    def __init__(self, idx, num: int, padding_idx):
        self.idx, self.num, self.padding_idx = idx, num, padding_idx

    def forward(self, g):
        xp = get_array_module(g)
        if xp is not np and kernels_enabled() and cuda_embedding.supports(g):
            # ember/cuda/embedding.cu: fp32 atomics; EMBER_DETERMINISTIC=1 takes the sorted,
            # run-to-run identical kernel
            out = cuda_embedding.embedding_backward(
                self.idx, g, self.num, deterministic=cuda_embedding.deterministic()
            )
        else:
            tail = g.shape[self.idx.ndim :]
            out = xp.zeros((self.num,) + tail, dtype=g.dtype)
            K.add_rows(out, self.idx.reshape(-1), g.reshape((self.idx.size,) + tail))
        if self.padding_idx is not None:
            out[self.padding_idx] = 0
        return out

    def backward(self, gg):
        out = Embedding(self.idx, None).apply(gg)
        if self.padding_idx is None:
            return out
        keep = (self.idx != self.padding_idx).astype(gg.data.dtype)
        return out * Tensor(keep.reshape(keep.shape + (1,) * (gg.data.ndim - 1)))


def _renorm_rows(weight: Tensor, idx, max_norm: float, norm_type: float) -> None:
    """PyTorch's embedding_renorm_: rows used by ``idx`` whose norm exceeds ``max_norm`` are
    scaled down in place (no autograd), which bumps the weight's version."""
    xp = get_array_module(weight.data)
    rows = xp.unique(idx)
    w = weight.data[rows]
    norms = (xp.abs(w) ** norm_type).sum(axis=1) ** (1.0 / norm_type)
    scale = xp.where(norms > max_norm, max_norm / (norms + 1e-7), 1.0).astype(w.dtype)
    weight.data[rows] = w * scale[:, None]
    weight._vc[0] += 1


def embedding(
    input: Tensor,
    weight: Tensor,
    padding_idx=None,
    max_norm=None,
    norm_type: float = 2.0,
    scale_grad_by_freq: bool = False,
    sparse: bool = False,
) -> Tensor:
    """``weight[input]`` with a fast scatter-add backward (torch.nn.functional.embedding)."""
    idx = input.data if isinstance(input, Tensor) else np.asarray(input)
    if idx.dtype.name not in ("int32", "int64"):
        raise RuntimeError(
            "embedding: Expected tensor for argument #1 'indices' to have one of the following "
            f"scalar types: Long, Int; but got {dtypes.from_numpy_dtype(idx.dtype)} instead"
        )
    if weight.data.ndim != 2:
        raise RuntimeError(f"embedding: 'weight' must be 2-D, got shape {list(weight.data.shape)}")
    if scale_grad_by_freq or sparse:
        raise NotImplementedError("embedding: scale_grad_by_freq and sparse are not supported")
    num = weight.data.shape[0]
    if padding_idx is not None:
        if not -num <= padding_idx < num:
            raise AssertionError("Padding_idx must be within num_embeddings")
        padding_idx %= num
    K.check_bounds(idx, num, 0, negative=False, prefix="embedding: ")
    if max_norm is not None:
        _renorm_rows(weight, idx, max_norm, norm_type)
    return Embedding(idx, padding_idx).apply(weight)


METHODS = {"softmax": softmax, "log_softmax": log_softmax}
FUNCTIONS = {"softmax": softmax, "log_softmax": log_softmax}
