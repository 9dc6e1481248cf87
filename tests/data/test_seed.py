"""ember.seed_everything seeds Python, NumPy and Ember in one call."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest

import ember


@pytest.fixture(autouse=True)
def _restore_seed_env(monkeypatch):
    """seed_everything writes $EMBER_GLOBAL_SEED: make monkeypatch restore it afterwards."""
    monkeypatch.setenv("EMBER_GLOBAL_SEED", "0")
    monkeypatch.delenv("EMBER_GLOBAL_SEED")


def _draws():
    return random.random(), np.random.rand(), ember.rand(1).item(), ember.randperm(5).tolist()


def test_seed_everything_seeds_every_generator():
    assert ember.seed_everything(42) == 42
    a = _draws()
    assert ember.seed_everything(42) == 42
    assert _draws() == a
    ember.seed_everything(43)
    b = _draws()
    assert all(x != y for x, y in zip(a[:3], b[:3]))
    assert os.environ["EMBER_GLOBAL_SEED"] == "43"
    assert ember.initial_seed() == 43


def test_seed_everything_default_and_errors(monkeypatch):
    monkeypatch.setenv("EMBER_GLOBAL_SEED", "7")
    assert ember.seed_everything() == 7
    monkeypatch.delenv("EMBER_GLOBAL_SEED")
    assert ember.seed_everything() == 0
    with pytest.raises(ValueError, match=r"seed must be in \[0, 4294967295\]"):
        ember.seed_everything(-1)
    with pytest.raises(ValueError, match="4294967296"):
        ember.seed_everything(2**32)
    with pytest.raises(TypeError, match="seed must be an int"):
        ember.seed_everything(1.5)
    assert ember.seed_everything(np.int64(5)) == 5
    assert "seed_everything" in ember.__all__


def test_seed_everything_makes_a_shuffled_loader_reproducible():
    from ember.data import DataLoader, TensorDataset

    ds = TensorDataset(ember.arange(20))

    def order():
        ember.seed_everything(1234)
        return [b[0].tolist() for b in DataLoader(ds, batch_size=6, shuffle=True)]

    assert order() == order()


def test_import_ember_does_not_import_the_data_loader():
    import subprocess
    import sys

    code = (
        "import sys, ember; print(sorted(m for m in sys.modules if m.startswith('ember.data'"
        ")), 'multiprocessing' in sys.modules, 'urllib.request' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['ember.data', 'ember.data.seed'] False False"
