"""Block-parallel execution of raw-array kernels on the CPU.

Why: NumPy's ufuncs run on one core while torch's CPU kernels use every core, so a fused
kernel (gelu, layer norm, attention) that is a dozen ufunc passes loses 2x on two cores. NumPy
releases the GIL inside ufunc loops and BLAS calls, so the same kernel run on blocks of rows
from a few threads uses the other cores too.

Blocks are handed out dynamically (a shared counter), not split evenly up front: on a busy
machine a descheduled worker simply takes fewer blocks, and the caller never waits for a
thread that has not started (it only waits for blocks already in progress). Smaller blocks
also keep a kernel's temporaries in cache.

Besides blocks of one kernel, whole independent jobs run as ``Task``s (``submit``): a linear
layer's weight gradient beside the rest of backward. A pool thread busy with a Task still
takes blocks of the caller's regions between the Task's steps (``help_active``), and a caller
that needs a Task's value before any pool thread started it runs it itself.

``EMBER_NUM_THREADS`` sets the thread count (default: the cores this process may use);
``set_num_threads`` changes it at run time. Only NumPy arrays are split: CuPy runs on the GPU.
"""

from __future__ import annotations

import os
import queue
import threading

import numpy as np

from ember.tensor import dtypes as _dtypes


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


_threads = max(1, int(os.environ.get("EMBER_NUM_THREADS", 0) or _cores()))
_pool = None
_pool_size = 0


def get_num_threads() -> int:
    """Threads a block-parallel kernel may use (the caller included)."""
    return _threads


def set_num_threads(n: int) -> None:
    """Use ``n`` threads (the calling one included) for block-parallel kernels."""
    global _threads
    if int(n) < 1:
        raise ValueError(f"set_num_threads: expected a positive thread count, got {n}")
    _threads = int(n)


class _Pool:
    """Daemon threads that call the functions put on one queue. Leaner than a
    ThreadPoolExecutor (no Future per call: ~1 ms of the gpt step's main thread went to
    ``submit``); the callers track completion and errors themselves."""

    def __init__(self, workers: int):
        self.queue = queue.SimpleQueue()
        for i in range(workers):
            threading.Thread(target=self._loop, name=f"ember-cpu_{i}", daemon=True).start()

    def _loop(self) -> None:
        get = self.queue.get
        while True:
            fn = get()
            if fn is None:
                return
            try:
                fn()  # run_blocks' and Task's callables record their own errors
            except BaseException:  # noqa: BLE001, S110 - the thread must outlive any one call
                pass

    def submit(self, fn) -> None:
        self.queue.put(fn)

    def shutdown(self, workers: int) -> None:
        for _ in range(workers):
            self.queue.put(None)


def _get_pool(workers: int) -> _Pool:
    global _pool, _pool_size
    if _pool is None or _pool_size < workers:
        if _pool is not None:
            _pool.shutdown(_pool_size)
        _pool = _Pool(workers)
        _pool_size = workers
    return _pool


def _forget_pool() -> None:
    """In a forked child: the parent's threads are gone, and so is whatever they held (a lock
    taken by a pool thread at the fork would never be released)."""
    global _pool, _pool_size, _blas_lock, _blas_users
    _pool, _pool_size = None, 0
    _blas_lock, _blas_users = threading.Lock(), 0
    Task._lock = threading.Lock()
    _active.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


