"""Pooling: max_pool1d/2d/3d, avg_pool1d/2d/3d, adaptive_avg_pool1d/2d, adaptive_max_pool1d/2d.

The argument checks and output sizes follow torch; the kernels live in ``_pooling``.
``name`` (the op, or the layer that called it) heads every error message.
"""

from __future__ import annotations

from ember.nn.functional import _pooling as kernels
from ember.tensor.tensor import Tensor

_SHAPES = {
    1: ("(C, L)", "(N, C, L)"),
    2: ("(C, H, W)", "(N, C, H, W)"),
    3: ("(C, D, H, W)", "(N, C, D, H, W)"),
}


def _check_input(input, nd: int, name: str) -> tuple:
    if not isinstance(input, Tensor):
        raise TypeError(f"{name}: expected input to be a Tensor, got {type(input).__name__}")
    shape = tuple(input.data.shape)
    if len(shape) not in (nd + 1, nd + 2):
        one, batched = _SHAPES[nd]
        raise RuntimeError(
            f"{name}: expected a {nd + 1}D or {nd + 2}D input {one} or {batched}, got shape {shape}"
        )
    if 0 in shape[len(shape) - nd - 1 :]:
        raise RuntimeError(
            f"{name}: expected an input with non-zero channel and spatial sizes, got shape {shape}"
        )
    return shape


def _tuple(value, nd: int, name: str, what: str) -> tuple:
    if isinstance(value, (list, tuple)):
        if len(value) == 1:
            value = tuple(value) * nd
        if len(value) != nd or not all(isinstance(v, int) for v in value):
            raise RuntimeError(
                f"{name}: {what} must be an int or a tuple of {nd} ints, got {tuple(value)}"
            )
        return tuple(int(v) for v in value)
    if not isinstance(value, int):
        raise TypeError(
            f"{name}: {what} must be an int or a tuple of ints, got {type(value).__name__}"
        )
    return (int(value),) * nd


