"""Convolutions (conv1d/2d/3d, conv_transpose1d/2d/3d) as fused Functions over ``_im2col``.

Three Functions close over each other's gradients, so every order of derivative works and
each one is a single raw-array kernel:

    _Conv(x, w, b)           y  = conv(x, w) + b
    _ConvTranspose(x, w, b)  y  = conv^T(x, w) + b      (the gradient of conv wrt its input)
    _ConvWeightGrad(x, g)    gW = d<conv(x, W), g>/dW   (bilinear in x and g)

Conv keeps the im2col columns it built for the weight gradient (up to ``SAVE_COLS_BYTES``;
past that, backward rebuilds them from x instead of holding the memory). 3x3 stride-1 convs
with enough channels run Winograd F(2x2, 3x3) instead (``_winograd``): forward, grad-input
(a stride-1 conv of g) and grad-weight, which reads the transformed input the forward kept.
"""

from __future__ import annotations

from ember.autograd import autocast_state as _amp
from ember.autograd.autocast_state import state as _autocast
from ember.autograd.function import Function
from ember.nn.functional import _depthwise, _winograd, _workspace
from ember.nn.functional import _im2col as kernels
from ember.ops.promotion import check_same_device
from ember.tensor.dtypes import FLOATING_NP
from ember.tensor.tensor import Tensor

SAVE_COLS_BYTES = 1 << 28

_SHAPES = {
    1: ("(C, L)", "(N, C, L)"),
    2: ("(C, H, W)", "(N, C, H, W)"),
    3: ("(C, D, H, W)", "(N, C, D, H, W)"),
}


def _depthwise_fits(x, wshape, geo, out_spatial) -> bool:
    """The depthwise NumPy kernels (_depthwise.py) apply, and give ``out_spatial``."""
    return _depthwise.supported(x, wshape, geo) and (
        out_spatial is None
        or tuple(out_spatial) == _depthwise.out_spatial(x.shape[2:], wshape, geo)
    )


def _sum_dims(g: Tensor) -> Tensor:
    return g.sum(dim=(0,) + tuple(range(2, g.ndim)))


class _Conv(Function):
    def __init__(self, geo: kernels.Geometry, cols=None, out_spatial=None):
        self.geo = geo
        self.cols = cols  # columns of x built by the caller, who also gives them back
        self.out_spatial = out_spatial

    def forward(self, x, w, b):
        ng = self.needs_input_grad
        own = self.cols is None
        geo = self.geo
        self.wino_block = None
        if own and _depthwise_fits(x, w.shape, geo, self.out_spatial) and w.dtype == x.dtype:
            y, cols = _depthwise.forward(x, w, geo), None
            if b is not None:
                y += b.reshape((1, -1, 1, 1))
        elif own and _winograd.supported(x, w, geo.kernel, geo.stride, geo.dilation, geo.groups):
            # keeps the transformed input (4x x, not im2col's 9x) for the weight gradient
            size = _winograd.transformed_bytes(x, geo.pads, self.out_spatial)
            keep = ng[1] and size <= SAVE_COLS_BYTES
            y, cols, self.wino_block = _winograd.conv3x3(x, w, geo.pads, self.out_spatial, keep)
            if b is not None:
                y += b.reshape((1, -1, 1, 1))
        else:
            y, cols = kernels.conv_forward(x, w, b, geo, self.cols, self.out_spatial)
        self.cols = None
        keep = own and ng[1] and cols is not None and cols.nbytes <= SAVE_COLS_BYTES
        if own and not keep and cols is not None:
            _workspace.give(cols)
        if not keep:
            self.wino_block = None  # backward rebuilds im2col columns instead
        self.save_for_backward(x if ng[1] else None, w if ng[0] else None, cols if keep else None)
        self.in_spatial = x.shape[2:]
        self.wshape = w.shape
        return y

    def _release(self) -> None:
        """Autograd is done with this node: its columns go back to the workspace pool."""
        saved = self.__dict__.get("_saved")
        cols = saved[2] if isinstance(saved, tuple) and len(saved) == 3 else None
        super()._release()
        if cols is not None:
            _workspace.give(cols)

    def backward(self, g):
        x, w, cols = self.saved_tensors
        ng = self.needs_input_grad
        gx = gw = gb = None
        if ng[0]:
            gx = _ConvTranspose(self.geo, self.in_spatial).apply(g, w, None)
        if ng[1]:
            saved = None if cols is None else cols.data
            wg = _ConvWeightGrad(self.geo, self.wshape, saved, self.wino_block)
            gw = wg.apply(x, g)
        if ng[2]:
            gb = _sum_dims(g)
        return gx, gw, gb


