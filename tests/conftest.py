"""Shared test setup: deterministic seeds, and the data directory from EMBER_DATA_DIR."""

from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest

import ember


@pytest.fixture(autouse=True)
def _seed():
    ember.manual_seed(0)
    np.random.seed(0)
    yield
    ember.set_default_dtype(ember.float32)


@pytest.fixture
def data_dir() -> pathlib.Path:
    root = os.environ.get("EMBER_DATA_DIR")
    if not root:
        guess = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
        root = str(guess) if guess.exists() else None
    if not root or not pathlib.Path(root).exists():
        pytest.skip("EMBER_DATA_DIR is not set and ../shared/data does not exist")
    return pathlib.Path(root)
