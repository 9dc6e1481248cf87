"""Fixtures for the ember/cpu kernel tests: switch the kernels on or off, count kernel calls."""

from __future__ import annotations

import pytest

from ember.cpu import compile as cpu_compile

pytest.importorskip("numba")


@pytest.fixture
def kernels_on(monkeypatch):
    monkeypatch.setenv("EMBER_CPU_KERNELS", "1")
    assert cpu_compile.kernels_enabled()


@pytest.fixture
def kernels_off(monkeypatch):
    monkeypatch.setenv("EMBER_CPU_KERNELS", "0")
    assert not cpu_compile.kernels_enabled()


@pytest.fixture
def count_calls(monkeypatch):
    """``count_calls(module, name)`` wraps a kernel module's function; returns the call list."""

    def wrap(module, name):
        calls = []
        inner = getattr(module, name)

        def counted(*args):
            calls.append(args)
            return inner(*args)

        monkeypatch.setattr(module, name, counted)
        return calls

    return wrap
