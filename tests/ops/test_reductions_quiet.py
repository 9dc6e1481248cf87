"""Sums and means of inf and -inf (or of values that overflow) give NaN or inf quietly, as
torch does, instead of NumPy's RuntimeWarning."""

import warnings

import numpy as np
import pytest

import ember


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("op", ["sum", "mean"])
def test_reductions_of_opposite_infinities_are_quiet(op, dtype):
    x = ember.tensor(np.array([np.inf, -np.inf, 1.0], dtype), requires_grad=True)
    big = ember.tensor(np.full(4, np.finfo(dtype).max, dtype))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = getattr(x, op)()
        y.backward()
        overflow = getattr(big, op)()
    assert np.isnan(y.item())
    assert not np.isnan(overflow.item())  # inf (or finite, for a half mean in float32)
    assert x.grad is not None
