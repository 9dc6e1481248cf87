"""Gradient buckets and the communication thread behind DistributedDataParallel.

The plan (``plan_buckets``) walks the parameters in reverse registration order (roughly the
order backward finishes them) and cuts a new bucket, per dtype, once one reaches its cap: a
small first cap (so communication starts early) then the full cap, as torch's reducer does.
Each bucket owns one preallocated flat array (its gradients, then one "has a gradient" flag per
parameter). A post-accumulate-grad hook copies a finished gradient into its slot; when a
bucket is complete (and every bucket before it has been launched, so all ranks issue the
allreduces in the same order) it goes to the communication thread, whose MPI calls release the
GIL while backward goes on. MPICH's blocking calls spin on a core, which on a busy CPU takes it
from backward; so while backward still computes, the thread runs an Iallreduce and tests it
with 50 us sleeps in between, and once backward has ended it simply waits
(``EMBER_DDP_YIELD=0``: always the blocking Allreduce).

At the end of backward (an engine callback) the remaining buckets are filled, gradients that
never came are zero-filled (the flags say which parameters no rank used: those keep
``grad=None``), the thread is joined and every ``param.grad`` becomes a view of its bucket,
averaged over the ranks.
"""

from __future__ import annotations

import os
import queue
import threading
import time

import numpy as np

from ember.autograd.engine import queue_callback
from ember.tensor.backend import get_array_module
from ember.tensor.tensor import Tensor

__all__ = ["plan_buckets", "Reducer", "CommThread", "compress", "decompress"]

_MB = 1024 * 1024


def plan_buckets(sizes, dtypes, cap_bytes: int, first_cap_bytes: int) -> list:
    """Bucket assignment: lists of parameter indices, in launch order.

    ``sizes[i]`` is parameter i's size in bytes and ``dtypes[i]`` its dtype; indices follow
    registration order and are visited in reverse. A bucket holds one dtype and closes as soon
    as it reaches its cap (the first bucket of each dtype ``first_cap_bytes``, later ones
    ``cap_bytes``). Buckets are ordered by the position of their first parameter in the walk.
    """
    if cap_bytes <= 0 or first_cap_bytes <= 0:
        raise ValueError(
            f"plan_buckets: caps must be positive, got bucket_cap={cap_bytes} "
            f"bytes and first_bucket={first_cap_bytes} bytes"
        )
    open_, closed, ncut = {}, [], {}
    for i in reversed(range(len(sizes))):
        key = str(dtypes[i])
        bucket = open_.setdefault(key, [[], 0])
        bucket[0].append(i)
        bucket[1] += int(sizes[i])
        cap = first_cap_bytes if ncut.get(key, 0) == 0 else cap_bytes
        if bucket[1] >= cap:
            closed.append(bucket[0])
            del open_[key]
            ncut[key] = ncut.get(key, 0) + 1
    closed.extend(b[0] for b in open_.values())
    order = {i: pos for pos, i in enumerate(reversed(range(len(sizes))))}
    closed.sort(key=lambda b: order[b[0]])
    return closed


def _low_dtype(compression):
    if compression == "bf16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(np.float16)


def compress(flat, scale: float, out):
    """``flat * scale`` rounded into the low-precision ``out`` (scaling first keeps the sum of
    the ranks' gradients inside float16's range)."""
    np.multiply(flat, flat.dtype.type(scale), out=out, casting="unsafe")
    return out


def decompress(low, out):
    """The low-precision ``low`` back into ``out`` (its original dtype)."""
    np.copyto(out, low, casting="unsafe")
    return out