# ------------------------------------------------------------------------ BLAS threads
# OpenBLAS splits every GEMM statically over its threads and busy-waits at the end: on a busy
# machine one descheduled thread stalls the product (measured under load: a (2048, 128) @
# (128, 384) took 16 ms on 2 OpenBLAS threads, 2-7 ms on one). ``gemm`` instead runs OpenBLAS
# on one thread and hands row blocks to the block scheduler below.
GEMM_MIN_MACS = 1 << 22  # smaller products are not split
BLAS_ONE_THREAD_MACS = 1 << 17  # from here on OpenBLAS would thread: run it on one instead
_GEMM_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# float16/bfloat16 NumPy products emulate tensor cores: the (already rounded) half operands
# are multiplied and accumulated in float32 by BLAS and the result is rounded once. NumPy's
# own float16 matmul is a scalar loop: (256, 784) @ (784, 256) takes 199 ms against 1.4 ms
# emulated (0.5 ms in float32); see benchmarks/amp.py.
HALF_DTYPES = frozenset((np.dtype(np.float16), np.dtype(_dtypes.bfloat16.np)))
_blas_api = None


def _openblas():
    """(get, set) of the OpenBLAS thread count NumPy uses, via ctypes (threadpoolctl's trick),
    or False when NumPy's BLAS is not an OpenBLAS that exposes them."""
    global _blas_api
    if _blas_api is None:
        _blas_api = False
        try:
            import ctypes

            with open("/proc/self/maps") as f:
                paths = sorted(
                    {
                        ln.split()[-1]
                        for ln in f
                        if "openblas" in ln.lower() and ln.split()[-1].startswith("/")
                    }
                )
            for path in paths:
                lib = ctypes.CDLL(path)
                for prefix in ("scipy_openblas_", "openblas_"):
                    for suffix in ("64_", ""):
                        get = getattr(lib, f"{prefix}get_num_threads{suffix}", None)
                        put = getattr(lib, f"{prefix}set_num_threads{suffix}", None)
                        if get is not None and put is not None:
                            get.restype, put.argtypes = ctypes.c_int, [ctypes.c_int]
                            _blas_api = (get, put)
                            return _blas_api
        except (OSError, AttributeError):
            _blas_api = False
    return _blas_api


_blas_lock = threading.Lock()
_blas_users = 0  # threads now inside a one-BLAS-thread region
_blas_before = 1  # the count to restore when the last one leaves


def blas_one_thread_enter() -> None:
    """Run OpenBLAS on one thread until the matching ``blas_one_thread_exit``. Counted, since
    the count is process-wide: a region that ends while a task on another thread still runs
    products must not hand OpenBLAS its threads back under it."""
    global _blas_users, _blas_before
    api = _openblas()
    if not api:
        return
    with _blas_lock:
        if _blas_users == 0:
            _blas_before = api[0]()
            if _blas_before != 1:
                api[1](1)
        _blas_users += 1


def blas_one_thread_exit() -> None:
    global _blas_users
    api = _openblas()
    if not api:
        return
    with _blas_lock:
        _blas_users -= 1
        if _blas_users == 0 and _blas_before != 1:
            api[1](_blas_before)


