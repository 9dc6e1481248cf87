"""Convolution layers: Conv1d/2d/3d and ConvTranspose1d/2d/3d, with torch's arguments,
initialisation, parameter names and repr."""

from __future__ import annotations

import math

from ember.nn import init
from ember.nn.functional import conv as C
from ember.nn.module import Module
from ember.nn.parameter import Parameter
from ember.ops.join import pad as _pad
from ember.tensor.creation import empty

_PADDING_MODES = {"zeros", "reflect", "replicate", "circular"}


def _tuple(value, n: int) -> tuple:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,) * n


class _ConvNd(Module):
    """The shared body: argument checks, weight/bias creation, init and repr."""

    _nd = 2
    transposed = False

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride,
        padding,
        dilation,
        output_padding,
        groups,
        bias,
        padding_mode,
        device,
        dtype,
    ):
        super().__init__()
        nd = self._nd
        if not isinstance(groups, int) or groups <= 0:
            raise ValueError("groups must be a positive integer")
        if in_channels % groups != 0:
            raise ValueError("in_channels must be divisible by groups")
        if out_channels % groups != 0:
            raise ValueError("out_channels must be divisible by groups")
        kernel_size, stride = _tuple(kernel_size, nd), _tuple(stride, nd)
        dilation = _tuple(dilation, nd)
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(
                    f"Invalid padding string {padding!r}, should be one of {{'valid', 'same'}}"
                )
            if padding == "same" and any(s != 1 for s in stride):
                raise ValueError("padding='same' is not supported for strided convolutions")
        else:
            padding = _tuple(padding, nd)
        if padding_mode not in _PADDING_MODES:
            raise ValueError(
                f"padding_mode must be one of {_PADDING_MODES}, but got "
                f"padding_mode='{padding_mode}'"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.dilation, self.output_padding = dilation, _tuple(output_padding, nd)
        self.groups, self.padding_mode = groups, padding_mode
        if isinstance(padding, str):
            pads = C.same_pads(kernel_size, dilation) if padding == "same" else ((0, 0),) * nd
        else:
            pads = tuple((p, p) for p in padding)
        # F.pad's order: last dim first, (left, right) per dim
        self._reversed_padding_repeated_twice = [v for lo_hi in reversed(pads) for v in lo_hi]
        shape = (
            (in_channels, out_channels // groups)
            if self.transposed
            else (out_channels, in_channels // groups)
        ) + kernel_size
        self.weight = Parameter(empty(shape, device=device, dtype=dtype))
        if bias:
            self.bias = Parameter(empty((out_channels,), device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
            if fan_in != 0:
                bound = 1 / math.sqrt(fan_in)
                init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        nd = self._nd
        s = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}"
        )
        if self.padding != (0,) * nd:
            s += f", padding={self.padding}"
        if self.dilation != (1,) * nd:
            s += f", dilation={self.dilation}"
        if self.output_padding != (0,) * nd:
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s


class _Conv(_ConvNd):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device=None,
        dtype=None,
    ):
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            0,
            groups,
            bias,
            padding_mode,
            device,
            dtype,
        )

    def forward(self, input):
        nd, name = self._nd, type(self).__name__
        if self.padding_mode == "zeros":
            return C.conv_nd(
                input,
                self.weight,
                self.bias,
                self.stride,
                self.padding,
                self.dilation,
                self.groups,
                nd,
                name,
            )
        C.check_input_rank(input, nd, name)
        shape = tuple(input.data.shape)
        if shape[-nd - 1] != self.in_channels:
            raise RuntimeError(
                f"{name}: expected input with {self.in_channels} channels, got "
                f"input of shape {shape}"
            )
        padded = _pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
        return C.conv_nd(
            padded, self.weight, self.bias, self.stride, 0, self.dilation, self.groups, nd, name
        )


class Conv1d(_Conv):
    """1-D convolution over (N, C, L) or (C, L)."""

    _nd = 1


class Conv2d(_Conv):
    """2-D convolution over (N, C, H, W) or (C, H, W): im2col + one GEMM on the CPU."""

    _nd = 2


class Conv3d(_Conv):
    """3-D convolution over (N, C, D, H, W) or (C, D, H, W)."""

    _nd = 3


class _ConvTranspose(_ConvNd):
    transposed = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        output_padding=0,
        groups: int = 1,
        bias: bool = True,
        dilation=1,
        padding_mode: str = "zeros",
        device=None,
        dtype=None,
    ):
        if padding_mode != "zeros":
            raise ValueError(f'Only "zeros" padding mode is supported for {type(self).__name__}')
        if isinstance(padding, str):
            raise ValueError(
                f"{type(self).__name__}: padding must be an int or a tuple of ints, got {padding!r}"
            )
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            output_padding,
            groups,
            bias,
            padding_mode,
            device,
            dtype,
        )

    def _output_padding(self, input, output_size) -> tuple:
        """The output_padding that gives ``output_size`` (torch's rule and error)."""
        if output_size is None:
            return self.output_padding
        nd = self._nd
        C.check_input_rank(input, nd, type(self).__name__)
        output_size = tuple(int(s) for s in output_size)
        lead = input.data.ndim - nd
        if len(output_size) == lead + nd:
            output_size = output_size[lead:]
        if len(output_size) != nd:
            raise ValueError(
                f"ConvTranspose{nd}D: for {input.data.ndim}D input, output_size "
                f"must have {nd} or {lead + nd} elements (got {len(output_size)})"
            )
        spatial = input.data.shape[lead:]
        mins = [
            (n - 1) * s - 2 * p + d * (k - 1) + 1
            for n, s, p, d, k in zip(
                spatial, self.stride, self.padding, self.dilation, self.kernel_size
            )
        ]
        maxs = [m + s - 1 for m, s in zip(mins, self.stride)]
        for size, lo, hi in zip(output_size, mins, maxs):
            if size < lo or size > hi:
                raise ValueError(
                    f"requested an output size of {list(output_size)}, but valid "
                    f"sizes range from {mins} to {maxs} (for an input of "
                    f"{list(spatial)})"
                )
        return tuple(s - m for s, m in zip(output_size, mins))

    def forward(self, input, output_size=None):
        out_pad = self._output_padding(input, output_size)
        return C.conv_transpose_nd(
            input,
            self.weight,
            self.bias,
            self.stride,
            self.padding,
            out_pad,
            self.groups,
            self.dilation,
            self._nd,
            type(self).__name__,
        )


class ConvTranspose1d(_ConvTranspose):
    _nd = 1


class ConvTranspose2d(_ConvTranspose):
    """The transpose (input gradient) of Conv2d as a layer, e.g. for upsampling."""

    _nd = 2


class ConvTranspose3d(_ConvTranspose):
    _nd = 3


__all__ = ["Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"]
