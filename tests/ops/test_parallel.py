"""ember.ops.parallel: the dynamic block scheduler and the threaded GEMM."""

import os
import threading
import time

import numpy as np
import pytest

from ember.ops import parallel as P


@pytest.fixture(params=[1, 2, 3])
def threads(request):
    before = P.get_num_threads()
    P.set_num_threads(request.param)
    yield request.param
    P.set_num_threads(before)


def test_run_blocks_covers_every_item_once(threads):
    for n, block in ((0, 4), (1, 4), (10, 3), (100, 7), (64, 64), (65, 64)):
        seen = np.zeros(n, int)
        spans = []

        def kernel(lo, hi, seen=seen, spans=spans):
            seen[lo:hi] += 1
            spans.append((lo, hi))

        P.run_blocks(kernel, n, block)
        assert (seen == 1).all()
        assert all(hi - lo <= block for lo, hi in spans)
        assert sorted(lo for lo, _ in spans) == list(range(0, n, block))


def test_run_blocks_uses_other_threads_when_asked():
    before = P.get_num_threads()
    P.set_num_threads(2)
    names = set()
    barrier = threading.Barrier(2, timeout=5)

    def kernel(lo, hi):
        names.add(threading.current_thread().name)
        if lo < 2:
            barrier.wait()  # the first two blocks must run at the same time

    try:
        P.run_blocks(kernel, 8, 1)
    finally:
        P.set_num_threads(before)
    assert len(names) == 2


def test_run_blocks_single_thread_runs_in_order_in_the_caller():
    order = []
    main = threading.current_thread()

    def kernel(lo, hi):
        assert threading.current_thread() is main
        order.append(lo)

    P.run_blocks(kernel, 10, 2, threads=1)
    assert order == [0, 2, 4, 6, 8]


def test_run_blocks_reraises_the_first_error(threads):
    def kernel(lo, hi):
        if lo == 30:
            raise ValueError("block 30 failed")

    with pytest.raises(ValueError, match="block 30 failed"):
        P.run_blocks(kernel, 100, 10)


def test_worker_threads_are_quiet_about_float_errors():
    """Kernels run under the caller's np.errstate(all='ignore'); pool threads (whose NumPy
    error state is their own) must not warn either."""
    import warnings

    before = P.get_num_threads()
    P.set_num_threads(2)
    x = np.zeros(64, np.float32)
    ran = set()

    def kernel(lo, hi):
        ran.add(threading.current_thread().name)
        np.divide(x[lo:hi], x[lo:hi])  # 0/0: invalid
        time.sleep(0.001)  # let the pool thread take blocks too

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with np.errstate(all="ignore"):
                P.run_blocks(kernel, 64, 1)
    finally:
        P.set_num_threads(before)
    assert len(ran) == 2
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)]


def test_set_num_threads_rejects_nonpositive():
    with pytest.raises(ValueError, match="set_num_threads"):
        P.set_num_threads(0)


def test_split_gives_a_few_blocks_per_thread():
    assert P.split(1000, 10, threads=1) == 1000
    assert P.split(1000, 10, threads=2, per_thread=4) == 125
    assert P.split(1000, 300, threads=2) == 300


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(512, 96, 80), (40, 300, 700), (300, 64, 300)])
@pytest.mark.parametrize("layout", ["nn", "nt", "tn"])
def test_gemm_matches_numpy(threads, dtype, shape, layout):
    m, k, n = shape
    rng = np.random.default_rng(0)
    a = rng.standard_normal((k, m) if layout == "tn" else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if layout == "nt" else (k, n)).astype(dtype)
    a = a.T if layout == "tn" else a
    b = b.T if layout == "nt" else b
    bias = rng.standard_normal(n).astype(dtype)
    old = P.GEMM_MIN_MACS
    P.GEMM_MIN_MACS = 1  # split even these sizes
    try:
        out = P.gemm(a, b)
        out_b = P.gemm(a, b, bias)
    finally:
        P.GEMM_MIN_MACS = old
    tol = 1e-4 if dtype == np.float32 else 1e-12
    assert out.dtype == dtype and out.flags.c_contiguous
    np.testing.assert_allclose(out, a @ b, rtol=tol, atol=tol * k)
    np.testing.assert_allclose(out_b, a @ b + bias, rtol=tol, atol=tol * k)


def test_gemm_leaves_the_blas_thread_count_as_it_was():
    api = P._openblas()
    if not api:
        pytest.skip("NumPy's BLAS is not an OpenBLAS with a thread-count API")
    get, _ = api
    before = get()
    a = np.ones((512, 512), np.float32)
    P.gemm(a, a)
    assert get() == before


def test_gemm_other_dtypes_fall_back_to_numpy():
    a = np.arange(12).reshape(3, 4)
    np.testing.assert_array_equal(P.gemm(a, a.T), a @ a.T)
    np.testing.assert_array_equal(P.gemm(a, a.T, np.arange(3)), a @ a.T + np.arange(3))


def test_run_blocks_runs_blas_on_one_thread_inside_and_restores_it():
    api = P._openblas()
    if not api:
        pytest.skip("NumPy's BLAS is not an OpenBLAS with a thread-count API")
    get, put = api
    before_blas, before = get(), P.get_num_threads()
    put(2)
    P.set_num_threads(2)
    inside = []
    try:
        P.run_blocks(lambda lo, hi: inside.append(get()), 4, 1)
        assert inside and set(inside) == {1}
        assert get() == 2
    finally:
        put(before_blas)
        P.set_num_threads(before)


