"""Block-parallel execution of raw-array kernels on the CPU.

Why: NumPy's ufuncs run on one core while torch's CPU kernels use every core, so a fused
kernel (gelu, layer norm, attention) that is a dozen ufunc passes loses 2x on two cores. NumPy
releases the GIL inside ufunc loops and BLAS calls, so the same kernel run on blocks of rows
from a few threads uses the other cores too.

Blocks are handed out dynamically (a shared counter), not split evenly up front: on a busy
machine a descheduled worker simply takes fewer blocks, and the caller never waits for a
thread that has not started (it only waits for blocks already in progress). Smaller blocks
also keep a kernel's temporaries in cache.

``EMBER_NUM_THREADS`` sets the thread count (default: the cores this process may use);
``set_num_threads`` changes it at run time. Only NumPy arrays are split: CuPy runs on the GPU.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ember.tensor import dtypes as _dtypes


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


_threads = max(1, int(os.environ.get("EMBER_NUM_THREADS", 0) or _cores()))
_pool: ThreadPoolExecutor | None = None
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


def _get_pool(workers: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    if _pool is None or _pool_size < workers:
        _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ember-cpu")
        _pool_size = workers
    return _pool


def _forget_pool() -> None:  # a forked child must not reuse the parent's (dead) threads
    global _pool, _pool_size
    _pool, _pool_size = None, 0


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
    api = _openblas()
    before = api[0]() if api else 1
    if before != 1:
        api[1](1)
    try:
        for _ in range(min(threads, count) - 1):
            pool.submit(state.work_quietly)
        state.work()
        if state.error is None and state.done < state.count:
            state.finished.wait()
    finally:
        if before != 1:
            api[1](before)
    if state.error is not None:
        raise state.error


def _block(size: int, threads: int) -> int:
    """Rows (or columns) per GEMM block: one block per thread up to 256 of them, else two."""
    return max(-(-size // (2 * threads)), min(-(-size // threads), 256))


def gemm(a, b, bias=None):
    """``a @ b`` (plus ``bias``, a row vector, when given) for 2-D arrays.

    float32/float64 NumPy products run with OpenBLAS on one thread; large ones are split into
    blocks of rows (of columns when ``a`` has only a few rows) run on the CPU threads, each
    block adding its bias while it is in cache. Anything else is a plain ``a @ b``.
    """
    if type(a) is np.ndarray and a.dtype in HALF_DTYPES and b.dtype == a.dtype:
        f32 = np.float32
        out = gemm(a.astype(f32), b.astype(f32), None if bias is None else bias.astype(f32))
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
    threads = _threads if macs >= GEMM_MIN_MACS else 1
    out = np.empty((m, n), a.dtype)
    # Row blocks (measured faster than column blocks except for a few rows, such as the
    # ones-row of a bias gradient). Every block repacks ``b``, so small products get one block
    # per thread (2 blocks instead of 4: up to 30% faster at 128 rows); large ones two per
    # thread, so a descheduled thread on a busy machine holds up less of the product.
    if threads == 1 or m >= 32 * threads or m >= n:
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
    get, put = api
    before = get()
    if before != 1:
        put(1)
    try:
        kernel(0, size)
    finally:
        if before != 1:
            put(before)
    return out


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
