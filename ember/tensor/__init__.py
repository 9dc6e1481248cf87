"""Tensor, dtypes, devices, the array backend, creation functions and the RNG."""

from ember.tensor.backend import cuda_is_available, get_array_module
from ember.tensor.creation import (
    arange,
    as_tensor,
    empty,
    empty_like,
    eye,
    from_numpy,
    full,
    full_like,
    linspace,
    logspace,
    ones,
    ones_like,
    tensor,
    zeros,
    zeros_like,
)
from ember.tensor.device import device
from ember.tensor.dtypes import (
    bfloat16,
    bool_,
    double,
    dtype,
    float,
    float16,
    float32,
    float64,
    get_default_dtype,
    half,
    int8,
    int16,
    int32,
    int64,
    long,
    promote_types,
    set_default_dtype,
    short,
    uint8,
)
from ember.tensor.dtypes import int as int  # noqa: PLC0414
from ember.tensor.random import (
    Generator,
    bernoulli,
    default_generator,
    get_rng_state,
    initial_seed,
    manual_seed,
    multinomial,
    rand,
    rand_like,
    randint,
    randint_like,
    randn,
    randn_like,
    randperm,
    seed,
    set_rng_state,
)
from ember.tensor.tensor import Size, Tensor

bool = bool_  # noqa: A001 - ember.bool, as torch.bool

__all__ = [
    "Tensor", "Size", "device", "dtype", "tensor", "as_tensor", "from_numpy", "zeros", "ones",
    "full", "empty", "zeros_like", "ones_like", "full_like", "empty_like", "arange",
    "linspace", "logspace", "eye", "rand", "randn", "randint", "randperm", "rand_like",
    "randn_like", "randint_like", "bernoulli", "multinomial", "Generator", "manual_seed",
    "seed", "initial_seed", "get_rng_state", "set_rng_state", "default_generator",
    "get_array_module", "cuda_is_available", "float16", "bfloat16", "float32", "float64",
    "int8", "int16", "int32", "int64", "uint8", "bool", "half", "float", "double", "short",
    "int", "long", "get_default_dtype", "set_default_dtype", "promote_types",
]