class _Blocks:
    """The shared state of one parallel run: next block, blocks done, first error."""

    __slots__ = ("kernel", "n", "block", "count", "next", "done", "lock", "finished", "error")

    def __init__(self, kernel, n: int, block: int):
        self.kernel, self.n, self.block = kernel, n, block
        self.count = -(-n // block)
        self.next = self.done = 0
        self.lock = threading.Lock()
        self.finished = threading.Event()
        self.error: BaseException | None = None

    def work(self) -> None:
        lock, block, n, count = self.lock, self.block, self.n, self.count
        while True:
            with lock:
                i = self.next
                if i >= count or self.error is not None:
                    return
                self.next = i + 1
            try:
                self.kernel(i * block, min(n, (i + 1) * block))
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
                with lock:
                    if self.error is None:
                        self.error = exc
                    self.next = count
                self.finished.set()
                return
            with lock:
                self.done += 1
                last = self.done == count
            if last:
                self.finished.set()

    def work_quietly(self) -> None:
        # NumPy's error state is per thread: pool threads silence it as the kernels' callers do
        with np.errstate(all="ignore"):
            self.work()


def run_blocks(kernel, n: int, block: int, threads: int | None = None) -> None:
    """Call ``kernel(lo, hi)`` for the consecutive blocks ``[lo, hi)`` of ``range(n)``
    (``block`` long, the last one shorter), spread over up to ``threads`` threads
    (default ``get_num_threads()``). Blocks must write disjoint outputs.

    With one thread or one block, everything runs in the calling thread, in order.
    """
    if n <= 0:
        return
    block = max(1, int(block))
    threads = _threads if threads is None else max(1, int(threads))
    count = -(-n // block)
    if threads == 1 or count == 1:
        for lo in range(0, n, block):
            kernel(lo, min(n, lo + block))
        return
    state = _Blocks(kernel, n, block)
    pool = _get_pool(threads - 1)
    # BLAS calls inside the blocks run on one OpenBLAS thread: its own workers would compete
    # with ours for the same cores (and spin after every call)
    blas_one_thread_enter()
    _active.append(state)  # a pool thread busy with a Task joins in between its steps
    try:
        for _ in range(min(threads, count) - 1):
            pool.submit(state.work_quietly)
        state.work()
        if state.error is None and state.done < state.count:
            state.finished.wait()
    finally:
        _active.remove(state)
        blas_one_thread_exit()
    if state.error is not None:
        raise state.error


_active: list = []  # the run_blocks regions in progress


def help_active() -> None:
    """Take blocks of the regions other threads have open. A long Task calls this between its
    steps, so the caller's next parallel region does not wait for the whole Task."""
    for state in tuple(_active):
        state.work_quietly()


def _block(size: int, threads: int) -> int:
    """Rows (or columns) per GEMM block: one block per thread up to 256 of them, else two;
    evened out (784 columns: 4 x 196, not 3 x 256 and a sliver that repacks ``a`` for 16)."""
    block = max(-(-size // (2 * threads)), min(-(-size // threads), 256))
    return -(-size // -(-size // block))


def gemm(a, b, bias=None, threads: int | None = None):
    """``a @ b`` (plus ``bias``, a row vector, when given) for 2-D arrays.

    float32/float64 NumPy products run with OpenBLAS on one thread; large ones are split into
    blocks of rows (of columns when ``a`` has only a few rows) run on up to ``threads`` CPU
    threads (default ``get_num_threads()``), each block adding its bias while it is in cache.
    Anything else is a plain ``a @ b``.
    """
    if type(a) is np.ndarray and a.dtype in HALF_DTYPES and b.dtype == a.dtype:
        f32 = np.float32
        b32 = None if bias is None else bias.astype(f32)
        out = gemm(a.astype(f32), b.astype(f32), b32, threads)
        return out.astype(a.dtype)
    m, k = a.shape
    n = b.shape[1]
    macs = m * n * k
    api = None
    if (
        macs >= BLAS_ONE_THREAD_MACS
        and type(a) is np.ndarray
        and type(b) is np.ndarray
        and a.dtype == b.dtype
        and a.dtype in _GEMM_DTYPES
        and (bias is None or (type(bias) is np.ndarray and bias.dtype == a.dtype))
    ):
        api = _openblas()
    if not api:
        out = a @ b
        if bias is not None:
            out += bias
        return out
    threads = (_threads if threads is None else max(1, threads)) if macs >= GEMM_MIN_MACS else 1
    out = np.empty((m, n), a.dtype)
    # Every row block packs all of ``b`` again, every column block all of ``a``: column blocks
    # pay off when ``b`` is much the larger (n >= 4m). Second core idle, wall clock: the mlp's
    # (128, 784) @ (784, 512) 0.68 ms in columns, 0.75 in rows (one thread 1.14); at n < 4m
    # the two were within noise, and the gpt's (2048, 128) @ (128, 384) costs +9% CPU time
    # in rows, +16% in columns. Small products get one block per thread (2 blocks instead of
    # 4: up to 30% faster at 128 rows); large ones two per thread, so a descheduled thread
    # on a busy machine holds up less of the product.
    if threads == 1 or n < 4 * m:
        rows = m if threads == 1 else _block(m, threads)

        def kernel(lo, hi):
            ob = np.matmul(a[lo:hi], b, out=out[lo:hi])
            if bias is not None:
                ob += bias

        size, block = m, rows
    else:
        cols = _block(n, threads)

        def kernel(lo, hi):
            ob = np.matmul(a, b[:, lo:hi], out=out[:, lo:hi])
            if bias is not None:
                ob += bias[lo:hi]

        size, block = n, cols
    if threads > 1:
        run_blocks(kernel, size, block, threads)  # sets OpenBLAS to one thread meanwhile
        return out
    blas_one_thread_enter()
    try:
        kernel(0, size)
    finally:
        blas_one_thread_exit()
    return out


class Task:
    """``fn(threads)`` run later on a pool thread (with ``threads=1``), or by the first caller
    of ``result`` if no pool thread has started it yet (with the default threads): a thread
    that needs the value never waits behind a queue, it takes the work over.

    Why: independent products (a linear layer's weight gradient beside its input gradient)
    run whole on the two cores at once, which wastes less than splitting each one, and a
    weight gradient queued here overlaps the serial ops that follow it in backward.
    """

    __slots__ = ("fn", "claimed", "done", "value", "error")
    _lock = threading.Lock()

    def __init__(self, fn):
        self.fn = fn
        self.claimed = False
        self.done = threading.Event()
        self.value = self.error = None

    def _claim(self) -> bool:
        with Task._lock:
            if self.claimed:
                return False
            self.claimed = True
            return True

    def _execute(self, threads) -> None:
        try:
            self.value = self.fn(threads)
        except BaseException as exc:  # noqa: BLE001 - re-raised by result()
            self.error = exc
        finally:
            self.fn = None
            self.done.set()

    def _run_in_pool(self) -> None:
        if not self._claim():
            return  # taken over by result()
        blas_one_thread_enter()
        try:
            with np.errstate(all="ignore"):
                self._execute(1)
        finally:
            blas_one_thread_exit()

    def result(self):
        """The value (re-raising what ``fn`` raised), computed here if still queued."""
        if self._claim():
            self._execute(None)
        else:
            self.done.wait()
        if self.error is not None:
            raise self.error
        return self.value


def submit(fn) -> Task | None:
    """Queue ``fn(threads)`` for a pool thread; None when there is no other thread to run it
    (one thread in all), so the caller simply computes the value itself."""
    if _threads == 1:
        return None
    task = Task(fn)
    _get_pool(_threads - 1).submit(task._run_in_pool)
    return task


def split(n: int, min_block: int, threads: int | None = None, per_thread: int = 4) -> int:
    """A block length for ``run_blocks`` over ``n`` items: about ``per_thread`` blocks per
    thread (so a late thread still gets a share), never below ``min_block`` items."""
    threads = _threads if threads is None else max(1, int(threads))
    if threads == 1:
        return max(n, 1)
    return max(min_block, -(-n // (threads * per_thread)))


_UFUNC_MIN = 1 << 18  # below this a thread hand-off costs more than it saves
_UFUNC_BLOCK = 1 << 16


def ufunc_blocks(ufunc, x):
    """``ufunc(x)`` for a large contiguous float NumPy array, in blocks over the CPU threads
    (transcendental ufuncs such as exp and tanh are compute-bound, so a second core nearly
    halves them); anything else is a plain call."""
    if (
        type(x) is not np.ndarray
        or x.size < _UFUNC_MIN
        or _threads == 1
        or x.dtype not in (np.float32, np.float64)
        or not x.flags.c_contiguous
    ):
        return ufunc(x)
    flat = x.reshape(-1)
    out = np.empty_like(flat)

    def kernel(lo, hi):
        ufunc(flat[lo:hi], out=out[lo:hi])

    run_blocks(kernel, flat.size, _UFUNC_BLOCK)
    return out.reshape(x.shape)
