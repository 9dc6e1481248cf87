"""Shared pieces of the kernel tests: the CuPy/GPU skip, dtype round trips (CuPy has no
bfloat16 dtype: bf16 device arrays travel as uint16 bit patterns, which the kernels read as
__nv_bfloat16) and per-dtype tolerances."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

DTYPES = ("float32", "float16", "bfloat16")
# (rtol, atol) of a kernel against its fp32 composite, per storage dtype
TOL = {"float32": (1e-5, 1e-6), "float16": (2e-3, 2e-3), "bfloat16": (1.6e-2, 1.6e-2)}


def cupy_or_skip():
    """The cupy module, or a clean skip when CuPy or a CUDA device is missing."""
    cp = pytest.importorskip("cupy")
    if getattr(cp, "__fake__", False):  # tests/cuda/fake_cupy.py: no kernels run on it
        pytest.skip("the fake CuPy runs no kernels")
    try:
        count = cp.cuda.runtime.getDeviceCount()
    except Exception as exc:  # driver missing or broken
        pytest.skip(f"no usable CUDA device: {exc}")
    if count == 0:
        pytest.skip("no CUDA device")
    from ember.tensor.backend import cupy_module

    cupy_module()  # ember's dispatch sees CuPy arrays only once the backend has loaded it
    return cp


def storage(x, dtype: str):
    """x (float32 NumPy) rounded to ``dtype``, as the host array the device copy will hold."""
    if dtype == "bfloat16":
        return x.astype(ml_dtypes.bfloat16).view(np.uint16)
    return x.astype(dtype)


def rounded(x, dtype: str):
    """x rounded to ``dtype`` and back to float32: what the kernel really sees."""
    if dtype == "bfloat16":
        return x.astype(ml_dtypes.bfloat16).astype(np.float32)
    return x.astype(dtype).astype(np.float32)


def to_dev(cp, x, dtype: str):
    return cp.asarray(storage(np.asarray(x, dtype=np.float32), dtype))


def to_host(cp, arr, dtype: str):
    """A device array of ``dtype`` storage as float32 NumPy."""
    host = cp.asnumpy(arr)
    if dtype == "bfloat16":
        return host.view(ml_dtypes.bfloat16).astype(np.float32)
    return host.astype(np.float32)


def close(actual, expected, dtype: str, scale: float = 1.0):
    rtol, atol = TOL[dtype]
    np.testing.assert_allclose(actual, expected, rtol=rtol * scale, atol=atol * scale)
