"""interpolate: nearest, nearest-exact, (bi/tri)linear and area resizing of (N, C, *spatial).

Resizing is separable: each spatial axis is resampled in turn with one gather (nearest) or two
weighted gathers (linear) whose index arrays and weights are computed once per axis with
torch's formulas (nearest_idx; area_pixel_compute_source_index in float32 for float32/16
inputs, float64 for float64), so there is no Python loop over pixels. The gradient is the
scatter-add adjoint (IndexAdd), itself differentiable. Short NumPy axes run the linear passes as
BLAS products with the weight matrix instead, and integer nearest factors sum their gradient
runs with strided adds (_resample.py). 'area' is adaptive average pooling.
"""

from __future__ import annotations

import numpy as np

from ember.autograd import autocast_state as _amp
from ember.autograd.autocast_state import state as _autocast
from ember.autograd.function import Function
from ember.autograd.grad_mode import state
from ember.nn.functional import _resample
from ember.nn.functional import pooling as _pooling
from ember.ops.conversion import cast_to, clone
from ember.ops.gather_scatter import IndexAdd, IndexSelect
from ember.ops.pointwise import check_tensor
from ember.ops.reduction import sum as _sum
from ember.ops.shape import reshape
from ember.tensor import dtypes
from ember.tensor.backend import get_array_module
from ember.tensor.tensor import Tensor

__all__ = ["interpolate"]

_LINEAR = {"linear": 1, "bilinear": 2, "trilinear": 3}
_SUPPORTED = ("nearest", "nearest-exact", "linear", "bilinear", "trilinear", "area")
_TORCH_ONLY = ("bicubic", "lanczos")  # torch modes Ember does not implement
_KERNEL = {"nearest": "upsample_nearest", "nearest-exact": "_upsample_nearest_exact"}
_KERNEL.update({"linear": "upsample_linear", "bilinear": "upsample_bilinear"})
_KERNEL["trilinear"] = "upsample_trilinear"
_AXES = ("D", "H", "W")
_HALF = frozenset((dtypes.float16.np, dtypes.bfloat16.np))


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _sizes_and_scales(shape, nd: int, size, scale_factor, recompute: bool | None) -> tuple:
    """torch's argument rules: exactly one of size / scale_factor, one entry per spatial dim."""
    spatial = list(shape[2:])
    if size is not None and scale_factor is not None:
        raise ValueError("interpolate: only one of size or scale_factor should be defined")
    if size is not None:
        if recompute:
            raise ValueError(
                "interpolate: recompute_scale_factor is not meaningful with an explicit size."
            )
        sizes = list(size) if isinstance(size, (list, tuple)) else [size] * nd
        if isinstance(size, (list, tuple)) and len(sizes) != nd:
            raise ValueError(
                "interpolate: Input and output must have the same number of spatial dimensions,"
                f" but got input with spatial dimensions of {spatial} and output size of "
                f"{size}. Please provide input tensor in (N, C, d1, d2, ...,dK) format and "
                "output size in (o1, o2, ...,oK) format."
            )
        if not all(_is_int(s) for s in sizes):
            raise TypeError(
                "interpolate: expected size to be one of int or Tuple[int] or Tuple[int, int] "
                "or Tuple[int, int, int], but got size with types "
                f"{[type(s) for s in sizes]}"
            )
        return [int(s) for s in sizes], [None] * nd
    if scale_factor is None:
        raise ValueError("interpolate: either size or scale_factor should be defined")
    if isinstance(scale_factor, (list, tuple)):
        if len(scale_factor) != nd:
            raise ValueError(
                "interpolate: Input and scale_factor must have the same number of spatial "
                f"dimensions, but got input with spatial dimensions of {spatial} and "
                f"scale_factor of shape {scale_factor}. Please provide input tensor in "
                "(N, C, d1, d2, ...,dK) format and scale_factor in (s1, s2, ...,sK) format."
            )
        scales = [float(s) for s in scale_factor]
    else:
        scales = [float(scale_factor)] * nd
    # the output size is floor(in * scale) (ATen truncates the double product)
    sizes = [int(n * s) for n, s in zip(spatial, scales)]
    return sizes, ([None] * nd if recompute else scales)


def _unsupported(nd: int, mode: str) -> NotImplementedError:
    if mode in _TORCH_ONLY:
        return NotImplementedError(
            f"interpolate: mode '{mode}' is not implemented in Ember (supported modes: "
            f"{', '.join(_SUPPORTED)})"
        )
    return NotImplementedError(
        f"interpolate: Input Error: Only 3D, 4D and 5D input Tensors supported (got {nd + 2}D) "
        "for the modes: nearest | linear | bilinear | bicubic | trilinear | lanczos | area | "
        f"nearest-exact (got {mode})"
    )


