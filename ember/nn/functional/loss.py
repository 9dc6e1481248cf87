"""Loss functions with torch.nn.functional's names, arguments and semantics.

``cross_entropy`` runs the fused Function of ``_cross_entropy`` (it is on every classifier's hot
path); the other losses are short compositions of ember ops (so every order of gradient works),
except the two binary cross-entropies, whose elementwise Functions reproduce torch's clamped
logs and its exact gradients at the edges (``x = 0`` or ``1``, logits at 0).
"""

from __future__ import annotations

import numpy as np

from ember.autograd import autocast_state as _amp
from ember.autograd.function import Function
from ember.autograd.grad_mode import state
from ember.cpu import pointwise as cpu_pointwise
from ember.nn.functional import _reduction as R
from ember.nn.functional._cross_entropy import CrossEntropy, IndexTarget, work
from ember.ops.activation import pointwise_loop
from ember.ops.pointwise import const, quiet, scale_grad, to_float32
from ember.ops.select import clamp
from ember.tensor import dtypes
from ember.tensor.backend import get_array_module
from ember.tensor.tensor import Tensor

__all__ = [
    "cross_entropy",
    "nll_loss",
    "mse_loss",
    "l1_loss",
    "smooth_l1_loss",
    "huber_loss",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "kl_div",
]

_INDEX_DTYPES = (np.dtype(np.int64), np.dtype(np.uint8))


def _as_tensor(x, op: str) -> Tensor:
    if isinstance(x, Tensor):
        return x
    if x is None:
        raise TypeError(f"{op}: expected a Tensor, got None")
    from ember.tensor.creation import as_tensor

    return as_tensor(x)


def _float_input(x, op: str) -> Tensor:
    x = _as_tensor(x, op)
    if x.data.dtype not in dtypes.FLOATING_NP:
        raise RuntimeError(f"{op}: expected a floating point input, got {x.dtype.name}")
    return x


def _raw(t, like):
    """A constant operand (weight, pos_weight) as an array of the input's working dtype."""
    if t is None:
        return None
    arr = t.data if isinstance(t, Tensor) else np.asarray(t)
    return arr.astype(work(like).dtype, copy=False)


# ------------------------------------------------------------------------- class losses
def _class_layout(input: Tensor, op: str) -> tuple[int, int]:
    """(class dim, number of classes) of a (C,), (N, C) or (N, C, d1, ...) input."""
    nd = input.data.ndim
    if nd == 0:
        raise RuntimeError(f"{op}: expected input of shape (C,), (N, C) or (N, C, d1, ...), got ()")
    cdim = 0 if nd == 1 else 1
    return cdim, input.data.shape[cdim]


def _class_weight(weight, c: int, input: Tensor, op: str):
    if weight is None:
        return None
    w = _raw(weight, input.data)
    if w.ndim != 1 or w.shape[0] != c:
        raise RuntimeError(
            f"{op}: weight tensor should be defined either for all {c} classes or "
            f"no classes but got weight tensor of shape: {list(w.shape)}"
        )
    return w


def _index_target(input: Tensor, target: Tensor, op: str):
    """Check the class-index target's dtype and shape against the input; returns its array."""
    y = target.data
    if y.dtype not in _INDEX_DTYPES:
        raise RuntimeError(
            f"{op}: expected target dtype to be int64 (Long) or uint8 (Byte), "
            f"but got {target.dtype.name}"
        )
    shape = input.data.shape
    want = () if len(shape) == 1 else (shape[0],) + tuple(shape[2:])
    if tuple(y.shape) != want:
        batch_only = len(shape) == 2 and y.ndim == 1
        raise R.mismatch(op, want, shape, y.shape, ValueError if batch_only else RuntimeError)
    return y


def _to_rows(x: Tensor, cdim: int, c: int) -> Tensor:
    """The (M, C) view of the logits that the fused kernel works on."""
    nd = x.data.ndim
    if nd == 2:
        return x
    if nd == 1:
        return x.reshape(1, c)
    return x.movedim(cdim, -1).reshape(-1, c)


def _prob_rows(t, cdim: int, c: int):
    xp = get_array_module(t)
    if t.ndim == 2:
        return t
    if t.ndim == 1:
        return t.reshape(1, c)
    return xp.moveaxis(t, cdim, -1).reshape(-1, c)


