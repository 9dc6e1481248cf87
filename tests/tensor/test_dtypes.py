"""dtypes (bfloat16 and float16 included) and PyTorch's promotion rules, against torch."""

import itertools

import ml_dtypes
import numpy as np
import pytest

import ember

torch = pytest.importorskip("torch")

NAMES = [
    "bool",
    "uint8",
    "int8",
    "int16",
    "int32",
    "int64",
    "float16",
    "bfloat16",
    "float32",
    "float64",
]


def e_dt(name):
    return getattr(ember, name)


def t_dt(name):
    return getattr(torch, name)


def test_dtype_objects():
    assert repr(ember.float32) == "ember.float32" and ember.float32.is_floating_point
    assert ember.float is ember.float32 and ember.double is ember.float64
    assert ember.half is ember.float16 and ember.long is ember.int64
    assert ember.int is ember.int32 and ember.short is ember.int16
    assert not ember.int64.is_floating_point and ember.int8.is_signed
    assert not ember.uint8.is_signed
    assert ember.bfloat16.np == np.dtype(ml_dtypes.bfloat16)
    assert ember.get_default_dtype() is ember.float32
    for name in NAMES:
        d = e_dt(name)
        assert d.itemsize == t_dt(name).itemsize
        assert d.is_floating_point == t_dt(name).is_floating_point


@pytest.mark.parametrize("name", NAMES)
def test_every_dtype_creates_and_round_trips(name):
    x = ember.ones(2, 3, dtype=e_dt(name))
    assert x.dtype is e_dt(name) and x.element_size() == t_dt(name).itemsize
    assert x.float().dtype is ember.float32
    assert x.float().tolist() == [[1.0] * 3] * 2
    assert ember.tensor([0, 1], dtype=name).dtype is e_dt(name)  # names are accepted too


def test_low_precision_floats_keep_their_dtype():
    for name in ("float16", "bfloat16"):
        x = ember.tensor([1.0, 2.0, 3.0], dtype=e_dt(name))
        y = (x * 2.5 + 1) / 2
        assert y.dtype is e_dt(name)
        ref = (torch.tensor([1.0, 2.0, 3.0], dtype=t_dt(name)) * 2.5 + 1) / 2
        np.testing.assert_allclose(y.float().numpy(), ref.float().numpy(), rtol=1e-2)
        assert (x @ x).dtype is e_dt(name)
        assert x.sum().dtype is e_dt(name)


@pytest.mark.parametrize("a,b", list(itertools.product(NAMES, NAMES)))
def test_promote_types_matches_torch(a, b):
    got = ember.promote_types(e_dt(a), e_dt(b))
    assert got.name == str(torch.promote_types(t_dt(a), t_dt(b))).removeprefix("torch.")


def _pair(name, ndim):
    shape = (2,) if ndim else ()
    return ember.ones(shape, dtype=e_dt(name)), torch.ones(shape, dtype=t_dt(name))


@pytest.mark.parametrize("dims", [(1, 1), (1, 0), (0, 1), (0, 0)])
def test_binary_result_dtype_matches_torch(dims):
    """Dimensioned tensors outrank 0-d tensors unless the 0-d one is of a higher category."""
    bad = []
    for a, b in itertools.product(NAMES, NAMES):
        ea, ta = _pair(a, dims[0])
        eb, tb = _pair(b, dims[1])
        for op in ("add", "mul"):
            got = getattr(ea, op)(eb).dtype.name
            want = str(getattr(ta, op)(tb).dtype).removeprefix("torch.")
            if got != want:
                bad.append((a, b, op, got, want))
    assert not bad, bad


@pytest.mark.parametrize("scalar", [True, 3, 2.5, -1.0])
def test_tensor_with_python_scalar_dtype_matches_torch(scalar):
    bad = []
    for name in NAMES:
        if name == "bool" and type(scalar) is bool:
            continue
        for dims in (1, 0):
            e, t = _pair(name, dims)
            fns = [lambda x, s: x + s, lambda x, s: s * x, lambda x, s: x / s]
            if name != "bool" and type(scalar) is not bool:  # torch refuses bool subtraction
                fns.append(lambda x, s: s - x)
            for fn in fns:
                got = fn(e, scalar).dtype.name
                want = str(fn(t, scalar).dtype).removeprefix("torch.")
                if got != want:
                    bad.append((name, dims, got, want))
    assert not bad, bad


def test_int_plus_float_is_float32_never_float64():
    assert (ember.tensor([1, 2]) + 0.5).dtype is ember.float32
    assert (ember.tensor([1, 2]) / ember.tensor([2, 2])).dtype is ember.float32
    assert (ember.tensor([1, 2], dtype=ember.int8) * 1.5).dtype is ember.float32
    assert (ember.tensor(True) + 1).dtype is ember.int64


def test_set_default_dtype_changes_inference():
    ember.set_default_dtype(ember.float64)  # conftest restores float32
    assert ember.tensor([1.5]).dtype is ember.float64
    assert ember.zeros(2).dtype is ember.float64
    assert (ember.tensor([1, 2]) * 0.5).dtype is ember.float64
    assert repr(ember.tensor([1.5])) == "tensor([1.5000])"
    with pytest.raises(TypeError, match="floating"):
        ember.set_default_dtype(ember.int64)


def test_unknown_dtype_is_a_clear_error():
    with pytest.raises(TypeError, match="unknown dtype"):
        ember.zeros(2, dtype="float128x")
