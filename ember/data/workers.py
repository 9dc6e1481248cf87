"""Workers for DataLoader(num_workers > 0): processes (fork where available) or threads.

Processes run ``worker_loop``: they read tasks ``(token, batch index, indices, seed)`` from
their own queue and send ``(kind, token, batch index, payload)`` back over their own pipe.
Batches travel in memory: ``Connection.send`` pickles them inside multiprocessing (no file is
ever written or loaded); ember Tensors (which refuse pickling on purpose) are boxed as their
arrays and unboxed in the main process. Sending pickles in the worker, synchronously, so a
batch that cannot be sent turns into a clear error instead of a silent hang. A failing
``__getitem__`` comes back as its type and formatted traceback (strings only) and is raised
again in the main process. Workers are daemons, watch their parent, and are joined, then
terminated, when the pool shuts down.
"""

from __future__ import annotations

import collections.abc
import os
import queue
import random
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import wait as mp_wait

import numpy as np

from ember.data.fetch import make_fetcher
from ember.tensor.random import manual_seed
from ember.tensor.tensor import Tensor

__all__ = ["WorkerInfo", "get_worker_info"]

POLL_S = 0.5  # how often a waiting worker or main process checks that the other side lives
SHUTDOWN_S = 5.0  # how long shutdown waits for workers to exit before terminating them


@dataclass(frozen=True)
class WorkerInfo:
    """What a dataset sees in a worker: ``get_worker_info()`` (None in the main process)."""

    id: int
    num_workers: int
    seed: int
    dataset: object


_process_info: WorkerInfo | None = None
_thread_info = threading.local()


def get_worker_info() -> WorkerInfo | None:
    return getattr(_thread_info, "info", None) or _process_info


def batch_seed(base_seed: int, index: int) -> int:
    """The seed a process worker uses for batch ``index`` of an epoch (independent of which
    worker runs it, so random augmentation in workers survives a mid-epoch resume)."""
    return int(np.random.SeedSequence([base_seed, index]).generate_state(1, np.uint64)[0] >> 1)


def _reseed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    manual_seed(seed)


# --------------------------------------------------------------------------- transport
class _Box:
    """A Tensor's array on its way between processes."""

    __slots__ = ("array", "requires_grad")

    def __init__(self, array, requires_grad: bool) -> None:
        self.array = array
        self.requires_grad = requires_grad

    def __getstate__(self):
        return (self.array, self.requires_grad)

    def __setstate__(self, state) -> None:
        self.array, self.requires_grad = state


def _map(obj, fn_leaf, leaf_type):
    if isinstance(obj, leaf_type):
        return fn_leaf(obj)
    if isinstance(obj, (str, bytes)):
        return obj
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(_map(o, fn_leaf, leaf_type) for o in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map(o, fn_leaf, leaf_type) for o in obj)
    if isinstance(obj, collections.abc.Mapping):
        out = {k: _map(v, fn_leaf, leaf_type) for k, v in obj.items()}
        try:
            return type(obj)(out)
        except TypeError:
            return out
    return obj


def box(batch):
    return _map(batch, lambda t: _Box(t.data, t.requires_grad), Tensor)


def unbox(batch):
    def make(b):
        t = Tensor(b.array)
        if b.requires_grad:
            t.requires_grad_(True)
        return t

    return _map(batch, make, _Box)


class _KeyErrorMessage(str):
    """KeyError prints repr(message); this keeps the traceback text readable (as torch)."""

    def __repr__(self) -> str:
        return self


def error_payload(exc: BaseException, worker_id: int) -> tuple:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return (type(exc).__module__, type(exc).__qualname__, text, worker_id)


def raise_worker_error(payload: tuple, kind: str = "process"):
    """Raise, in the main process, the exception a worker caught (its type when possible)."""
    module, qualname, text, worker_id = payload
    msg = f"Caught {qualname} in DataLoader worker {kind} {worker_id}.\nOriginal {text}"
    cls = sys.modules.get(module)
    for part in qualname.split("."):
        cls = getattr(cls, part, None)
    if not (isinstance(cls, type) and issubclass(cls, BaseException)):
        cls = RuntimeError
    if issubclass(cls, KeyError):
        msg = _KeyErrorMessage(msg)
    try:
        exc = cls(msg)
    except Exception:
        exc = RuntimeError(msg)
    raise exc


