"""Communicators: rank, size and the few collectives Ember needs, over mpi4py.

``world()`` is the one communicator of the job: the MPI one when the process was started by
``mpiexec``/``srun`` (detected from the launcher's environment, so a plain ``python x.py`` never
imports mpi4py), otherwise a trivial single-process one with the same interface.

Arrays are reduced and broadcast in place, in their own dtype (float16 natively; bfloat16
through a small user-defined MPI op). Objects travel as JSON, never pickle. Every collective is
announced to the watchdog (``watchdog.py``), which aborts the job when one stalls, and
``world()`` installs the abort-on-exception hook (``failure.py``), so one failing rank ends the
job instead of leaving the others blocked. CuPy arrays are staged through host memory here; the
NCCL path (issue: CUDA) plugs in as another Communicator with the same methods.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

__all__ = [
    "Communicator",
    "LocalCommunicator",
    "world",
    "launch_env",
    "launched_under_mpi",
    "DEFAULT_TIMEOUT",
]

DEFAULT_TIMEOUT = 1800.0  # seconds a collective may wait before the watchdog aborts the job

# (rank, size, local rank) variables of the launchers Ember knows: MPICH/Hydra and Intel MPI
# (PMI), Open MPI, PMIx (Slurm, Open MPI 5), MVAPICH.
_RANK_VARS = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "MV2_COMM_WORLD_RANK")
_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
_LOCAL_VARS = (
    "MPI_LOCALRANKID",
    "OMPI_COMM_WORLD_LOCAL_RANK",
    "PMIX_LOCAL_RANK",
    "MV2_COMM_WORLD_LOCAL_RANK",
)

_OPS = ("sum", "mean", "max", "min")
_POLL_SLEEP = 50e-6  # seconds between tests of a non-blocking reduction (see allreduce)


def _first_int(names):
    for name in names:
        value = os.environ.get(name)
        if value is not None and value.strip().lstrip("-").isdigit():
            return int(value)
    return None


def launch_env() -> dict | None:
    """What the launcher's environment says (``rank``, ``size``, ``local_rank``; ``size`` and
    ``local_rank`` may be None), or None when this process was not started by an MPI launcher.
    ``EMBER_MPI=0`` forces None, ``EMBER_MPI=1`` forces an MPI start."""
    force = os.environ.get("EMBER_MPI")
    if force == "0":
        return None
    rank = _first_int(_RANK_VARS)
    if rank is None and force != "1":
        return None
    return {
        "rank": rank or 0,
        "size": _first_int(_SIZE_VARS),
        "local_rank": _first_int(_LOCAL_VARS),
    }


def launched_under_mpi() -> bool:
    """True when an MPI launcher started this process (no mpi4py import)."""
    return launch_env() is not None


def _check_op(op: str, what: str) -> str:
    if op not in _OPS:
        raise ValueError(f"{what}: op must be one of {', '.join(_OPS)}, got {op!r}")
    return op


def _encode(obj, what: str) -> bytes:
    try:
        return json.dumps(obj, allow_nan=True).encode()
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{what}: the object must be JSON-serialisable (dict, list, str, "
            f"number, bool, None), got {type(obj).__name__}: {exc}"
        ) from None


class LocalCommunicator:
    """The one-process communicator: every collective returns its input."""

    rank = 0
    size = 1
    local_rank = 0
    local_size = 1
    name = "local"
    is_mpi = False

    def allreduce(self, array, op: str = "sum", yield_while=None):
        _check_op(op, "allreduce")
        return array

    def broadcast(self, array, root: int = 0):
        return array

    def broadcast_object(self, obj, root: int = 0):
        return json.loads(_encode(obj, "broadcast_object"))

    def allgather_object(self, obj) -> list:
        return [json.loads(_encode(obj, "allgather_object"))]

    def allgather(self, array):
        return np.asarray(array)[None].copy()

    def barrier(self) -> None:
        pass

    def dup(self, name: str) -> LocalCommunicator:
        return self

    def abort(self, code: int = 1) -> None:
        os._exit(code)

    def __repr__(self) -> str:
        return "LocalCommunicator(rank=0, size=1)"


class Communicator:
    """One MPI communicator. Every rank calls each collective, in the same order.

    ``allreduce``/``broadcast`` work in place on contiguous NumPy arrays (others are staged
    through a contiguous host copy); ``*_object`` methods carry JSON-able values.
    """

    is_mpi = True

    def __init__(self, mpi_comm, name: str = "world", watchdog=None, local=None):
        from mpi4py import MPI

        self._MPI = MPI
        self.mpi = mpi_comm
        self.name = name
        self.rank = mpi_comm.Get_rank()
        self.size = mpi_comm.Get_size()
        self.watchdog = watchdog
        self._chan = watchdog.channel(name) if watchdog is not None else None
        if local is None:  # ranks that share memory (one node): the local rank (collective)
            node = mpi_comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
            local = (node.Get_rank(), node.Get_size())
            node.Free()
        self.local_rank, self.local_size = local
        self._ops = {"sum": MPI.SUM, "mean": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}

    def __repr__(self) -> str:
        return f"Communicator({self.name!r}, rank={self.rank}, size={self.size})"

    # ------------------------------------------------------------------ watching
    def _enter(self, op: str) -> None:
        if self._chan is not None:
            self._chan.enter(op)

    def _exit(self) -> None:
        if self._chan is not None:
            self._chan.exit()

    # ------------------------------------------------------------------ arrays
    def _buffer(self, arr, op: str | None = None):
        """(MPI buffer spec, MPI op) for a contiguous NumPy array; bfloat16 goes as 16-bit
        words with Ember's own reduction ops."""
        if arr.dtype.name == "bfloat16":
            return [arr.view(np.uint16), self._MPI.UINT16_T], (None if op is None else _bf16_op(op))
        return arr, (None if op is None else self._ops[op])

    def allreduce(self, array, op: str = "sum", yield_while=None):
        """Reduce ``array`` over all ranks, in place ('sum', 'mean', 'max', 'min'); returns it.

        MPICH's blocking calls spin on a core. With ``yield_while`` (a callable) the reduction
        is an Iallreduce tested every ~50 us with sleeps in between while ``yield_while()`` is
        true (another thread needs the core: backward is still computing), then waited for
        normally.
        """
        _check_op(op, "allreduce")
        host, staged = _host_contiguous(array)
        if op == "mean" and host.dtype.kind not in "fc" and host.dtype.name != "bfloat16":
            raise TypeError(f"allreduce: op='mean' needs a floating array, got {host.dtype}")
        buf, mpi_op = self._buffer(host, op)
        self._enter("allreduce")
        try:
            if yield_while is None:
                self.mpi.Allreduce(self._MPI.IN_PLACE, buf, op=mpi_op)
            else:
                req = self.mpi.Iallreduce(self._MPI.IN_PLACE, buf, op=mpi_op)
                while not req.Test():
                    if not yield_while():
                        req.Wait()
                        break
                    time.sleep(_POLL_SLEEP)
        finally:
            self._exit()
        if op == "mean":
            host *= host.dtype.type(1.0 / self.size)
        return _write_back(array, host, staged)

    def broadcast(self, array, root: int = 0):
        """Overwrite ``array`` with rank ``root``'s values, in place; returns it."""
        host, staged = _host_contiguous(array)
        buf, _ = self._buffer(host)
        self._enter("broadcast")
        try:
            self.mpi.Bcast(buf, root=root)
        finally:
            self._exit()
        return _write_back(array, host, staged)

    def allgather(self, array):
        """A new (size, *array.shape) array of every rank's ``array`` (same shape everywhere)."""
        host = np.ascontiguousarray(_to_host(array))
        out = np.empty((self.size,) + host.shape, host.dtype)
        send, _ = self._buffer(host)
        recv, _ = self._buffer(out)
        self._enter("allgather")
        try:
            self.mpi.Allgather(send, recv)
        finally:
            self._exit()
        return out

    # ------------------------------------------------------------------ objects
    def broadcast_object(self, obj, root: int = 0):
        """Rank ``root``'s JSON-able ``obj`` on every rank (tuples arrive as lists)."""
        error = None
        if self.rank == root:
            try:
                data = _encode(obj, "broadcast_object")
            except TypeError as exc:
                data, error = b"", exc
            n = np.array([len(data) if error is None else -1], np.int64)
        else:
            n = np.zeros(1, np.int64)
        self.broadcast(n, root)
        if n[0] < 0:  # every rank leaves the collective before anyone raises
            raise error or TypeError(
                f"broadcast_object: rank {root}'s object is not JSON-serialisable"
            )
        buf = (
            np.frombuffer(data, np.uint8).copy()
            if self.rank == root
            else np.empty(int(n[0]), np.uint8)
        )
        self.broadcast(buf, root)
        return json.loads(buf.tobytes())

    def allgather_object(self, obj) -> list:
        """Every rank's JSON-able ``obj``, as a list indexed by rank."""
        error = None
        try:
            data = _encode(obj, "allgather_object")
        except TypeError as exc:
            data, error = b"", exc
        sizes = self.allgather(np.array([len(data) if error is None else -1], np.int64))[:, 0]
        if (sizes < 0).any():
            bad = [int(r) for r in np.flatnonzero(sizes < 0)]
            raise error or TypeError(
                f"allgather_object: the objects of ranks {bad} are not JSON-serialisable"
            )
        out = np.empty(int(sizes.sum()), np.uint8)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self._enter("allgather_object")
        try:
            self.mpi.Allgatherv(
                np.frombuffer(data, np.uint8),
                [out, (sizes.tolist(), offsets.tolist()), self._MPI.BYTE],
            )
        finally:
            self._exit()
        raw = out.tobytes()
        return [json.loads(raw[o : o + s]) for o, s in zip(offsets.tolist(), sizes.tolist())]

    # ------------------------------------------------------------------ control
    def barrier(self) -> None:
        self._enter("barrier")
        try:
            self.mpi.Barrier()
        finally:
            self._exit()

    def dup(self, name: str) -> Communicator:
        """A new communicator over the same ranks (collective): its collectives never mix
        with this one's, so another thread can use it (the DDP gradient thread does)."""
        if self.watchdog is not None and name in self.watchdog.channels:
            k = 2  # a second DDP model, say: its own channel (ranks dup in the same order)
            while f"{name}-{k}" in self.watchdog.channels:
                k += 1
            name = f"{name}-{k}"
        return Communicator(self.mpi.Dup(), name, self.watchdog, (self.local_rank, self.local_size))

    def abort(self, code: int = 1) -> None:
        """End every process of the job now (MPI_Abort)."""
        try:
            self._MPI.COMM_WORLD.Abort(code)
        finally:
            os._exit(code)


