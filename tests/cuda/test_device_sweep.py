"""Every function of the op registry, forward and gradients, on the fake CuPy device against
the CPU (tests/cuda/sweep.py). Catches NumPy-only code on the device paths without a GPU."""

from __future__ import annotations

import pytest

from tests.cuda import sweep

_PATTERNS: dict = {}


def _pattern(name):
    if name not in _PATTERNS:
        _PATTERNS[name] = sweep.cpu_pattern(name)
    return _PATTERNS[name]


@pytest.mark.parametrize("name", sweep.names())
def test_registry_op_on_device_matches_cpu(fake_cuda, name):
    call = _pattern(name)
    if call is None:
        pytest.fail(f"{name}: no argument pattern works on the CPU; add one to sweep.SPECIAL")
    sweep.compare(name, call)


def test_the_sweep_covers_the_registry():
    assert len(sweep.names()) >= 200