def interpolate(
    input: Tensor,
    size=None,
    scale_factor=None,
    mode: str = "nearest",
    align_corners: bool | None = None,
    recompute_scale_factor: bool | None = None,
    antialias: bool = False,
) -> Tensor:
    """Resize the spatial dims of ``input`` (N, C, *spatial) to ``size`` or by ``scale_factor``
    (torch.nn.functional.interpolate, with torch's output-size and align_corners rules)."""
    check_tensor(input, "interpolate")
    if mode in ("nearest", "area", "nearest-exact"):
        if align_corners is not None:
            raise ValueError(
                "interpolate: align_corners option can only be set with the interpolating "
                "modes: linear | bilinear | bicubic | trilinear"
            )
    elif align_corners is None:
        align_corners = False
    shape = tuple(input.data.shape)
    nd = len(shape) - 2
    if mode == "area" and size is None:
        recompute_scale_factor = True  # area always works from an explicit output size
    sizes, scales = _sizes_and_scales(shape, nd, size, scale_factor, recompute_scale_factor)
    if antialias:
        if not (mode in ("bilinear", "bicubic", "lanczos") and nd == 2):
            raise ValueError(
                "interpolate: Anti-alias option is restricted to bilinear, bicubic, and lanczos "
                "modes and requires a 4-D tensor as input"
            )
        raise NotImplementedError("interpolate: antialias=True is not implemented in Ember")
    if not 1 <= nd <= 3 or mode not in _SUPPORTED:
        raise _unsupported(nd, mode)
    if mode in _LINEAR and _LINEAR[mode] != nd:
        raise NotImplementedError(
            f"interpolate: Got {nd + 2}D input, but {mode} mode needs {_LINEAR[mode] + 2}D input"
        )
    if mode == "area":
        return getattr(_pooling, f"adaptive_avg_pool{nd}d")(input, tuple(sizes))
    if _autocast.enabled:  # torch's autocast runs the upsample kernels in float32
        return _amp.call(_amp.FP32, _upsample, input, sizes, scales, mode, align_corners)
    return _upsample(input, sizes, scales, mode, align_corners)


def _upsample(input: Tensor, sizes: list, scales: list, mode: str, align_corners) -> Tensor:
    shape = tuple(input.data.shape)
    nd = len(sizes)
    op = f"{_KERNEL[mode]}{nd}d"
    spatial = shape[2:]
    if min(spatial) <= 0 or min(sizes) <= 0:
        names = _AXES[3 - nd :]
        fmt = ", ".join
        raise RuntimeError(
            f"{op}: Input and output sizes should be greater than 0, but got input "
            f"({fmt(f'{a}: {n}' for a, n in zip(names, spatial))}) output "
            f"({fmt(f'{a}: {n}' for a, n in zip(names, sizes))})"
        )
    if shape[1] == 0:
        raise RuntimeError(
            f"{op}: Non-empty {nd + 2}D data tensor expected but got a tensor with sizes "
            f"{list(shape)}"
        )
    arr = input.data
    linear = mode in _LINEAR
    if linear and arr.dtype not in dtypes.FLOATING_NP:
        raise NotImplementedError(f"\"{op}\" not implemented for '{input.dtype.name}'")
    xp = get_array_module(arr)
    ft = np.float64 if arr.dtype == np.float64 else np.float32  # torch's opmath type
    # half inputs resample in float32 and round once at the end, as torch's kernels do
    half = linear and arr.dtype in _HALF
    out = cast_to(input, dtypes.float32) if half else input
    wt = np.float32 if half else arr.dtype
    for k, (n_in, n_out, scale) in enumerate(zip(spatial, sizes, scales)):
        ax = 2 + k
        if linear:
            plan = _linear_plan(xp, n_in, n_out, scale, align_corners, ft)
            if plan is not None:
                i0, i1, l1 = plan
                w_shape = (n_out,) + (1,) * (len(shape) - 1 - ax)
                w1 = l1.astype(wt).reshape(w_shape)
                w0 = (1 - l1).astype(wt).reshape(w_shape)
                dense = None
                if xp is np and n_in <= _resample.DENSE_MAX_IN:
                    dense = _resample.interpolation_matrix(n_in, i0, 1 - l1, i1, l1, wt)
                out = _Resample(ax, i0, w0, i1, w1, dense).apply(out)
        else:
            idx = _nearest_index(xp, n_in, n_out, scale, mode == "nearest-exact")
            k = n_out // n_in
            if idx is not None and n_out == k * n_in and _is_repeat(xp, idx, k):
                out = _Repeat(ax, k).apply(out)  # integer factor: repeat, and a reshape-sum back
            elif idx is not None:
                out = IndexSelect(ax, idx).apply(out)
    if half:
        out = cast_to(out, input.dtype)
    return clone(input) if out is input else out