def _to_host(array):
    if isinstance(array, np.ndarray):
        return array
    if hasattr(array, "get"):  # CuPy: through host memory until the NCCL path exists
        return array.get()
    return np.asarray(array)


def _host_contiguous(array):
    """(contiguous host array to communicate in place, whether it is a staged copy)."""
    if isinstance(array, np.ndarray) and array.flags.c_contiguous and array.flags.writeable:
        return array, False
    return np.ascontiguousarray(_to_host(array)).copy(), True


def _write_back(array, host, staged: bool):
    if not staged:
        return array
    if isinstance(array, np.ndarray):
        if not array.flags.writeable:
            raise ValueError("allreduce/broadcast: the array is read-only")
        array[...] = host
    elif hasattr(array, "set"):  # CuPy: host -> device copy
        array.set(host)
    else:
        array[...] = host
    return array


_BF16_OPS: dict = {}


def _bf16_op(op: str):
    """A user-defined MPI op reducing bfloat16 words (MPI has no bfloat16 type): the values
    are summed (or maxed) in float32 and rounded back once per pair, as NCCL does."""
    mpi_op = _BF16_OPS.get(op)
    if mpi_op is None:
        import ml_dtypes
        from mpi4py import MPI

        fn = {"sum": np.add, "mean": np.add, "max": np.maximum, "min": np.minimum}[op]
        bf16 = np.dtype(ml_dtypes.bfloat16)

        def reduce(inbuf, inoutbuf, datatype):
            a = np.frombuffer(inbuf, bf16)
            b = np.frombuffer(inoutbuf, bf16)
            b[...] = fn(a.astype(np.float32), b.astype(np.float32)).astype(bf16)

        mpi_op = _BF16_OPS[op] = MPI.Op.Create(reduce, commute=True)
    return mpi_op