def _ce_prob_composite(input, target, weight, cdim, c, reduction, eps):
    """Probability targets that need a gradient themselves: log_softmax and ember ops."""
    from ember.ops.nn_ops import log_softmax

    q = target * (1.0 - eps) + eps / c if eps else target
    if weight is not None:
        shape = [1] * input.data.ndim
        shape[cdim] = c
        q = q * Tensor(weight.reshape(shape))
    loss = -(log_softmax(input, cdim) * q).sum(cdim)
    return R.apply(loss, reduction)


def cross_entropy(
    input: Tensor,
    target: Tensor,
    weight=None,
    size_average=None,
    ignore_index: int = -100,
    reduce=None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    """Log-softmax plus negative log-likelihood in one fused, numerically stable Function.

    ``target`` holds class indices (shape of the input without the class dim; int64 or uint8)
    or class probabilities (the input's shape, floating). With ``weight`` the mean divides by
    the summed weights of the non-ignored targets, as torch does.
    """
    op = "cross_entropy"
    reduction = R.resolve(size_average, reduce, reduction)
    input = _float_input(input, op)
    target = _as_tensor(target, op)
    if not 0.0 <= label_smoothing <= 1.0:
        raise RuntimeError(
            f"{op}: label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}"
        )
    cdim, c = _class_layout(input, op)
    w = _class_weight(weight, c, input, op)
    shape = tuple(input.data.shape)
    if tuple(target.data.shape) == shape:  # same shape: class probabilities
        if target.data.dtype not in dtypes.FLOATING_NP:
            raise RuntimeError(
                f"{op}: expected floating point type for target with class "
                f"probabilities, got {target.dtype.name}"
            )
        if ignore_index >= 0:
            raise RuntimeError(f"{op}: ignore_index is not supported for floating point target")
        if target.requires_grad or c == 0:
            return _ce_prob_composite(input, target, w, cdim, c, reduction, label_smoothing)
        tgt = _prob_rows(target.data, cdim, c)
        out_shape = shape[:cdim] + shape[cdim + 1 :]
    else:
        y = _index_target(input, target, op)
        tgt = IndexTarget(y.reshape(-1), c, w, ignore_index, work(input.data).dtype, op)
        out_shape = tuple(y.shape)
    rows = _to_rows(input, cdim, c)
    loss = CrossEntropy(tgt, w, label_smoothing, reduction, rows).apply(rows)
    if reduction == "none" and tuple(loss.data.shape) != out_shape:
        loss = loss.reshape(out_shape)
    return loss


def nll_loss(
    input: Tensor,
    target: Tensor,
    weight=None,
    size_average=None,
    ignore_index: int = -100,
    reduce=None,
    reduction: str = "mean",
) -> Tensor:
    """``-weight[y] * input[y]`` (input holds log-probabilities), built from ``gather`` so that
    its gradient is the matching scatter and double backward works."""
    from ember.ops.gather_scatter import gather

    op = "nll_loss"
    reduction = R.resolve(size_average, reduce, reduction)
    input = _float_input(input, op)
    target = _as_tensor(target, op)
    cdim, c = _class_layout(input, op)
    w = _class_weight(weight, c, input, op)
    y = _index_target(input, target, op)
    tgt = IndexTarget(y, c, w, ignore_index, input.data.dtype, op)
    if input.data.ndim == 1:
        picked = gather(input, 0, tgt.y.reshape(1)).reshape(())
    else:
        picked = gather(input, 1, tgt.y.reshape(y.shape[:1] + (1,) + y.shape[1:])).squeeze(1)
    coef = tgt.coef()
    loss = -picked if coef is None else picked * Tensor(-coef.astype(input.data.dtype))
    if reduction == "none":
        return loss
    if reduction == "sum" or coef is None:
        return R.apply(loss, reduction)
    if not tgt.denom:  # nothing counted (all ignored): NaN, with a zero gradient, as torch
        return loss.sum() * 0.0 + float("nan")
    return loss.sum() / tgt.denom


# -------------------------------------------------------------------- pointwise losses
def _pointwise_weight(loss: Tensor, input: Tensor, weight, reduction: str, mean_by_weight: bool):
    """torch's per-element ``weight`` (mse, l1, huber): same size as the input."""
    weight = _as_tensor(weight, "weight")
    if tuple(weight.data.shape) != tuple(input.data.shape):
        raise ValueError("Weights and input must have the same size.")
    loss = loss * weight
    if reduction == "mean" and mean_by_weight:
        return loss.sum() / weight.sum()
    return R.apply(loss, reduction)


def mse_loss(
    input: Tensor,
    target: Tensor,
    size_average=None,
    reduce=None,
    reduction: str = "mean",
    weight=None,
) -> Tensor:
    """Mean squared error (weighted mean divides by the summed weights, as torch)."""
    input, target = _as_tensor(input, "mse_loss"), _as_tensor(target, "mse_loss")
    R.warn_if_broadcast("mse_loss", input, target)
    reduction = R.resolve(size_average, reduce, reduction)
    if weight is None and reduction != "none" and SquaredError.fits(input.data, target.data):
        return SquaredError(reduction == "mean").apply(input, target)
    loss = (input - target).square()
    if weight is not None:
        return _pointwise_weight(loss, input, weight, reduction, True)
    return R.apply(loss, reduction)


_SQUARES_ROW = 1024


def _sum_of_squares(d):
    """sum(d * d) of a 1-D float array: dot products of 1024-long rows (one BLAS pass),
    added up in float64, so the float32 error stays that of a 1024-term sum (a single BLAS
    dot over 2M terms was 2e-6 off torch's cascade sum)."""
    whole = d.size - d.size % _SQUARES_ROW
    rows = d[:whole].reshape(-1, 1, _SQUARES_ROW)
    parts = np.matmul(rows, rows.reshape(-1, _SQUARES_ROW, 1)).reshape(-1)
    tail = d[whole:]
    return parts.sum(dtype=np.float64) + float(np.dot(tail, tail))


class SquaredError(Function):
    """sum((x - t)^2), or its mean, for same-shaped float32/float64 NumPy arrays: the
    difference once and its BLAS dot product with itself (3 passes forward and 2 back, where
    the composite's square, mean and their gradients took 8: 5.3 against 1.5 ms for torch at
    2M elements). The gradient ``2 (x - t) g / n`` is recorded in Tensor ops under
    create_graph."""

    def __init__(self, mean: bool):
        self.mean = mean

    @staticmethod
    def fits(x, t) -> bool:
        return (
            type(x) is np.ndarray
            and type(t) is np.ndarray
            and x.shape == t.shape
            and x.dtype == t.dtype
            and x.dtype in (np.float32, np.float64)
            and x.size > 0
        )

    def forward(self, x, t):
        d = np.subtract(x, t).reshape(-1)
        self.n = d.size if self.mean else 1
        total = _sum_of_squares(d)
        self.save_for_backward(x, t, d.reshape(x.shape))
        return np.asarray(total / self.n if self.mean else total, dtype=x.dtype)

    def backward(self, g):
        ng = self.needs_input_grad
        x, t, d = self.saved_tensors
        if state.enabled:  # create_graph: the difference again, as recorded ops
            scaled = (x - t) * (g * (2.0 / self.n))
            return (scaled if ng[0] else None, -scaled if ng[1] else None)
        k = d.data.dtype.type(2.0 / self.n) * g.data
        gx = np.asarray(d.data * k)  # 0-d arithmetic gives NumPy scalars
        return (
            Tensor(gx) if ng[0] else None,
            Tensor(np.asarray(np.negative(gx))) if ng[1] else None,
        )


def l1_loss(
    input: Tensor,
    target: Tensor,
    size_average=None,
    reduce=None,
    reduction: str = "mean",
    weight=None,
) -> Tensor:
    """Mean absolute error (gradient 0 where input equals target, as torch)."""
    input, target = _as_tensor(input, "l1_loss"), _as_tensor(target, "l1_loss")
    R.warn_if_broadcast("l1_loss", input, target)
    reduction = R.resolve(size_average, reduce, reduction)
    loss = (input - target).abs()
    if weight is not None:
        return _pointwise_weight(loss, input, weight, reduction, True)
    return R.apply(loss, reduction)


class QuadraticThenLinear(Function):
    """0.5 d^2 * (slope / cut) inside ``|d| < cut``, slope * (|d| - cut / 2) outside, as
    ``min(k |d|, slope) (|d| - m / 2)`` with ``m = min(|d|, cut)``, ``k = slope / cut``:
    seven passes where the composite (abs, square, two products, a where, and their
    gradients) took 7 ms forward and 9 backward on 2M elements; the linear part is torch's
    ``slope * (|d| - cut / 2)`` to the bit. Its gradient ``g * clip(k d, -slope, slope)`` is
    torch's (0 at d = 0, +-slope from |d| = cut on), in Tensor ops under create_graph."""

    def __init__(self, cut: float, slope: float):
        # a cut so small that slope / cut overflows: only |d| < cut (subnormal) would see k
        self.cut, self.slope, self.k = cut, slope, min(slope / cut, _K_MAX)

    def forward(self, d):
        self.save_for_backward(d)
        loops = cpu_pointwise.quadratic_then_linear() if cpu_pointwise.supports(d) else None
        if loops is not None:  # float32: one loop (ember/cpu), the same operations bitwise
            f32 = np.float32
            return pointwise_loop(loops[0], [d], f32(self.cut), f32(self.k), f32(self.slope))
        xp = get_array_module(d)
        x = to_float32(d).reshape(-1)  # 1-D: 0-d arrays would come back as NumPy scalars
        with quiet():
            ad = xp.abs(x)
            m = xp.minimum(ad, const(x, self.cut))
            mk = ad * const(x, self.k)
            xp.minimum(mk, const(x, self.slope), out=mk)  # k |d| inside, slope outside
            out = m * const(x, 0.5)
            xp.subtract(ad, out, out=out)
            out *= mk
        return out.reshape(d.shape).astype(d.dtype, copy=False)

    def backward(self, g):
        (d,) = self.saved_tensors
        if state.enabled:  # create_graph: the same slope, recorded
            return g * clamp(d * self.k, -self.slope, self.slope)
        gx = self._grad_loop(g.data, d.data)
        if gx is not None:
            return Tensor(gx)
        x = to_float32(d.data).reshape(-1)
        with quiet():
            w = x * const(x, self.k)
            get_array_module(x).clip(w, -self.slope, self.slope, out=w)
        return scale_grad(g, w.reshape(d.data.shape).astype(d.data.dtype, copy=False))

    def _grad_loop(self, g, d):
        """``g * clip(k d, -slope, slope)`` by ember/cpu's loop (bitwise), or None. A mean's
        or sum's gradient arrives broadcast (stride 0): its one value goes in as a scalar."""
        ok = cpu_pointwise.supports(g, d) and g.shape == d.shape and d.size
        loops = cpu_pointwise.quadratic_then_linear() if ok else None
        if loops is None:
            return None
        k, slope = np.float32(self.k), np.float32(self.slope)
        if not any(g.strides):
            return pointwise_loop(loops[2], [d], g.reshape(-1)[0], k, slope)
        return pointwise_loop(loops[1], [g, d], k, slope)


_K_MAX = float(np.finfo(np.float32).max)


def smooth_l1_loss(
    input: Tensor,
    target: Tensor,
    size_average=None,
    reduce=None,
    reduction: str = "mean",
    beta: float = 1.0,
) -> Tensor:
    """Quadratic below ``beta``, L1 above; ``beta=0`` is exactly l1_loss."""
    input, target = _as_tensor(input, "smooth_l1_loss"), _as_tensor(target, "smooth_l1_loss")
    R.warn_if_broadcast("smooth_l1_loss", input, target)
    reduction = R.resolve(size_average, reduce, reduction)
    if beta < 0:
        raise RuntimeError("smooth_l1_loss does not support negative values for beta.")
    diff = input - target
    loss = diff.abs() if beta == 0 else QuadraticThenLinear(float(beta), 1.0).apply(diff)
    return R.apply(loss, reduction)


def huber_loss(
    input: Tensor, target: Tensor, reduction: str = "mean", delta: float = 1.0, weight=None
) -> Tensor:
    """Quadratic below ``delta``, ``delta``-scaled L1 above (smooth_l1 times ``delta``)."""
    input, target = _as_tensor(input, "huber_loss"), _as_tensor(target, "huber_loss")
    R.warn_if_broadcast("huber_loss", input, target)
    reduction = R.resolve(None, None, reduction)
    if delta <= 0:
        raise RuntimeError("huber_loss does not support non-positive values for delta.")
    loss = QuadraticThenLinear(float(delta), float(delta)).apply(input - target)
    if weight is not None:
        return _pointwise_weight(loss, input, weight, reduction, False)
    return R.apply(loss, reduction)


# --------------------------------------------------------------- binary cross-entropies
def _same_shape(op: str, input: Tensor, target: Tensor) -> None:
    if tuple(input.data.shape) != tuple(target.data.shape):
        raise R.mismatch(op, input.data.shape, input.data.shape, target.data.shape)


def _broadcast_const(arr, shape, op: str, name: str):
    if arr is None:
        return None
    try:
        if np.broadcast_shapes(arr.shape, shape) != tuple(shape):
            raise ValueError
    except ValueError:
        raise RuntimeError(
            f"{op}: {name} of shape {tuple(arr.shape)} does not broadcast to the "
            f"input shape {tuple(shape)}"
        ) from None
    return arr


class BinaryCrossEntropy(Function):
    """``-w (t log x + (1 - t) log(1 - x))`` with both logs clamped to >= -100 (torch)."""

    def __init__(self, weight):
        self.weight = weight

    def forward(self, x, t):
        xp = get_array_module(x)
        xw, tw = work(x), work(t)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_x = xp.maximum(xp.log(xw), -100.0)
            log_1mx = xp.maximum(xp.log1p(-xw), -100.0)
        loss = (tw - 1.0) * log_1mx - tw * log_x
        if self.weight is not None:
            loss *= self.weight
        self.save_for_backward(x, t)
        return loss.astype(x.dtype, copy=False)

    def backward(self, g):
        from ember.ops.select import clamp

        x, t = self.saved_tensors
        ng = self.needs_input_grad
        if self.weight is not None:
            g = g * Tensor(self.weight.astype(g.data.dtype, copy=False))
        gx = gt = None
        if ng[0]:  # torch: (x - t) / max(x (1 - x), 1e-12)
            gx = g * (x - t) / clamp((1 - x) * x, min=1e-12)
        if ng[1]:  # torch: -logit(x), unclamped
            gt = g * ((-x).log1p() - x.log())
        return gx, gt


def binary_cross_entropy(
    input: Tensor,
    target: Tensor,
    weight=None,
    size_average=None,
    reduce=None,
    reduction: str = "mean",
) -> Tensor:
    """BCE on probabilities; inputs and targets must lie in [0, 1]."""
    op = "binary_cross_entropy"
    reduction = R.resolve(size_average, reduce, reduction)
    input, target = _float_input(input, op), _as_tensor(target, op)
    _same_shape(op, input, target)
    x, t = input.data, target.data
    if x.size and bool(((x < 0) | (x > 1)).any()):
        raise RuntimeError(f"{op}: all elements of input should be between 0 and 1")
    if t.size and bool(((t < 0) | (t > 1)).any()):
        raise RuntimeError(f"{op}: all elements of target should be between 0 and 1")
    w = _broadcast_const(_raw(weight, x), x.shape, op, "weight")
    if target.data.dtype != x.dtype:
        target = target.to(input.dtype)
    return R.apply(BinaryCrossEntropy(w).apply(input, target), reduction)


class BinaryCrossEntropyWithLogits(Function):
    """``w ((1 - t) x + (1 + (pw - 1) t) softplus(-x))``: stable for any logit, and its
    gradient ``w ((1 + (pw - 1) t) sigmoid(x) - pw t)`` is exact at x = 0."""

    def __init__(self, weight, pos_weight):
        self.weight, self.pos_weight = weight, pos_weight

    def forward(self, x, t):
        xp = get_array_module(x)
        xw, tw = work(x), work(t)
        sp = xp.log1p(xp.exp(-xp.abs(xw)))
        sp += xp.maximum(-xw, 0)  # softplus(-x) = log(1 + exp(-x)), without overflow
        if self.pos_weight is not None:
            sp *= (self.pos_weight - 1.0) * tw + 1.0
        loss = (1.0 - tw) * xw
        loss += sp
        if self.weight is not None:
            loss *= self.weight
        self.save_for_backward(x, t)
        return loss.astype(x.dtype, copy=False)

    def backward(self, g):
        from ember.ops.activation import softplus

        x, t = self.saved_tensors
        ng = self.needs_input_grad
        dt = g.data.dtype
        pw = None if self.pos_weight is None else Tensor(self.pos_weight.astype(dt, copy=False))
        if self.weight is not None:
            g = g * Tensor(self.weight.astype(dt, copy=False))
        gx = gt = None
        if ng[0]:
            s = x.sigmoid()
            gx = g * (s - t) if pw is None else g * (((pw - 1) * t + 1) * s - pw * t)
        if ng[1]:
            gt = -g * x if pw is None else g * ((pw - 1) * softplus(-x) - x)
        return gx, gt


def binary_cross_entropy_with_logits(
    input: Tensor,
    target: Tensor,
    weight=None,
    size_average=None,
    reduce=None,
    reduction: str = "mean",
    pos_weight=None,
) -> Tensor:
    """Sigmoid plus BCE in one stable step; ``pos_weight`` scales the positive term."""
    op = "binary_cross_entropy_with_logits"
    reduction = R.resolve(size_average, reduce, reduction)
    input, target = _float_input(input, op), _as_tensor(target, op)
    _same_shape(op, input, target)
    x = input.data
    w = _broadcast_const(_raw(weight, x), x.shape, op, "weight")
    pw = _broadcast_const(_raw(pos_weight, x), x.shape, op, "pos_weight")
    if target.data.dtype != x.dtype:
        target = target.to(input.dtype)
    return R.apply(BinaryCrossEntropyWithLogits(w, pw).apply(input, target), reduction)


# ------------------------------------------------------------------------------ kl_div
def kl_div(
    input: Tensor,
    target: Tensor,
    size_average=None,
    reduce=None,
    reduction: str = "mean",
    log_target: bool = False,
) -> Tensor:
    """``target * (log target - input)`` (input holds log-probabilities); 0 where target is 0.
    ``reduction='batchmean'`` divides the sum by the batch size (the true KL divergence)."""
    import warnings

    from ember.ops.select import where

    op = "kl_div"
    input, target = _as_tensor(input, op), _as_tensor(target, op)
    if size_average is not None or reduce is not None:
        reduction = R.legacy_get_string(size_average, reduce)
    else:
        reduction = R.resolve(None, None, reduction, extra=("batchmean",))
        if reduction == "mean":
            warnings.warn(
                "reduction: 'mean' divides the total loss by both the batch size and the support "
                "size.'batchmean' divides only by the batch size, and aligns with the KL div math "
                "definition.'mean' will be changed to behave the same as 'batchmean' in the next "
                "major release.",
                UserWarning,
                stacklevel=2,
            )
    if log_target:
        loss = target.exp() * (target - input)
    else:  # xlogy(t, t) - t * x: the log of a 0 target is never taken (no NaN gradient)
        loss = target * where(target == 0, 1.0, target).log() - target * input
    if reduction == "batchmean":
        total = loss.sum()
        return total / input.data.shape[0] if input.data.ndim else total
    return R.apply(loss, reduction)


# Under autocast every loss runs in float32 (torch's policy; binary_cross_entropy too, as on
# torch's CPU: float32 makes it safe). The wrapped names are what ember.nn.functional exports.
cross_entropy = _amp.autocast_op(_amp.FP32)(cross_entropy)
nll_loss = _amp.autocast_op(_amp.FP32)(nll_loss)
mse_loss = _amp.autocast_op(_amp.FP32)(mse_loss)
l1_loss = _amp.autocast_op(_amp.FP32)(l1_loss)
smooth_l1_loss = _amp.autocast_op(_amp.FP32)(smooth_l1_loss)
huber_loss = _amp.autocast_op(_amp.FP32)(huber_loss)
binary_cross_entropy = _amp.autocast_op(_amp.FP32)(binary_cross_entropy)
binary_cross_entropy_with_logits = _amp.autocast_op(_amp.FP32)(binary_cross_entropy_with_logits)
kl_div = _amp.autocast_op(_amp.FP32)(kl_div)