def _scale(n_in: int, n_out: int, align_corners: bool, scale, ft):
    """area_pixel_compute_scale: the input step per output step, in the opmath type."""
    if align_corners:
        return ft(n_in - 1) / ft(n_out - 1) if n_out > 1 else ft(0)
    if scale is not None and scale > 0:
        return ft(1.0 / scale)
    return ft(n_in) / ft(n_out)


def _nearest_index(xp, n_in: int, n_out: int, scale, exact: bool):
    """ATen's nearest_idx / nearest_exact_idx (in float32, as every torch kernel computes it):
    floor(i * s) ('nearest', OpenCV's INTER_NEAREST; an unchanged size is a copy and a doubled
    one is i // 2) or floor((i + 0.5) * s) ('nearest-exact'), clipped to the input. None
    means the identity."""
    if not exact and n_out == n_in:
        return None
    if not exact and n_out == 2 * n_in:
        return xp.arange(n_out, dtype=np.int64) >> 1
    s = _scale(n_in, n_out, False, scale, np.float32)
    i = xp.arange(n_out, dtype=np.float32)
    real = (i + np.float32(0.5)) * s if exact else i * s
    return xp.minimum(xp.floor(real).astype(np.int64), n_in - 1)


def _is_repeat(xp, idx, k: int) -> bool:
    return bool((idx == xp.arange(idx.size, dtype=np.int64) // k).all())


def _linear_plan(xp, n_in: int, n_out: int, scale, align_corners: bool, ft):
    """The two source indices and the weight of the second one per output position, or None
    when the axis keeps its size (torch copies it then)."""
    if n_in == n_out:
        return None
    s = _scale(n_in, n_out, align_corners, scale, ft)
    i = xp.arange(n_out, dtype=ft)
    real = s * i if align_corners else xp.maximum(s * (i + ft(0.5)) - ft(0.5), ft(0))
    i0 = xp.minimum(xp.floor(real).astype(np.int64), n_in - 1)
    l1 = xp.clip(real - i0.astype(ft), ft(0), ft(1))
    i1 = i0 + (i0 < n_in - 1)
    return i0, i1, l1


class _Resample(Function):
    """Linear resampling along ``axis``: out[j] = w0[j] * a[i0[j]] + w1[j] * a[i1[j]].

    The weights are constants shaped to broadcast along ``axis``; the backward scatter-adds
    the weighted gradient at i0 and i1 (IndexAdd, whose own backward is a gather). With
    ``dense`` (the same weights as an (n_in, n_out) matrix, for short NumPy axes) finite
    arrays take BLAS products instead, both ways (ember/nn/functional/_resample.py)."""

    def __init__(self, axis: int, i0, w0, i1, w1, dense=None):
        self.axis, self.i0, self.w0, self.i1, self.w1 = axis, i0, w0, i1, w1
        self.dense = dense

    def forward(self, a):
        self.shape = a.shape
        if self.dense is not None and _resample.all_finite(a):
            return _resample.resample_axis(a, self.dense, self.axis)
        xp = get_array_module(a)
        out = xp.take(a, self.i0, axis=self.axis)
        out *= self.w0
        out += xp.take(a, self.i1, axis=self.axis) * self.w1
        return out

    def backward(self, g):
        ax, shape = self.axis, self.shape
        if self.dense is not None and not state.enabled and _resample.all_finite(g.data):
            return Tensor(_resample.resample_axis(g.data, self.dense.T, ax))
        g0 = IndexAdd(ax, self.i0, shape).apply(None, g * Tensor(self.w0))
        return g0 + IndexAdd(ax, self.i1, shape).apply(None, g * Tensor(self.w1))

    def name(self) -> str:
        return "UpsampleLinearBackward"


class _Repeat(Function):
    """Each element repeated ``k`` times along ``axis`` (nearest upsampling by an integer
    factor); the gradient sums each run of ``k``, a reshape and a sum (differentiable)."""

    def __init__(self, axis: int, k: int):
        self.axis, self.k = axis, k

    def forward(self, a):
        self.shape = a.shape
        return get_array_module(a).repeat(a, self.k, axis=self.axis)

    def backward(self, g):
        ax, shape = self.axis, self.shape
        if not state.enabled and type(g.data) is np.ndarray:  # no double backward: raw adds
            return Tensor(_resample.sum_runs(g.data, ax, self.k))
        runs = reshape(g, shape[:ax] + (shape[ax], self.k) + shape[ax + 1 :])
        return _sum(runs, ax + 1)

    def name(self) -> str:
        return "UpsampleNearestBackward"
