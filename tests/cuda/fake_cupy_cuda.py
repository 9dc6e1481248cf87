"""The ``cupy.cuda`` half of the fake CuPy (tests/cuda/fake_cupy.py): devices, streams and
events that record what waits on what, pinned host memory, cuRAND handles, a one-process NCCL,
and ``cupyx`` (pinned allocation, scatter_add)."""

from __future__ import annotations

import types

import numpy as np


class _Device:
    def __init__(self, device=None):
        self.id = 0 if device is None else int(getattr(device, "id", device))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def use(self):
        return self

    def synchronize(self):
        pass

    def __eq__(self, other):
        return isinstance(other, _Device) and other.id == self.id

    def __hash__(self):
        return hash(self.id)

    def __repr__(self):
        return f"<CUDA Device {self.id}>"


class _Stream:
    null = None

    def __init__(self, null=False, non_blocking=False, ptr=0):
        self.ptr = 0 if null else id(self)
        self.done = True
        self.copies = 0
        self.waited: list = []

    def __enter__(self):
        _current_stream.append(self)
        return self

    def __exit__(self, *exc):
        _current_stream.pop()
        return False

    def use(self):
        _current_stream[0] = self
        return self

    def synchronize(self):
        pass

    def record(self, event=None):
        event = event or _Event()
        return event

    def wait_event(self, event):
        self.waited.append(event)


class _Event:
    def __init__(self, *args, **kwargs):
        self.done = True

    def record(self, stream=None):
        pass

    def synchronize(self):
        pass


_Stream.null = _Stream(null=True)
_current_stream: list = [_Stream.null]


class PinnedMemoryPointer(bytearray):
    """Page-locked host memory: here a bytearray that NumPy arrays are built on, as CuPy's
    ``cupyx.empty_pinned`` builds them on its pinned pointer (the array's ``base``)."""

    @property
    def ptr(self):
        return id(self)


class _CurandModule(types.ModuleType):
    CURAND_RNG_PSEUDO_DEFAULT = 100
    CURAND_RNG_PSEUDO_PHILOX4_32_10 = 161

    @staticmethod
    def setGeneratorOffset(generator, offset):  # noqa: N802 - cuRAND's name
        generator.offset = int(offset)

    @staticmethod
    def setPseudoRandomGeneratorSeed(generator, seed):  # noqa: N802
        generator.seed = int(seed)


class _CurandHandle:
    def __init__(self, seed):
        self.seed, self.offset = int(seed), 0


def _nccl_namespace():
    """One process's NCCL: an allreduce over the ranks is this rank's buffer (the others
    contribute nothing), and every call is recorded (``calls``) for the tests."""
    nccl = types.ModuleType("fake_cupy.cuda.nccl")
    for i, name in enumerate(["FLOAT32", "FLOAT16", "FLOAT64", "BFLOAT16", "INT32", "INT64"]):
        setattr(nccl, f"NCCL_{name}", 100 + i)
    nccl.NCCL_UINT8, nccl.NCCL_SUM, nccl.NCCL_MAX, nccl.NCCL_MIN = 110, 0, 2, 3
    nccl.calls = []
    nccl.get_unique_id = lambda: tuple(range(-64, 64))

    class NcclCommunicator:
        def __init__(self, ndev, uid, rank):
            if len(uid) != 128 or not 0 <= rank < ndev:
                raise ValueError("ncclCommInitRank: invalid argument")
            self.size, self.rank = ndev, rank

        def allReduce(self, send, recv, count, dtype, op, stream):  # noqa: N802 - NCCL's name
            if send != recv:
                raise NotImplementedError("the fake NCCL reduces in place only")
            nccl.calls.append({"count": count, "dtype": dtype, "op": op, "stream": stream})

        def destroy(self):
            pass

    nccl.NcclCommunicator = NcclCommunicator
    return nccl


def cuda_namespace():
    cuda = types.ModuleType("fake_cupy.cuda")
    cuda.Device = _Device
    cuda.Stream = _Stream
    cuda.Event = _Event
    cuda.get_current_stream = lambda device=None: _current_stream[-1]
    cuda.alloc_pinned_memory = PinnedMemoryPointer
    cuda.PinnedMemoryPointer = PinnedMemoryPointer
    cuda.curand = _CurandModule("fake_cupy.cuda.curand")
    cuda.nccl = _nccl_namespace()
    runtime = types.ModuleType("fake_cupy.cuda.runtime")
    runtime.getDeviceCount = lambda: 1
    runtime.getDevice = lambda: 0
    runtime.getDeviceProperties = lambda i: {
        "name": b"Fake CuPy device (NumPy)",
        "totalGlobalMem": 1 << 34,
        "multiProcessorCount": 1,
        "major": 9,
        "minor": 0,
    }
    runtime.deviceSynchronize = lambda: None
    runtime.memGetInfo = lambda: (1 << 33, 1 << 34)
    cuda.runtime = runtime
    cuda.is_available = lambda: True
    cuda.MemoryPool = type("MemoryPool", (), {"used_bytes": lambda self: 0})
    return cuda


def cupyx_namespace(add_at):
    cupyx = types.ModuleType("cupyx")

    def scatter_add(a, slices, value):
        add_at(a, slices, value)

    def empty_pinned(shape, dtype=float, order="C"):
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        mem = PinnedMemoryPointer(max(nbytes, 1))
        return np.ndarray(shape, dtype=dtype, buffer=mem, order=order)

    def zeros_pinned(shape, dtype=float, order="C"):
        out = empty_pinned(shape, dtype, order)
        out.fill(0)
        return out

    cupyx.scatter_add = scatter_add
    cupyx.empty_pinned = empty_pinned
    cupyx.zeros_pinned = zeros_pinned
    cupyx.__fake__ = True
    return cupyx