class _ConvTranspose(Function):
    def __init__(self, geo: kernels.Geometry, out_spatial: tuple):
        self.geo = geo
        self.out_spatial = out_spatial

    def forward(self, x, w, b):
        ng = self.needs_input_grad
        self.save_for_backward(x if ng[1] else None, w if ng[0] else None)
        self.wshape = w.shape
        self.in_spatial = x.shape[2:]
        if (
            _depthwise.supported(x, w.shape, self.geo)
            and w.dtype == x.dtype
            and _depthwise.out_spatial(self.out_spatial, w.shape, self.geo) == x.shape[2:]
        ):
            y = _depthwise.grad_input(x, w, self.geo, self.out_spatial)
        else:
            y = kernels.conv_grad_input(x, w, self.geo, self.out_spatial)
        if b is not None:
            y += b.reshape((1, -1) + (1,) * (y.ndim - 2))
        return y

    def backward(self, g):
        x, w = self.saved_tensors
        ng = self.needs_input_grad
        gx = gw = gb = None
        # both gradients read the columns of g: build them once. The windows are x's
        # positions (an output_padding >= stride adds a last row no window starts at).
        out_sp = self.in_spatial
        cols = kernels.im2col(g.data, self.geo, out_sp) if ng[0] and ng[1] else None
        if ng[0]:
            gx = _Conv(self.geo, cols, out_sp).apply(g, w, None)
        if ng[1]:
            gw = _ConvWeightGrad(self.geo, self.wshape, cols).apply(g, x)
        if cols is not None:
            _workspace.give(cols)
        if ng[2]:
            gb = _sum_dims(g)
        return gx, gw, gb


class _ConvWeightGrad(Function):
    def __init__(self, geo: kernels.Geometry, wshape: tuple, cols=None, wino_block=None):
        self.geo, self.wshape, self.cols = geo, tuple(wshape), cols
        self.wino_block = wino_block  # cols is Winograd's transformed x, in blocks of images

    def forward(self, x, g):
        ng = self.needs_input_grad
        self.save_for_backward(x if ng[1] else None, g if ng[0] else None)
        self.in_spatial, self.out_sp = x.shape[2:], g.shape[2:]
        cols, own = self.cols, self.cols is None
        self.cols = None
        if not own and self.wino_block is not None:
            return _winograd.grad_weight(g, cols, self.wshape[1], self.wino_block)
        if own and _depthwise_fits(x, self.wshape, self.geo, g.shape[2:]) and g.dtype == x.dtype:
            return _depthwise.grad_weight(x, g, self.wshape, self.geo)
        if own:
            cols = kernels.im2col(x, self.geo, g.shape[2:])
        gw = kernels.conv_grad_weight(g, cols, self.wshape, self.geo.groups)
        if own:
            _workspace.give(cols)
        return gw

    def backward(self, ggw):
        x, g = self.saved_tensors
        ng = self.needs_input_grad
        gx = _ConvTranspose(self.geo, self.in_spatial).apply(g, ggw, None) if ng[0] else None
        gg = _Conv(self.geo, None, self.out_sp).apply(x, ggw, None) if ng[1] else None
        return gx, gg


# ------------------------------------------------------------------ argument checking
def ntuple(value, n: int, op: str, what: str) -> tuple:
    """An int or a sequence of n ints as a tuple of n ints."""
    if isinstance(value, (list, tuple)):
        if len(value) != n or not all(isinstance(v, int) for v in value):
            raise RuntimeError(
                f"{op}: expected {what} to be a single int or a tuple of {n} "
                f"ints, got {tuple(value)}"
            )
        return tuple(int(v) for v in value)
    if not isinstance(value, int):
        raise TypeError(
            f"{op}: expected {what} to be an int or a tuple of ints, got {type(value).__name__}"
        )
    return (int(value),) * n


def check_input_rank(input, nd: int, name: str) -> None:
    """Input is a Tensor of rank nd+1 (unbatched) or nd+2 (batched)."""
    if not isinstance(input, Tensor):
        raise TypeError(f"{name}: expected input to be a Tensor, got {type(input).__name__}")
    if input.data.ndim not in (nd + 1, nd + 2):
        one, batched = _SHAPES[nd]
        raise RuntimeError(
            f"{name}: expected a {nd + 1}D or {nd + 2}D input {one} or "
            f"{batched}, got shape {tuple(input.data.shape)}"
        )