class CommThread:
    """A worker thread running submitted calls in order (the MPI calls release the GIL)."""

    def __init__(self, name: str = "ember-ddp-comm"):
        self.name = name
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._cv = threading.Condition()
        self._submitted = self._done = 0
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def submit(self, fn, *args) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        with self._cv:
            self._submitted += 1
        self._q.put((fn, args))

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            fn, args = item
            try:
                fn(*args)
            except BaseException as exc:  # handed to the main thread by wait()
                if self._error is None:
                    self._error = exc
            with self._cv:
                self._done += 1
                self._cv.notify_all()

    def wait(self) -> None:
        """Block until every submitted call has run; re-raise the first error."""
        with self._cv:
            while self._done < self._submitted:
                self._cv.wait()
        if self._error is not None:
            exc, self._error = self._error, None
            raise RuntimeError(
                f"DistributedDataParallel: the gradient allreduce failed: {exc}"
            ) from exc

    def stop(self) -> None:
        t = self._thread
        if t is not None:
            self._q.put(None)
            t.join(timeout=10)
        self._thread = None


class _Bucket:
    __slots__ = (
        "index",
        "params",
        "views",
        "flags",
        "flat",
        "low",
        "pending",
        "ready",
        "nbytes",
        "t_start",
        "t_end",
    )

    def __init__(self, index, params, compression):
        self.index, self.params = index, params
        dtype = params[0].data.dtype
        xp = get_array_module(params[0].data)  # device buckets on the NCCL path
        numels = [p.data.size for p in params]
        total = sum(numels)
        self.flat = xp.zeros(total + len(params), dtype)
        self.views, off = [], 0
        for p, n in zip(params, numels):
            self.views.append(self.flat[off : off + n].reshape(p.data.shape))
            off += n
        self.flags = self.flat[total:]
        self.nbytes = self.flat.nbytes
        self.low = (
            None if compression is None else xp.empty(self.flat.size, _low_dtype(compression))
        )
        self.pending, self.ready = len(params), [False] * len(params)
        self.t_start = self.t_end = 0.0


