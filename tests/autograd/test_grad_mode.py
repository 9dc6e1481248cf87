"""Grad modes: no_grad, enable_grad, inference_mode, set_grad_enabled as context managers and
decorators, nesting, exceptions, and thread-locality."""

import threading

import pytest

import ember


def recorded(x) -> bool:
    return (x * 2).requires_grad


@pytest.fixture
def leaf():
    return ember.ones(3, requires_grad=True)


def test_no_grad_context(leaf):
    assert ember.is_grad_enabled()
    with ember.no_grad():
        assert not ember.is_grad_enabled()
        y = leaf * 2
        assert not y.requires_grad and y.grad_fn is None
    assert ember.is_grad_enabled() and recorded(leaf)


def test_enable_grad_inside_no_grad(leaf):
    with ember.no_grad():
        with ember.enable_grad():
            assert recorded(leaf)
        assert not recorded(leaf)


def test_inference_mode(leaf):
    with ember.inference_mode():
        assert not recorded(leaf)
    with ember.inference_mode(False):
        assert recorded(leaf)
    assert recorded(leaf)


def test_set_grad_enabled_as_function_and_context(leaf):
    with ember.set_grad_enabled(False):
        assert not recorded(leaf)
    assert recorded(leaf)
    ember.set_grad_enabled(False)
    try:
        assert not recorded(leaf)
    finally:
        ember.set_grad_enabled(True)
    assert recorded(leaf)
    with ember.no_grad():
        with ember.set_grad_enabled(True):
            assert recorded(leaf)
        assert not recorded(leaf)


@pytest.mark.parametrize(
    "make",
    [
        lambda: ember.no_grad(),
        lambda: ember.inference_mode(),
        lambda: ember.set_grad_enabled(False),
    ],
)
def test_disabling_decorators(leaf, make):
    @make()
    def f(x):
        return x * 2

    assert ember.is_grad_enabled()  # building the decorator changed nothing
    assert not f(leaf).requires_grad
    assert ember.is_grad_enabled() and recorded(leaf)
    assert f.__name__ == "f"


def test_bare_decorators_as_in_torch(leaf):
    @ember.no_grad
    def f(x):
        return x * 2

    @ember.inference_mode
    def g(x):
        return x * 2

    @ember.enable_grad
    def h(x):
        return x * 2

    assert not f(leaf).requires_grad and not g(leaf).requires_grad
    with ember.no_grad():
        assert h(leaf).requires_grad
    assert ember.is_grad_enabled()


def test_enable_grad_decorator(leaf):
    @ember.enable_grad()
    def f(x):
        return x * 2

    with ember.no_grad():
        assert f(leaf).requires_grad
        assert not ember.is_grad_enabled()


def test_mode_is_restored_after_an_exception(leaf):
    with pytest.raises(ValueError):
        with ember.no_grad():
            raise ValueError
    assert ember.is_grad_enabled()

    @ember.no_grad()
    def boom():
        raise ValueError

    with pytest.raises(ValueError):
        boom()
    assert ember.is_grad_enabled()


def test_nested_reentry_of_one_manager(leaf):
    ng = ember.no_grad()
    with ng:
        with ember.enable_grad():
            with ember.no_grad():
                assert not recorded(leaf)
            assert recorded(leaf)
        assert not recorded(leaf)
    assert recorded(leaf)


def test_grad_mode_is_thread_local(leaf):
    """A no_grad block in one thread must not switch recording off in another."""
    inside = threading.Event()
    release = threading.Event()
    seen = {}

    def worker():
        with ember.no_grad():
            seen["worker_enabled"] = ember.is_grad_enabled()
            inside.set()
            release.wait(5)

    def fresh_thread():
        seen["fresh_default"] = ember.is_grad_enabled()
        seen["fresh_records"] = recorded(leaf)

    t = threading.Thread(target=worker)
    t.start()
    assert inside.wait(5)
    seen["main_enabled"] = ember.is_grad_enabled()
    seen["main_records"] = recorded(leaf)
    t2 = threading.Thread(target=fresh_thread)
    t2.start()
    t2.join(5)
    release.set()
    t.join(5)
    assert seen == {
        "worker_enabled": False,
        "main_enabled": True,
        "main_records": True,
        "fresh_default": True,
        "fresh_records": True,
    }


def test_no_grad_results_are_leaves_and_in_place_updates_work(leaf):
    with ember.no_grad():
        y = leaf * 2
        leaf.mul_(3)  # in-place on a leaf that requires grad is fine without recording
    assert y.is_leaf and leaf.tolist() == [3.0, 3.0, 3.0] and leaf.is_leaf
    assert leaf.requires_grad and leaf.grad_fn is None


def test_backward_inside_no_grad_still_computes_gradients(leaf):
    y = (leaf * leaf).sum()
    with ember.no_grad():
        y.backward()
    assert leaf.grad.tolist() == [2.0, 2.0, 2.0]