_WORLD = None


def world(timeout: float | None = None):
    """The job's communicator (created on first call: a collective, so every rank calls it).

    Under an MPI launcher: the MPI ``COMM_WORLD`` communicator, with the collective watchdog
    (``timeout`` seconds, default ``$EMBER_COLLECTIVE_TIMEOUT`` or 1800; 0 disables it) and
    the abort-on-exception hook (``$EMBER_ABORT_ON_EXCEPTION=0`` keeps Python's default).
    Otherwise a ``LocalCommunicator``. A later ``timeout`` updates the watchdog's.
    """
    global _WORLD
    if _WORLD is not None:
        if timeout is not None and getattr(_WORLD, "watchdog", None) is not None:
            _WORLD.watchdog.timeout = float(timeout)
        return _WORLD
    if launch_env() is None:
        _WORLD = LocalCommunicator()
        return _WORLD
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    if timeout is None:
        timeout = float(os.environ.get("EMBER_COLLECTIVE_TIMEOUT", DEFAULT_TIMEOUT))
    dog = None
    if comm.Get_size() > 1 and timeout > 0:
        from ember.distributed.watchdog import Watchdog

        dog = Watchdog(comm, timeout)
    _WORLD = Communicator(comm, "world", dog)
    if dog is not None:
        dog.start()
    if comm.Get_size() > 1 and os.environ.get("EMBER_ABORT_ON_EXCEPTION", "1") != "0":
        from ember.distributed.failure import install_excepthook

        install_excepthook(_WORLD)
    return _WORLD