def _check_tensors(input, weight, bias, nd: int, name: str) -> None:
    check_input_rank(input, nd, name)
    if not isinstance(weight, Tensor) or weight.data.ndim != nd + 2:
        shape = tuple(weight.data.shape) if isinstance(weight, Tensor) else type(weight).__name__
        raise RuntimeError(f"{name}: expected a {nd + 2}D weight, got {shape}")
    if input.data.dtype not in FLOATING_NP:
        raise RuntimeError(f"{name}: expected a floating point input, got {input.dtype}")
    if input.data.dtype != weight.data.dtype:
        raise RuntimeError(
            f"{name}: input type ({input.dtype}) and weight type "
            f"({weight.dtype}) should be the same"
        )
    check_same_device(input, weight, name)
    if bias is not None:
        if not isinstance(bias, Tensor):
            raise TypeError(
                f"{name}: expected bias to be a Tensor or None, got {type(bias).__name__}"
            )
        if bias.data.dtype != input.data.dtype:
            raise RuntimeError(
                f"{name}: input type ({input.dtype}) and bias type "
                f"({bias.dtype}) should be the same"
            )
        check_same_device(input, bias, name)


def _check_groups(groups, name: str) -> int:
    if not isinstance(groups, int) or groups <= 0:
        raise RuntimeError(f"{name}: non-positive groups is not supported (got {groups})")
    return groups


def _positive(values: tuple, name: str, what: str) -> None:
    if any(v <= 0 for v in values):
        raise RuntimeError(f"{name}: non-positive {what} is not supported, got {values}")


