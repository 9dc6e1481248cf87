"""Linear and Bilinear layers (Identity lives with the containers, ember.nn.Identity)."""

from __future__ import annotations

import math

from ember.autograd.autocast_state import state as _autocast
from ember.nn import init
from ember.nn.functional.linear import _Linear, bilinear, linear
from ember.nn.module import Module
from ember.nn.parameter import Parameter
from ember.tensor.creation import empty
from ember.tensor.tensor import Tensor


class Linear(Module):
    """y = x @ weight.T + bias, weight (out_features, in_features), initialised as torch's."""

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None
    ):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = Parameter(empty((out_features, in_features), device=device, dtype=dtype))
        if bias:
            self.bias = Parameter(empty((out_features,), device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # kaiming_uniform_(a=sqrt(5)) gives U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as in torch
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input):
        if not isinstance(input, Tensor):
            raise TypeError(f"Linear: expected a Tensor input, got {type(input).__name__}")
        shape = input.data.shape
        if not shape or shape[-1] != self.in_features:
            raise RuntimeError(
                f"Linear: expected input with last dimension {self.in_features} "
                f"(in_features), got input of shape {tuple(shape)}"
            )
        params = self._parameters  # not self.weight: Module.__getattr__ is a slow fallback
        w = params.get("weight")
        if w is None:
            w = self.weight
        b = params["bias"] if "bias" in params else self.bias
        if _autocast.enabled or input.data.dtype != w.data.dtype or input.data.ndim == 1:
            return linear(input, w, b)  # its checks name the mismatch; it applies autocast
        return _Linear().apply(input, w, b)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )


class Bilinear(Module):
    """y = x1 @ weight[o] @ x2 + bias[o], weight (out, in1, in2), initialised as torch's."""

    def __init__(
        self,
        in1_features: int,
        in2_features: int,
        out_features: int,
        bias: bool = True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.in1_features = in1_features
        self.in2_features = in2_features
        self.out_features = out_features
        self.weight = Parameter(
            empty((out_features, in1_features, in2_features), device=device, dtype=dtype)
        )
        if bias:
            self.bias = Parameter(empty((out_features,), device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1 / math.sqrt(self.weight.shape[1])
        init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input1, input2):
        for t, n, which in (
            (input1, self.in1_features, "input1"),
            (input2, self.in2_features, "input2"),
        ):
            if not isinstance(t, Tensor) or not t.data.shape or t.data.shape[-1] != n:
                shape = tuple(t.data.shape) if isinstance(t, Tensor) else type(t).__name__
                raise RuntimeError(
                    f"Bilinear: expected {which} with last dimension {n}, got "
                    f"{which} of shape {shape}"
                )
        return bilinear(input1, input2, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (
            f"in1_features={self.in1_features}, in2_features={self.in2_features}, "
            f"out_features={self.out_features}, bias={self.bias is not None}"
        )


__all__ = ["Linear", "Bilinear"]