# --------------------------------------------------------------------------- the worker
def worker_loop(
    mode: str,
    dataset,
    spec: tuple,
    worker_id: int,
    num_workers: int,
    seed: int,
    init_fn,
    tasks,
    send,
    done,
    parent_pid: int | None,
) -> None:
    """Serve tasks until told to stop (None), the pool is done, or the parent is gone."""
    global _process_info
    if hasattr(send, "send"):  # a Connection (processes) or a callable (threads)
        send = send.send
    iterable, auto_collation, collate_fn, drop_last, batch_size = spec
    info = WorkerInfo(worker_id, num_workers, seed, dataset)
    init_error = None
    try:
        if mode == "process":
            _process_info = info
            _reseed(seed)
        else:
            _thread_info.info = info
        if init_fn is not None:
            init_fn(worker_id)
    except Exception as exc:  # reported with the first task
        init_error = error_payload(exc, worker_id)
    fetcher, token = None, None
    try:
        while True:
            try:
                task = tasks.get(timeout=POLL_S)
            except queue.Empty:
                if done.is_set() or (parent_pid is not None and os.getppid() != parent_pid):
                    return
                continue
            if task is None or done.is_set():
                return
            tok, index, indices, task_seed = task
            if init_error is not None:
                send(("error", tok, index, init_error))
                continue
            try:
                if tok != token or fetcher is None:  # a new epoch: streams start again
                    token, fetcher = tok, None
                    fetcher = make_fetcher(
                        dataset, iterable, auto_collation, collate_fn, drop_last, batch_size
                    )
                if mode == "process":
                    _reseed(task_seed)
                msg = ("data", tok, index, fetcher.fetch(indices))
            except StopIteration:
                msg = ("stop", tok, index, None)
            except Exception as exc:
                msg = ("error", tok, index, error_payload(exc, worker_id))
            if not _send(send, msg, worker_id, mode):
                return
    except KeyboardInterrupt:
        return


def _send(send, msg: tuple, worker_id: int, mode: str) -> bool:
    """Send one result; False when the main process is gone."""
    kind, tok, index, payload = msg
    try:
        send((kind, tok, index, box(payload)) if mode == "process" and kind == "data" else msg)
        return True
    except (BrokenPipeError, EOFError, ConnectionResetError):
        return False
    except Exception as exc:  # the batch could not be pickled: say so instead of hanging
        err = RuntimeError(
            f"DataLoader worker {worker_id} could not send batch {index} to the "
            f"main process ({type(exc).__name__}: {exc}). Batches may hold "
            f"tensors, arrays, numbers and strings inside lists, tuples, dicts "
            f"and namedtuples."
        )
        try:
            send(("error", tok, index, error_payload(err, worker_id)))
            return True
        except Exception:
            return False


# --------------------------------------------------------------------------- pools
class WorkerDiedError(RuntimeError):
    pass