def same_pads(kernel: tuple, dilation: tuple) -> tuple:
    """'same' padding per dim as (lo, hi); an odd total puts the extra element last (torch)."""
    out = []
    for k, d in zip(kernel, dilation):
        total = d * (k - 1)
        out.append((total // 2, total - total // 2))
    return tuple(out)


def _conv_pads(padding, kernel, stride, dilation, nd: int, name: str) -> tuple:
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * nd
        if padding == "same":
            if any(s != 1 for s in stride):
                raise RuntimeError(
                    f"{name}: padding='same' is not supported for strided convolutions"
                )
            return same_pads(kernel, dilation)
        raise RuntimeError(
            f"{name}: invalid padding string {padding!r}, should be one of {{'valid', 'same'}}"
        )
    pad = ntuple(padding, nd, name, "padding")
    if any(p < 0 for p in pad):
        raise RuntimeError(f"{name}: negative padding is not supported, got {pad}")
    return tuple((p, p) for p in pad)


def conv_nd(input, weight, bias, stride, padding, dilation, groups, nd: int, name: str):
    """The shared body of conv1d/2d/3d and of the Conv modules (``name`` goes in errors)."""
    if _autocast.enabled:
        args = (input, weight, bias, stride, padding, dilation, groups, nd, name)
        return _amp.call(_amp.LOW, conv_nd, *args)
    _check_tensors(input, weight, bias, nd, name)
    groups = _check_groups(groups, name)
    kernel = tuple(weight.data.shape[2:])
    stride = ntuple(stride, nd, name, "stride")
    dilation = ntuple(dilation, nd, name, "dilation")
    _positive(stride, name, "stride")
    _positive(dilation, name, "dilation")
    pads = _conv_pads(padding, kernel, stride, dilation, nd, name)
    wshape = tuple(weight.data.shape)
    out_ch = wshape[0]
    if out_ch % groups:
        raise RuntimeError(
            f"{name}: expected weight of shape {wshape} to have out channels "
            f"divisible by groups={groups}"
        )
    shape = tuple(input.data.shape)
    c_in = shape[-nd - 1]
    if c_in != wshape[1] * groups:
        extra = f" (groups={groups}, weight of shape {wshape})" if groups != 1 else ""
        raise RuntimeError(
            f"{name}: expected input with {wshape[1] * groups} channels, got "
            f"input of shape {shape}{extra}"
        )
    if bias is not None and tuple(bias.data.shape) != (out_ch,):
        raise RuntimeError(
            f"{name}: expected bias of shape ({out_ch},), got {tuple(bias.data.shape)}"
        )
    spatial = shape[-nd:]
    padded = tuple(n + lo + hi for n, (lo, hi) in zip(spatial, pads))
    eff = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
    if any(e > p for e, p in zip(eff, padded)):
        raise RuntimeError(
            f"{name}: kernel size {eff} can't be greater than the padded input "
            f"size {padded} (input of shape {shape}, padding "
            f"{tuple(p for p, _ in pads) if pads[0][0] == pads[0][1] else pads})"
        )
    geo = kernels.Geometry(kernel, stride, pads, dilation, groups)
    if input.data.ndim == nd + 1:
        return _Conv(geo).apply(input.unsqueeze(0), weight, bias).squeeze(0)
    return _Conv(geo).apply(input, weight, bias)


def conv_transpose_nd(
    input,
    weight,
    bias,
    stride,
    padding,
    output_padding,
    groups,
    dilation,
    nd: int,
    name: str,
    output_size=None,
):
    """The shared body of conv_transpose1d/2d/3d and of the ConvTranspose modules."""
    if _autocast.enabled:
        args = (input, weight, bias, stride, padding, output_padding, groups, dilation, nd, name)
        return _amp.call(_amp.LOW, conv_transpose_nd, *args, output_size=output_size)
    _check_tensors(input, weight, bias, nd, name)
    groups = _check_groups(groups, name)
    if isinstance(padding, str):
        raise RuntimeError(f"{name}: padding must be an int or a tuple of ints, got {padding!r}")
    kernel = tuple(weight.data.shape[2:])
    stride = ntuple(stride, nd, name, "stride")
    dilation = ntuple(dilation, nd, name, "dilation")
    pad = ntuple(padding, nd, name, "padding")
    out_pad = ntuple(output_padding, nd, name, "output_padding")
    _positive(stride, name, "stride")
    _positive(dilation, name, "dilation")
    if any(p < 0 for p in pad):
        raise RuntimeError(f"{name}: negative padding is not supported, got {pad}")
    if any(op < 0 or (op >= s and op >= d) for op, s, d in zip(out_pad, stride, dilation)):
        raise RuntimeError(
            f"{name}: output padding must be smaller than either stride or "
            f"dilation, got output_padding={out_pad}, stride={stride}, "
            f"dilation={dilation}"
        )
    wshape = tuple(weight.data.shape)
    shape = tuple(input.data.shape)
    if wshape[0] % groups:
        raise RuntimeError(
            f"{name}: expected weight of shape {wshape} to have in channels "
            f"divisible by groups={groups}"
        )
    if shape[-nd - 1] != wshape[0]:
        raise RuntimeError(
            f"{name}: expected input with {wshape[0]} channels, got input of shape {shape}"
        )
    out_ch = wshape[1] * groups
    if bias is not None and tuple(bias.data.shape) != (out_ch,):
        raise RuntimeError(
            f"{name}: expected bias of shape ({out_ch},), got {tuple(bias.data.shape)}"
        )
    spatial = shape[-nd:]
    out_sp = tuple(
        (n - 1) * s - 2 * p + d * (k - 1) + op + 1
        for n, s, p, d, k, op in zip(spatial, stride, pad, dilation, kernel, out_pad)
    )
    if any(o <= 0 for o in out_sp):
        raise RuntimeError(
            f"{name}: output size {out_sp} is too small (input of shape "
            f"{shape}, weight of shape {wshape})"
        )
    geo = kernels.Geometry(kernel, stride, tuple((p, p) for p in pad), dilation, groups)
    if input.data.ndim == nd + 1:
        return _ConvTranspose(geo, out_sp).apply(input.unsqueeze(0), weight, bias).squeeze(0)
    return _ConvTranspose(geo, out_sp).apply(input, weight, bias)


# --------------------------------------------------------------------- public forms
def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return conv_nd(input, weight, bias, stride, padding, dilation, groups, 1, "conv1d")


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution over (N, C, H, W) or (C, H, W); padding may be 'same' or 'valid'."""
    return conv_nd(input, weight, bias, stride, padding, dilation, groups, 2, "conv2d")


def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return conv_nd(input, weight, bias, stride, padding, dilation, groups, 3, "conv3d")


def conv_transpose1d(
    input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1
):
    return conv_transpose_nd(
        input,
        weight,
        bias,
        stride,
        padding,
        output_padding,
        groups,
        dilation,
        1,
        "conv_transpose1d",
    )


def conv_transpose2d(
    input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1
):
    """The gradient of conv2d wrt its input, as a layer (weight (C_in, C_out/groups, kH, kW))."""
    return conv_transpose_nd(
        input,
        weight,
        bias,
        stride,
        padding,
        output_padding,
        groups,
        dilation,
        2,
        "conv_transpose2d",
    )


def conv_transpose3d(
    input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1
):
    return conv_transpose_nd(
        input,
        weight,
        bias,
        stride,
        padding,
        output_padding,
        groups,
        dilation,
        3,
        "conv_transpose3d",
    )


__all__ = ["conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d"]
