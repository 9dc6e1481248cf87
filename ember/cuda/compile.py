"""Load Ember's CUDA kernel sources with ``cupy.RawModule``: compiled once per process.

Each kernel family is one ``ember/cuda/<family>.cu`` file whose templates are instantiated by
name (``softmax_forward<float, false>``); the launcher module lists those name expressions and
this module compiles the file for all of them in one NVRTC call, cached per (file, names).
``_common.cu`` is inlined into the source text (not ``#include``d through a path) so CuPy's
on-disk cache key covers it.

``EMBER_CUDA_KERNELS=0`` switches every kernel off: the ops then run their NumPy/CuPy
composite, which is also each kernel's oracle in the tests.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from ember.tensor.backend import cupy_module

KERNEL_DIR = Path(__file__).resolve().parent
COMMON = "_common.cu"
_INCLUDE_COMMON = f'#include "{COMMON}"'

# C++ storage type of each supported floating dtype. CuPy before 14 has no bfloat16 dtype, so a
# bf16 device array may also arrive as its uint16 bit pattern.
_CTYPES = {
    "float32": "float",
    "float16": "__half",
    "bfloat16": "__nv_bfloat16",
    "uint16": "__nv_bfloat16",
}


# A null pointer kernel argument (an 8-byte zero) for an optional array.
NULL = np.uint64(0)


def opt(arr):
    """``arr``, or the null pointer for a missing optional array."""
    return NULL if arr is None else arr


def kernels_enabled() -> bool:
    """False when ``EMBER_CUDA_KERNELS=0``: ops then take their composite path."""
    return os.environ.get("EMBER_CUDA_KERNELS", "1") != "0"


def ctype(dtype) -> str | None:
    """The kernel template argument for ``dtype`` (None when no kernel handles it)."""
    return _CTYPES.get(np.dtype(dtype).name)


def source(filename: str) -> str:
    """The source text of a kernel file with ``_common.cu`` inlined."""
    text = (KERNEL_DIR / filename).read_text()
    if _INCLUDE_COMMON in text:
        common = (KERNEL_DIR / COMMON).read_text().replace("#pragma once", "")
        text = text.replace(_INCLUDE_COMMON, common, 1)
    return text


def _cuda_include_dirs() -> list:
    """Toolkit include folders that hold cuda_fp16.h / cuda_bf16.h. NVRTC ships recent
    copies built in and CuPy adds its own; these cover toolkits where neither does."""
    roots = [os.environ.get("CUDA_PATH"), os.environ.get("CUDA_HOME"), "/usr/local/cuda"]
    try:
        from cupy.cuda import get_cuda_path

        roots.append(get_cuda_path())
    except Exception:  # an old CuPy or no toolkit: NVRTC's built-in headers remain
        pass
    found = []
    for root in roots:
        if root and (Path(root) / "include" / "cuda_bf16.h").is_file():
            inc = str(Path(root) / "include")
            if inc not in found:
                found.append(inc)
    return found


@functools.cache
def module(filename: str, names: tuple):
    """The compiled ``RawModule`` of ``filename`` with every name expression in ``names``."""
    cp = cupy_module()
    options = ("--std=c++17",) + tuple(f"-I{d}" for d in _cuda_include_dirs())
    mod = cp.RawModule(code=source(filename), options=options, name_expressions=list(names))
    mod.compile()
    return mod


@functools.cache
def function(filename: str, names: tuple, name: str):
    """One kernel (a ``RawKernel``) of the module, looked up once."""
    if name not in names:
        raise KeyError(f"{filename}: {name} is not among the instantiated kernels {names}")
    return module(filename, names).get_function(name)


def blocks_for(n: int, threads: int, cap: int = 65535 * 8) -> int:
    """Grid size for a grid-stride loop over ``n`` items (at least 1, at most ``cap``)."""
    return max(1, min(cap, (n + threads - 1) // threads))


def row_threads(cols: int, per_thread: int = 4, max_threads: int = 1024) -> int:
    """Threads for one block per row: about ``per_thread`` elements each, a multiple of 32."""
    want = (cols + per_thread - 1) // per_thread
    return max(32, min(max_threads, (want + 31) // 32 * 32))


def contiguous(arr):
    """``arr`` itself when C-contiguous, else a C-contiguous copy (kernels index flat)."""
    if arr.flags.c_contiguous:
        return arr
    return cupy_module().ascontiguousarray(arr)


def to_f32(arr):
    """fp32 values of a kernel-dtype array (a uint16 array is read as bf16 bit patterns)."""
    if arr.dtype == np.uint16:
        return (arr.astype(np.uint32) << 16).view(np.float32)
    return arr.astype(np.float32, copy=False)


def from_f32(arr, dtype):
    """An fp32 array stored as ``dtype``; uint16 means bf16 bits (round to nearest even)."""
    if np.dtype(dtype) == np.uint16:
        bits = _contiguous_f32(arr).view(np.uint32)
        return ((bits + (((bits >> 16) & 1) + 0x7FFF)) >> 16).astype(np.uint16)
    return arr.astype(dtype, copy=False)


def cast(arr, dtype):
    """``arr`` stored as ``dtype``: itself when it already is, through fp32 when either side
    is bf16 bits (uint16; a plain astype would convert the integers)."""
    dtype = np.dtype(dtype)
    if arr.dtype == dtype:
        return arr
    if dtype == np.uint16 or arr.dtype == np.uint16:
        return from_f32(to_f32(arr), dtype)
    return arr.astype(dtype)


def _contiguous_f32(arr):
    """A C-contiguous fp32 array (a view needs contiguity to be reinterpreted as bits)."""
    arr = arr.astype(np.float32, copy=False)
    return arr if arr.flags.c_contiguous else arr.copy()
