"""Fixtures for the device tests: ``fake_cuda`` (NumPy behind CuPy's wall, runs everywhere)
and ``real_cuda`` (the GPU tests, marked ``cuda``: skipped cleanly without CuPy or a GPU)."""

from __future__ import annotations

import os

import pytest

import ember
from tests.cuda import fake_cupy


@pytest.fixture
def fake_cuda(monkeypatch):
    """Ember sees the fake CuPy: ``device='cuda'`` arrays are fake device arrays."""
    from ember.tensor import random as ember_random

    cp = fake_cupy.install(monkeypatch)
    monkeypatch.setattr(ember_random, "_device_generators", {})
    ember.manual_seed(0)
    return cp


@pytest.fixture
def real_cuda():
    """CuPy on a GPU. ``EMBER_TEST_DEVICE=fake-cuda pytest -m cuda tests/cuda`` dry-runs the
    GPU tests on the fake instead (their logic, not the kernels: those need the GPU)."""
    cp = pytest.importorskip("cupy")
    dry_run = os.environ.get("EMBER_TEST_DEVICE") == "fake-cuda"
    if (getattr(cp, "__fake__", False) and not dry_run) or not ember.cuda_is_available():
        pytest.skip("no CUDA device")
    return cp