class ProcessPool:
    """Worker processes, one task queue and one result pipe each."""

    mode = "process"

    def __init__(self, ctx, num_workers: int, dataset, spec: tuple, seed: int, init_fn) -> None:
        self.done = ctx.Event()
        self.queues, self.conns, self.procs = [], [], []
        self.closed = False
        parent = os.getpid()
        try:
            for wid in range(num_workers):
                q = ctx.Queue()
                q.cancel_join_thread()  # never block interpreter exit on unsent tasks
                reader, writer = ctx.Pipe(duplex=False)
                p = ctx.Process(
                    target=worker_loop,
                    args=(
                        "process",
                        dataset,
                        spec,
                        wid,
                        num_workers,
                        seed + wid,
                        init_fn,
                        q,
                        writer,
                        self.done,
                        parent,
                    ),
                    daemon=True,
                    name=f"ember-data-worker-{wid}",
                )
                try:
                    p.start()
                except (TypeError, AttributeError) as exc:  # spawn/forkserver pickle the args
                    raise TypeError(
                        f"DataLoader: cannot start {ctx.get_start_method()!r} worker processes: "
                        f"{exc}. Those start methods pickle the dataset; use the 'fork' context "
                        f"(the default on Linux) or multiprocessing_context='thread'."
                    ) from exc
                writer.close()
                self.queues.append(q)
                self.conns.append(reader)
                self.procs.append(p)
        except BaseException:
            self.shutdown()
            raise

    def put(self, wid: int, task) -> None:
        self.queues[wid].put(task)

    def poll(self, timeout: float) -> list:
        """(worker id, message) pairs ready within ``timeout``; WorkerDiedError if one died."""
        by_conn = {c: i for i, c in enumerate(self.conns)}
        sentinels = {p.sentinel: i for i, p in enumerate(self.procs)}
        ready = mp_wait(list(by_conn) + list(sentinels), timeout)
        out, dead = [], set()
        for obj in ready:
            if obj in by_conn:
                wid = by_conn[obj]
                try:
                    msg = obj.recv()
                except (EOFError, OSError):  # the pipe closed: the worker is gone
                    dead.add(wid)
                    continue
                kind, tok, index, payload = msg
                out.append((wid, (kind, tok, index, unbox(payload) if kind == "data" else payload)))
            else:
                dead.add(sentinels[obj])
        if dead:  # workers only exit when told to: any exit now is a crash
            p = self.procs[min(dead)]
            p.join(1.0)
            code = p.exitcode
            how = f" (killed by signal {-code})" if code is not None and code < 0 else ""
            self.shutdown(grace=0.2)
            raise WorkerDiedError(
                f"DataLoader worker (pid {p.pid}) exited unexpectedly with exit code {code}{how}"
            )
        return out

    def shutdown(self, grace: float = SHUTDOWN_S) -> None:
        if self.closed:
            return
        self.closed = True
        self.done.set()
        for q in self.queues:
            try:
                q.put(None)
            except Exception:  # a closed queue: the worker exits on `done` anyway
                pass
        deadline = time.monotonic() + grace
        for p, conn in zip(self.procs, self.conns):
            while p.is_alive() and time.monotonic() < deadline:
                try:  # a worker blocked sending a large batch needs its pipe drained
                    while conn.poll():
                        conn.recv_bytes()
                except (EOFError, OSError):
                    pass
                p.join(0.02)
            if p.is_alive():
                p.terminate()
                p.join(1.0)
        for conn in self.conns:
            conn.close()
        for q in self.queues:
            q.close()


class ThreadPool:
    """Worker threads sharing one result queue: no pickling at all; best for I/O-bound
    ``__getitem__`` (sleeps, file reads, NumPy calls that release the GIL)."""

    mode = "thread"

    def __init__(self, num_workers: int, dataset, spec: tuple, seed: int, init_fn) -> None:
        self.done = threading.Event()
        self.results: queue.Queue = queue.Queue()
        self.queues = [queue.Queue() for _ in range(num_workers)]
        self.closed = False
        self.threads = []
        for wid in range(num_workers):
            t = threading.Thread(
                target=worker_loop,
                args=(
                    "thread",
                    dataset,
                    spec,
                    wid,
                    num_workers,
                    seed + wid,
                    init_fn,
                    self.queues[wid],
                    lambda msg, wid=wid: self.results.put((wid, msg)),
                    self.done,
                    None,
                ),
                daemon=True,
                name=f"ember-data-worker-{wid}",
            )
            t.start()
            self.threads.append(t)

    def put(self, wid: int, task) -> None:
        self.queues[wid].put(task)

    def poll(self, timeout: float) -> list:
        try:
            out = [self.results.get(timeout=timeout)]
        except queue.Empty:
            dead = [t.name for t in self.threads if not t.is_alive()]
            if dead and not self.closed:
                self.shutdown(grace=0.2)
                raise WorkerDiedError(
                    f"DataLoader worker thread {dead[0]} exited unexpectedly"
                ) from None
            return []
        while True:
            try:
                out.append(self.results.get_nowait())
            except queue.Empty:
                return out

    def shutdown(self, grace: float = SHUTDOWN_S) -> None:
        if self.closed:
            return
        self.closed = True
        self.done.set()
        for q in self.queues:
            q.put(None)
        deadline = time.monotonic() + grace
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
