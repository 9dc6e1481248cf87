"""Bit casts between float32 and int32 inside numba kernels (LLVM ``bitcast``; free, and
vectorisable, where a NumPy ``view`` would need memory). Used for copysign without a branch
and to build 2^n from n in a vectorised exp2."""

from __future__ import annotations

from numba import types
from numba.extending import intrinsic


@intrinsic
def f32_bits(typingctx, value):
    """The int32 bit pattern of a float32."""
    sig = types.int32(types.float32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.int32))

    return sig, codegen


@intrinsic
def bits_f32(typingctx, value):
    """The float32 whose bit pattern is an int32."""
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float32))

    return sig, codegen
