"""The NCCL path of ``ember.distributed``: CUDA gradients averaged GPU to GPU.

One NCCL communicator per process: rank 0 draws the unique id, the MPI communicator
broadcasts it, and every rank joins on the GPU its local rank picks. ``CudaReducer`` is the
MPI Reducer with device buckets: as soon as a bucket is complete its allreduce is enqueued on
the communicator's side stream, after the compute stream's work so far (an event, not a host
wait), so it overlaps the rest of backward; the end of backward makes the compute stream wait
for the side stream. Nothing blocks the host.
"""

from __future__ import annotations

from ember.distributed.reducer import Reducer, compress, decompress
from ember.tensor.backend import cupy_module
from ember.tensor.device import device, to_device

__all__ = ["NcclCommunicator", "CudaReducer", "device_for_local_rank"]

_DTYPES = {
    "float32": "NCCL_FLOAT32",
    "float16": "NCCL_FLOAT16",
    "float64": "NCCL_FLOAT64",
    "bfloat16": "NCCL_BFLOAT16",
    "int32": "NCCL_INT32",
    "int64": "NCCL_INT64",
    "uint8": "NCCL_UINT8",
}
_OPS = {"sum": "NCCL_SUM", "mean": "NCCL_SUM", "max": "NCCL_MAX", "min": "NCCL_MIN"}


def device_for_local_rank(local_rank: int) -> device:
    """The GPU of the rank with this local rank (ranks of a node share its GPUs round-robin),
    made the current CuPy device so that the rank's arrays are allocated there."""
    cp = cupy_module()
    count = cp.cuda.runtime.getDeviceCount()
    if count < 1:
        raise RuntimeError("NCCL: no CUDA device is visible to this process")
    index = int(local_rank) % count
    cp.cuda.Device(index).use()
    return device("cuda", index)


class NcclCommunicator:
    """An NCCL communicator over the ranks of an Ember MPI ``Communicator``.

    ``allreduce`` works in place on CuPy arrays and is asynchronous: it is enqueued on
    ``self.stream`` after everything the current stream has enqueued so far.
    """

    accepts_device_arrays = True

    def __init__(self, comm, device=None):
        cp = cupy_module()
        from cupy.cuda import nccl

        self._nccl_mod = nccl
        self.mpi = comm
        self.rank, self.size = comm.rank, comm.size
        self.local_rank = getattr(comm, "local_rank", 0)
        self.device = (
            device_for_local_rank(self.local_rank) if device is None else to_device(device)
        )
        uid = list(nccl.get_unique_id()) if comm.rank == 0 else None
        uid = comm.broadcast_object(uid, 0)  # 128 small ints, as JSON over MPI
        with cp.cuda.Device(self.device.index or 0):
            self._comm = nccl.NcclCommunicator(self.size, tuple(uid), self.rank)
            self.stream = cp.cuda.Stream(non_blocking=True)
        self._cp = cp

    def _code(self, table: dict, key: str, what: str):
        name = table.get(key)
        if name is None or not hasattr(self._nccl_mod, name):
            raise TypeError(f"NCCL allreduce: unsupported {what} {key!r}")
        return getattr(self._nccl_mod, name)

    def allreduce(self, array, op: str = "sum", yield_while=None, stream=None):
        """Reduce ``array`` (a contiguous CuPy array) over all ranks, in place; returns it."""
        cp = self._cp
        if not isinstance(array, cp.ndarray) or not array.flags.c_contiguous:
            raise TypeError("NCCL allreduce: expected a contiguous CuPy array")
        dtype = self._code(_DTYPES, array.dtype.name, "dtype")
        nccl_op = self._code(_OPS, op, "op")
        s = self.stream if stream is None else stream
        s.wait_event(cp.cuda.get_current_stream().record())
        with cp.cuda.Device(self.device.index or 0):
            self._comm.allReduce(array.data.ptr, array.data.ptr, array.size, dtype, nccl_op, s.ptr)
            if op == "mean":
                with s:
                    array *= array.dtype.type(1.0 / self.size)
        return array

    def join(self) -> None:
        """The current stream waits (on the device) for every allreduce enqueued so far."""
        self._cp.cuda.get_current_stream().wait_event(self.stream.record())

    def synchronize(self) -> None:
        self.stream.synchronize()

    def close(self) -> None:
        destroy = getattr(self._comm, "destroy", None)
        if destroy is not None:
            destroy()

    def __repr__(self) -> str:
        return f"NcclCommunicator(rank={self.rank}, size={self.size}, device={self.device})"


class _StreamQueue:
    """The Reducer's communication "thread" on the NCCL path: calls run at once (they only
    enqueue work on the side stream) and ``wait`` joins the side stream on the device."""

    def __init__(self, comm: NcclCommunicator):
        self.comm = comm

    def submit(self, fn, *args) -> None:
        fn(*args)

    def wait(self) -> None:
        self.comm.join()

    def stop(self) -> None:
        pass


class CudaReducer(Reducer):
    """Averages the gradients of CUDA ``params`` over ``comm`` (an ``NcclCommunicator``)
    during backward: bucketed allreduces on the side stream, overlapped with backward."""

    def __init__(self, params, comm: NcclCommunicator, *args, **kwargs):
        super().__init__(params, comm, *args, **kwargs)
        self.thread = _StreamQueue(comm)

    def _allreduce(self, b) -> None:
        comm = self.comm
        scale = 1.0 / comm.size
        if b.low is None:
            comm.allreduce(b.flat, "sum")
            with comm.stream:
                b.flat *= b.flat.dtype.type(scale)
            return
        comm.stream.wait_event(comm._cp.cuda.get_current_stream().record())
        with comm.stream:  # the compression runs on the side stream too
            compress(b.flat, scale, b.low)
            comm.allreduce(b.low, "sum", stream=comm.stream)
            decompress(b.low, b.flat)