def _out_size(n: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    span = n + 2 * p - d * (k - 1) - 1
    out = (span + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= n + p:
        out -= 1  # the last window must start inside the input or its left padding
    return out


def _geometry(
    shape, nd, kernel_size, stride, padding, dilation, ceil_mode, name, half_kernel_rule: str
) -> kernels.PoolGeometry:
    kernel = _tuple(kernel_size, nd, name, "kernel_size")
    stride = (
        kernel
        if stride is None or stride == [] or stride == ()
        else _tuple(stride, nd, name, "stride")
    )
    pad = _tuple(padding, nd, name, "padding")
    dil = _tuple(dilation, nd, name, "dilation")
    if any(k <= 0 for k in kernel):
        raise RuntimeError(f"{name}: kernel_size must be greater than zero, got {kernel}")
    if any(s <= 0 for s in stride):
        raise RuntimeError(f"{name}: stride must be greater than zero, got {stride}")
    if any(d <= 0 for d in dil):
        raise RuntimeError(f"{name}: dilation must be greater than zero, got {dil}")
    for k, p, d in zip(kernel, pad, dil):
        if p < 0 or p > (d * (k - 1) + 1) // 2:
            raise RuntimeError(
                f"{name}: pad should be at most half of {half_kernel_rule}, "
                f"but got pad={p}, kernel_size={k} and dilation={d}"
            )
    in_sp = shape[len(shape) - nd :]
    out_sp = tuple(
        _out_size(n, k, s, p, d, ceil_mode)
        for n, k, s, p, d in zip(in_sp, kernel, stride, pad, dil)
    )
    if any(o <= 0 for o in out_sp):
        raise RuntimeError(
            f"{name}: input of shape {shape} is too small for kernel_size "
            f"{kernel} (dilation {dil}, padding {pad}): output size {out_sp}"
        )
    return kernels.PoolGeometry(kernel, stride, pad, dil, in_sp, out_sp)


# --------------------------------------------------------------------------- max
def max_pool_nd(
    input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, nd: int, name: str
):
    shape = _check_input(input, nd, name)
    geo = _geometry(
        shape, nd, kernel_size, stride, padding, dilation, ceil_mode, name, "effective kernel size"
    )
    return kernels.MaxPool(geo, return_indices).apply(input)


def max_pool1d(
    input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False
):
    return max_pool_nd(
        input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, 1, "max_pool1d"
    )


def max_pool2d(
    input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False
):
    """Max over (dilated) windows; padding counts as -inf; ties go to the first maximum."""
    return max_pool_nd(
        input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, 2, "max_pool2d"
    )


def max_pool3d(
    input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False
):
    return max_pool_nd(
        input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, 3, "max_pool3d"
    )


def max_pool1d_with_indices(
    input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=True
):
    return max_pool1d(input, kernel_size, stride, padding, dilation, ceil_mode, True)


def max_pool2d_with_indices(
    input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=True
):
    return max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, True)


# ----------------------------------------------------------------------- average
def avg_pool_nd(
    input,
    kernel_size,
    stride,
    padding,
    ceil_mode,
    count_include_pad,
    divisor_override,
    nd: int,
    name: str,
):
    shape = _check_input(input, nd, name)
    geo = _geometry(
        shape, nd, kernel_size, stride, padding, 1, ceil_mode, name, "effective kernel size"
    )
    if divisor_override is not None and divisor_override == 0:
        raise RuntimeError(f"{name}: divisor must be not zero")
    divisor = kernels.avg_divisor(geo, count_include_pad, divisor_override)
    return kernels.AvgPool(geo, divisor).apply(input)


def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    return avg_pool_nd(
        input, kernel_size, stride, padding, ceil_mode, count_include_pad, None, 1, "avg_pool1d"
    )


def avg_pool2d(
    input,
    kernel_size,
    stride=None,
    padding=0,
    ceil_mode=False,
    count_include_pad=True,
    divisor_override=None,
):
    """Mean over windows; count_include_pad counts the zero padding in the divisor."""
    return avg_pool_nd(
        input,
        kernel_size,
        stride,
        padding,
        ceil_mode,
        count_include_pad,
        divisor_override,
        2,
        "avg_pool2d",
    )


def avg_pool3d(
    input,
    kernel_size,
    stride=None,
    padding=0,
    ceil_mode=False,
    count_include_pad=True,
    divisor_override=None,
):
    return avg_pool_nd(
        input,
        kernel_size,
        stride,
        padding,
        ceil_mode,
        count_include_pad,
        divisor_override,
        3,
        "avg_pool3d",
    )


# ---------------------------------------------------------------------- adaptive
def _adaptive_sizes(shape: tuple, output_size, nd: int, name: str) -> tuple:
    if isinstance(output_size, (list, tuple)):
        sizes = tuple(output_size)
        if len(sizes) != nd:
            raise RuntimeError(f"{name}: output_size must have {nd} elements, got {sizes}")
    else:
        sizes = (output_size,) * nd
    in_sp = shape[len(shape) - nd :]
    out = []
    for s, n in zip(sizes, in_sp):
        s = n if s is None else s
        if not isinstance(s, int) or s < 0:
            raise RuntimeError(
                f"{name}: output_size must be non-negative ints or None, got {sizes}"
            )
        out.append(int(s))
    return tuple(out)


def adaptive_avg_pool_nd(input, output_size, nd: int, name: str):
    shape = _check_input(input, nd, name)
    out_sp = _adaptive_sizes(shape, output_size, nd, name)
    in_sp = shape[len(shape) - nd :]
    if all(o > 0 and n % o == 0 for n, o in zip(in_sp, out_sp)):
        kernel = tuple(n // o for n, o in zip(in_sp, out_sp))
        geo = kernels.PoolGeometry(kernel, kernel, (0,) * nd, (1,) * nd, in_sp, out_sp)
        return kernels.AvgPool(geo, float(_prod(kernel))).apply(input)
    if input.data.dtype.kind in "iub":
        raise RuntimeError(f"{name}: expected a floating point input, got {input.dtype}")
    from ember.tensor.backend import get_array_module

    xp = get_array_module(input.data)
    mats = [
        None if o == n else kernels.averaging_matrix(n, o, input.data.dtype, xp)
        for n, o in zip(in_sp, out_sp)
    ]
    return kernels.Separable(mats).apply(input)


def _prod(t) -> int:
    p = 1
    for v in t:
        p *= v
    return p


def adaptive_avg_pool1d(input, output_size):
    return adaptive_avg_pool_nd(input, output_size, 1, "adaptive_avg_pool1d")


def adaptive_avg_pool2d(input, output_size):
    """Mean over torch's adaptive windows [floor(i*H/oh), ceil((i+1)*H/oh)); sizes that do
    not divide the input become one averaging matrix per dim."""
    return adaptive_avg_pool_nd(input, output_size, 2, "adaptive_avg_pool2d")


def adaptive_avg_pool3d(input, output_size):
    return adaptive_avg_pool_nd(input, output_size, 3, "adaptive_avg_pool3d")


def adaptive_max_pool_nd(input, output_size, return_indices, nd: int, name: str):
    shape = _check_input(input, nd, name)
    out_sp = _adaptive_sizes(shape, output_size, nd, name)
    return kernels.AdaptiveMax(out_sp, return_indices).apply(input)


def adaptive_max_pool1d(input, output_size, return_indices=False):
    return adaptive_max_pool_nd(input, output_size, return_indices, 1, "adaptive_max_pool1d")


def adaptive_max_pool2d(input, output_size, return_indices=False):
    return adaptive_max_pool_nd(input, output_size, return_indices, 2, "adaptive_max_pool2d")


__all__ = [
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "max_pool1d_with_indices",
    "max_pool2d_with_indices",
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool3d",
    "adaptive_max_pool1d",
    "adaptive_max_pool2d",
]