class Reducer:
    """Averages the gradients of ``params`` over ``comm`` during backward."""

    def __init__(
        self,
        params,
        comm,
        bucket_cap_mb: float = 25,
        first_bucket_mb: float = 1,
        compression=None,
        sync_flag=None,
    ):
        if compression not in (None, "fp16", "bf16"):
            raise ValueError(
                f"DistributedDataParallel: compression must be None, 'fp16' or "
                f"'bf16', got {compression!r}"
            )
        self.comm = comm
        self.compression = compression
        self.params = [p for p in params if p.requires_grad]
        for p in self.params:
            if not isinstance(p.data, np.ndarray) and not getattr(
                comm, "accepts_device_arrays", False
            ):
                raise NotImplementedError(
                    "DistributedDataParallel: CUDA parameters need the NCCL communicator "
                    "(ember.distributed.nccl.CudaReducer)"
                )
        plan = plan_buckets(
            [p.data.nbytes for p in self.params],
            [p.data.dtype for p in self.params],
            int(bucket_cap_mb * _MB),
            int(first_bucket_mb * _MB),
        )
        self.buckets = [
            _Bucket(k, [self.params[i] for i in idx], compression) for k, idx in enumerate(plan)
        ]
        self._where = {}
        for b in self.buckets:
            for slot, p in enumerate(b.params):
                self._where[id(p)] = (b, slot)
        self.sync_flag = sync_flag or (lambda: True)
        self.forward_sync = None  # what DDP.forward decided for the coming backward
        self.reachable = None  # ids of the parameters the last forward used (if walked)
        self.active = False
        self._sync = True
        self._next = 0
        self.thread = CommThread()
        self.t_backward_end = self._t_begin = self._t_sync_end = 0.0
        # buckets sent while backward computes poll with sleeps instead of spinning in MPI
        self.yield_cpu = os.environ.get("EMBER_DDP_YIELD", "1") != "0"
        self._handles = [p.register_post_accumulate_grad_hook(self._on_grad) for p in self.params]

    # -------------------------------------------------------------- during backward
    def _begin(self) -> None:
        sync = self.forward_sync if self.forward_sync is not None else self.sync_flag()
        self.active, self._sync, self._next = True, sync, 0
        self._t_begin = time.perf_counter()
        queue_callback(self._finalize)
        if sync:
            for b in self.buckets:
                b.pending = len(b.params)
                b.ready = [False] * len(b.params)
                b.flags[...] = 0
            if self.reachable is not None:  # the forward did not use these: ready now
                for b in self.buckets:
                    for slot, p in enumerate(b.params):
                        if id(p) not in self.reachable:
                            self._fill(b, slot, p)
                            b.pending -= 1
                self.reachable = None
                self._launch_ready()

    def _on_grad(self, p) -> None:
        if not self.active:
            self._begin()
        if not self._sync:
            return
        b, slot = self._where[id(p)]
        if b.ready[slot]:
            return
        view = b.views[slot]
        g = p.grad.data
        if g is not view:
            view[...] = g
        b.flags[slot] = 1
        b.ready[slot] = True
        b.pending -= 1
        if b.pending == 0:
            self._launch_ready()

    @staticmethod
    def _fill(b: _Bucket, slot: int, p) -> None:
        """A parameter whose hook did not fire this pass: send its ``.grad`` as it stands
        (accumulated under no_sync) or zeros (flag 0: unused on this rank)."""
        view = b.views[slot]
        g = None if p.grad is None else p.grad.data
        if g is None:
            view[...] = 0
        else:
            if g is not view:
                view[...] = g
            b.flags[slot] = 1
        b.ready[slot] = True

    def _launch_ready(self) -> None:
        buckets = self.buckets
        while self._next < len(buckets) and buckets[self._next].pending == 0:
            self.thread.submit(self._allreduce, buckets[self._next])
            self._next += 1

    def _allreduce(self, b: _Bucket) -> None:
        """On the communication thread: average one bucket over the ranks, in place."""
        b.t_start = time.perf_counter()
        scale = 1.0 / self.comm.size
        busy = self._backward_running if self.yield_cpu else None
        if b.low is None:
            self.comm.allreduce(b.flat, "sum", yield_while=busy)
            b.flat *= b.flat.dtype.type(scale)
        else:
            compress(b.flat, scale, b.low)
            self.comm.allreduce(b.low, "sum", yield_while=busy)
            decompress(b.low, b.flat)
        b.t_end = time.perf_counter()

    def _backward_running(self) -> bool:
        return self.t_backward_end < self._t_begin

    def _finalize(self) -> None:
        """Engine callback at the end of backward: fill, launch, join, write back."""
        self.t_backward_end = time.perf_counter()
        try:
            if not self._sync:
                return
            self._t_sync_end = self.t_backward_end
            for b in self.buckets[self._next :]:
                for slot, p in enumerate(b.params):
                    if not b.ready[slot]:
                        self._fill(b, slot, p)
                b.pending = 0
            self._launch_ready()
            self.thread.wait()
            for b in self.buckets:
                flags = b.flags.tolist()  # one read per bucket (a device bucket: one copy)
                for slot, p in enumerate(b.params):
                    if flags[slot] > 0 and (p.grad is None or p.grad.data is not b.views[slot]):
                        p.grad = Tensor(b.views[slot])
        finally:
            self.active = False
            self.forward_sync = None

    def wait(self) -> None:
        """Make sure the last backward's allreduces are done (they are, after backward)."""
        self.thread.wait()

    def timings(self) -> dict:
        """Seconds spent in allreduce during the last synchronised backward, and how much of
        it ran before backward ended (hidden behind computation)."""
        total = hidden = 0.0
        for b in self.buckets:
            d = b.t_end - b.t_start
            total += d
            hidden += max(0.0, min(b.t_end, self._t_sync_end) - b.t_start)
        return {
            "allreduce_s": total,
            "hidden_s": hidden,
            "hidden_share": hidden / total if total > 0 else 0.0,
        }

    def remove_hooks(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def close(self) -> None:
        self.remove_hooks()
        self.thread.stop()
