"""Shared test setup: deterministic seeds, and the data directory from EMBER_DATA_DIR."""

from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest

import ember


@pytest.fixture(autouse=True)
def _seed(monkeypatch):
    if os.environ.get("EMBER_TEST_DEVICE") == "fake-cuda":  # see tests/oracle.py
        from tests.cuda import fake_cupy

        fake_cupy.install(monkeypatch)
    if os.environ.get("EMBER_TEST_DEVICE") in ("cuda", "fake-cuda"):
        ember.set_default_device("cuda")  # constants the tests build go there too
    ember.manual_seed(0)
    np.random.seed(0)
    yield
    ember.set_default_dtype(ember.float32)
    ember.set_default_device(None)


def _locate_data_root() -> pathlib.Path | None:
    """EMBER_DATA_DIR, else ../shared/data; resolved at import so a test's chdir cannot move it."""
    root = os.environ.get("EMBER_DATA_DIR")
    if not root:
        guess = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
        root = str(guess) if guess.exists() else None
    return pathlib.Path(root).resolve() if root and pathlib.Path(root).exists() else None


DATA_ROOT = _locate_data_root()


@pytest.fixture
def data_dir() -> pathlib.Path:
    if DATA_ROOT is None:
        pytest.skip("EMBER_DATA_DIR is not set and ../shared/data does not exist")
    return DATA_ROOT
