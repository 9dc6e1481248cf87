"""ember.ops.parallel: the dynamic block scheduler and the threaded GEMM."""

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
