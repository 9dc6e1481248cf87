"""The array backend: NumPy on the CPU, CuPy on CUDA devices.

Op code asks ``get_array_module(array)`` for ``xp`` and is written once. CuPy is optional and
imported on first use, so ``import ember`` works (and stays fast) without it.
"""

from __future__ import annotations

import numpy as np

from ember.tensor.device import CPU, device

_cupy = None
_cupy_error: Exception | None = None


def cupy_module():
    """The cupy module, or a clear RuntimeError when CuPy (or a GPU) is unavailable."""
    global _cupy, _cupy_error
    if _cupy is None and _cupy_error is None:
        try:
            import cupy

            _cupy = cupy
        except Exception as exc:  # ImportError, or a CUDA driver error raised at import
            _cupy_error = exc
    if _cupy is None:
        raise RuntimeError(
            "CUDA is not available: CuPy could not be imported "
            f"({_cupy_error}). Install the 'cuda12' or 'cuda13' extra on a machine with an "
            "NVIDIA GPU, or use device='cpu'."
        )
    return _cupy


def cuda_is_available() -> bool:
    try:
        cp = cupy_module()
        return cp.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def get_array_module(array):
    """numpy for NumPy arrays and scalars, cupy for CuPy arrays."""
    if type(array) is np.ndarray or _cupy is None:
        return np
    return _cupy.get_array_module(array)


def xp_for(dev: device):
    return np if dev.type == "cpu" else cupy_module()


def device_of(array) -> device:
    if type(array) is np.ndarray or _cupy is None or not isinstance(array, _cupy.ndarray):
        return CPU
    return device("cuda", array.device.id)


def to_backend(array, dev: device, non_blocking: bool = False):
    """Move an array to ``dev`` (a no-op when it is already there).

    With ``non_blocking``, a pinned host array (see ``pin_array``) is copied asynchronously on
    the device's side stream; the current stream waits for the copy on the device, so the host
    goes on at once and the compute that follows sees the data.
    """
    if dev.type == "cpu":
        if type(array) is np.ndarray:
            return array
        if _cupy is not None and isinstance(array, _cupy.ndarray):
            return _cupy.asnumpy(array)
        return np.asarray(array)
    cp = cupy_module()
    with cp.cuda.Device(dev.index or 0):
        if non_blocking and type(array) is np.ndarray and is_pinned(array):
            return _async_upload(cp, array, dev.index or 0)
        return cp.asarray(array)


# ------------------------------------------------------------------ pinned memory, side streams
_copy_streams: dict = {}  # device index -> the side stream host-to-device copies run on
_inflight: list = []  # (event, pinned source) pairs: a source must outlive its copy


def is_pinned(array) -> bool:
    """True for a NumPy array (or a view of one) in CuPy's page-locked host memory."""
    if type(array) is not np.ndarray or _cupy is None:
        return False
    base = array
    while isinstance(base, np.ndarray):
        base = base.base
    return type(base).__name__ == "PinnedMemoryPointer"


def pin_array(array: np.ndarray) -> np.ndarray:
    """A copy of ``array`` in page-locked host memory (from CuPy's pinned pool), so uploads
    from it can run asynchronously; the array itself when CUDA is unavailable (inert)."""
    if is_pinned(array) or not cuda_is_available():
        return array
    import cupyx

    out = cupyx.empty_pinned(array.shape, array.dtype)
    np.copyto(out, array)
    return out


def copy_stream(index: int = 0):
    """The non-blocking side stream of a device (created on first use)."""
    cp = cupy_module()
    stream = _copy_streams.get(index)
    if stream is None:
        with cp.cuda.Device(index):
            stream = _copy_streams[index] = cp.cuda.Stream(non_blocking=True)
    return stream


def _async_upload(cp, array: np.ndarray, index: int):
    _inflight[:] = [(ev, src) for ev, src in _inflight if not ev.done]
    out = cp.empty(array.shape, array.dtype)  # allocated on the compute stream that uses it
    stream = copy_stream(index)
    out.set(array, stream=stream)
    event = stream.record()
    cp.cuda.get_current_stream().wait_event(event)
    _inflight.append((event, array))
    return out


def _keep_freed_memory() -> None:
    """Ask glibc to keep freed heap memory instead of returning it to the OS at once.

    Every op allocates fresh arrays; with glibc's defaults a large array is mmap'ed and unmapped
    again, so the next op pays page faults on new memory (measured: a 4M-element elementwise
    forward+backward chain took 104 ms with the defaults and 63 ms with this). It is the CPU
    analogue of a caching allocator: the process keeps its peak heap. Set EMBER_MALLOC_TUNE=0
    to leave malloc alone.
    """
    import ctypes
    import os
    import sys

    if os.environ.get("EMBER_MALLOC_TUNE", "1") == "0" or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: trim the heap top only above 1 GiB free
        libc.mallopt(-3, 1 << 28)  # M_MMAP_THRESHOLD: arrays under 256 MiB come from the heap
    except (OSError, AttributeError):
        pass  # not glibc (e.g. musl): keep the defaults


_keep_freed_memory()