def test_ufunc_blocks_equals_the_plain_ufunc_on_large_and_small_arrays():
    from ember.ops import parallel

    rng = np.random.default_rng(0)
    big = rng.standard_normal((700, 1031)).astype(np.float32)  # > _UFUNC_MIN, ragged blocks
    small = rng.standard_normal(100).astype(np.float32)
    old = parallel.get_num_threads()
    try:
        for threads in (1, 2, 3):
            parallel.set_num_threads(threads)
            for x in (big, small, big.T, big.astype(np.float64)):
                for fn in (np.exp, np.tanh):
                    out = parallel.ufunc_blocks(fn, x)
                    assert out.shape == x.shape and out.dtype == x.dtype
                    np.testing.assert_array_equal(out, fn(x))
    finally:
        parallel.set_num_threads(old)


# ------------------------------------------------------------------ tasks and BLAS regions
@pytest.fixture
def two_threads():
    before = P.get_num_threads()
    P.set_num_threads(2)
    yield
    P.set_num_threads(before)


def test_submit_runs_the_task_on_a_pool_thread_with_one_thread(two_threads):
    main = threading.current_thread()
    started = threading.Event()

    def fn(threads):
        started.set()
        return threading.current_thread(), threads

    task = P.submit(fn)
    assert started.wait(5)
    thread, threads = task.result()
    assert thread is not main and threads == 1
    assert task.result() == (thread, 1)  # the value stays


def test_result_takes_over_a_task_still_queued(two_threads):
    """A caller never waits behind the queue: with the pool thread busy, result() runs the
    task itself, with the default thread count (None)."""
    release, busy = threading.Event(), threading.Event()

    def block(threads):
        busy.set()
        release.wait(5)

    blocker = P.submit(block)
    assert busy.wait(5)
    task = P.submit(lambda threads: (threading.current_thread(), threads))
    try:
        assert task.result() == (threading.current_thread(), None)
    finally:
        release.set()
    blocker.result()


def test_task_result_reraises_what_the_task_raised(two_threads):
    def boom(threads):
        raise ValueError("task failed")

    task = P.submit(boom)
    with pytest.raises(ValueError, match="task failed"):
        task.result()
    # the pool thread survived: the next task still runs
    assert P.submit(lambda threads: 7).result() == 7


def test_submit_with_one_thread_returns_none():
    before = P.get_num_threads()
    P.set_num_threads(1)
    try:
        assert P.submit(lambda threads: 1) is None
    finally:
        P.set_num_threads(before)


def test_blas_one_thread_regions_nest_and_restore_once_the_last_leaves():
    api = P._openblas()
    if not api:
        pytest.skip("NumPy's BLAS is not an OpenBLAS with a thread-count API")
    get, put = api
    before = get()
    put(2)
    try:
        P.blas_one_thread_enter()
        P.blas_one_thread_enter()  # e.g. a task's product inside another region
        assert get() == 1
        P.blas_one_thread_exit()
        assert get() == 1  # the outer region still runs
        P.blas_one_thread_exit()
        assert get() == 2
    finally:
        put(before)


def test_gemm_splits_the_side_that_repacks_the_smaller_operand(two_threads, monkeypatch):
    """Few rows, many columns: column blocks (each packs all of ``a``, the small side);
    many rows: row blocks."""
    spans = []
    real = P.run_blocks

    def spy(kernel, n, block, threads=None):
        spans.append(n)
        return real(kernel, n, block, threads)

    monkeypatch.setattr(P, "run_blocks", spy)
    monkeypatch.setattr(P, "GEMM_MIN_MACS", 1)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((128, 784)).astype(np.float32)
    w = rng.standard_normal((512, 784)).astype(np.float32)
    np.testing.assert_allclose(P.gemm(a, w.T), a @ w.T, rtol=1e-4, atol=1e-3)
    tall = rng.standard_normal((2048, 128)).astype(np.float32)
    b = rng.standard_normal((128, 384)).astype(np.float32)
    np.testing.assert_allclose(P.gemm(tall, b), tall @ b, rtol=1e-4, atol=1e-3)
    assert spans == [512, 2048]  # split over columns, then over rows


def test_a_pool_thread_inside_a_task_helps_the_callers_region(two_threads):
    """help_active: a Task's steps leave room for the blocks of a region the caller opens
    meanwhile (the pool thread does not finish its whole Task first)."""
    main = threading.current_thread()
    opened, inside = threading.Event(), threading.Event()
    helped = []

    def task_fn(threads):
        assert opened.wait(5)  # the caller's region is running
        inside.set()
        P.help_active()
        inside.clear()

    task = P.submit(task_fn)

    def kernel(lo, hi):
        opened.set()
        if threading.current_thread() is not main and inside.is_set():
            helped.append(lo)
        time.sleep(0.005)

    P.run_blocks(kernel, 16, 1)
    task.result()
    assert helped
    assert not P._active  # the region is gone once run_blocks returns


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_gets_fresh_threads_and_locks(two_threads):
    assert P.submit(lambda threads: 1).result() == 1  # the parent's pool exists
    pid = os.fork()
    if pid == 0:  # the child: new pool, tasks and BLAS regions still work
        ok = False
        try:
            ok = P.submit(lambda threads: 2).result() == 2
            a = np.ones((256, 256), np.float32)
            ok = ok and bool((P.gemm(a, a) == 256).all()) and not P._active
        except BaseException:  # noqa: BLE001 - the child must always exit here
            ok = False
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
