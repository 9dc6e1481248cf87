"""Creation functions: dtype inference like torch, dtype=/device=/requires_grad=, memory sharing."""

import numpy as np
import pytest

import ember

torch = pytest.importorskip("torch")


def same_dtype(e, t) -> bool:
    return e.dtype.name == str(t.dtype).removeprefix("torch.")


@pytest.mark.parametrize(
    "data",
    [
        [1, 2, 3],
        [1.0, 2.0],
        [1, 2.5],
        [True, False],
        [[1, 2], [3, 4]],
        3,
        2.5,
        True,
        [],
        [[True, 1]],
        np.float64(1.5),
        np.int32(4),
        np.arange(3, dtype=np.int16),
        np.ones(2, dtype=np.float64),
        np.array([1, 0], dtype=bool),
    ],
)
def test_tensor_infers_dtype_like_torch(data):
    e, t = ember.tensor(data), torch.tensor(data)
    assert same_dtype(e, t), (e.dtype, t.dtype)
    assert tuple(e.shape) == tuple(t.shape)
    np.testing.assert_array_equal(np.asarray(e.tolist()), np.asarray(t.tolist()))


def test_tensor_copies_and_from_numpy_shares():
    arr = np.zeros(3, dtype=np.float32)
    copied, shared, as_t = ember.tensor(arr), ember.from_numpy(arr), ember.as_tensor(arr)
    arr[0] = 7
    assert copied.tolist()[0] == 0 and shared.tolist()[0] == 7 and as_t.tolist()[0] == 7
    assert ember.from_numpy(np.zeros(2, dtype=np.float64)).dtype is ember.float64
    with pytest.raises(TypeError, match="from_numpy"):
        ember.from_numpy([1, 2])
    src = ember.tensor([1.0, 2.0])
    assert ember.as_tensor(src) is src
    assert ember.as_tensor(src, dtype=ember.float64).dtype is ember.float64
    assert ember.as_tensor([1, 2]).dtype is ember.int64


def test_tensor_of_a_tensor_copies_and_drops_history():
    a = ember.tensor([1.0, 2.0], requires_grad=True)
    b = ember.tensor(a)
    assert not b.requires_grad and b.grad_fn is None
    assert not np.shares_memory(a.data, b.data)


def test_tensor_rejects_bad_data():
    with pytest.raises(ValueError):  # torch: ValueError too
        ember.tensor([[1, 2], [3]])
    with pytest.raises(TypeError, match="string"):
        ember.tensor(["a"])
    with pytest.raises(TypeError, match="unsupported"):
        ember.tensor(np.array([1 + 2j]))


@pytest.mark.parametrize("fn", ["zeros", "ones", "empty"])
def test_filled(fn):
    for args in [(2, 3), ((2, 3),), ([2, 3],), (ember.Size([2, 3]),)]:
        x = getattr(ember, fn)(*args)
        assert x.shape == (2, 3) and x.dtype is ember.float32
    x = getattr(ember, fn)(4, dtype=ember.int32, requires_grad=False)
    assert x.dtype is ember.int32
    x = getattr(ember, fn)(4, requires_grad=True)
    assert x.requires_grad and x.is_leaf
    assert getattr(ember, fn)(()).shape == ()
    assert getattr(ember, fn)(0, 3).numel() == 0
    with pytest.raises(RuntimeError, match="negative dimension"):
        getattr(ember, fn)(2, -1)
    with pytest.raises(RuntimeError, match="floating point"):
        getattr(ember, fn)(2, dtype=ember.int64, requires_grad=True)
    if fn != "empty":
        ref = getattr(torch, fn)(2, 3)
        np.testing.assert_array_equal(getattr(ember, fn)(2, 3).numpy(), ref.numpy())


@pytest.mark.parametrize("value", [1.5, 2, True, -3.0])
def test_full_infers_dtype_like_torch(value):
    e, t = ember.full((2, 2), value), torch.full((2, 2), value)
    assert same_dtype(e, t)
    assert e.tolist() == t.tolist()
    assert ember.full((3,), 7, dtype=ember.float16).dtype is ember.float16
    assert ember.full([2], 1.0, requires_grad=True).requires_grad


def test_like_forms_keep_dtype_and_shape():
    src = ember.zeros(2, 3, dtype=ember.float64)
    for fn in ("zeros_like", "ones_like", "empty_like"):
        x = getattr(ember, fn)(src)
        assert x.shape == (2, 3) and x.dtype is ember.float64
        assert getattr(ember, fn)(src, dtype=ember.int64).dtype is ember.int64
        assert getattr(ember, fn)(src, requires_grad=True).requires_grad
    f = ember.full_like(src, 4)
    assert f.dtype is ember.float64 and f.tolist() == [[4.0] * 3] * 2
    assert ember.ones_like(src).tolist() == [[1.0] * 3] * 2


@pytest.mark.parametrize(
    "args,kw",
    [
        ((5,), {}),
        ((2, 7), {}),
        ((0, 1, 0.1), {}),
        ((1, 2.5, 0.5), {}),
        ((5, 0, -1), {}),
        ((10,), {"dtype": "float32"}),
        ((0.0, 3.0), {}),
        ((3, 3), {}),
        ((-1.0, 1.0, 0.25), {}),
    ],
)
def test_arange_matches_torch(args, kw):
    e = ember.arange(*args, **{k: getattr(ember, v) for k, v in kw.items()})
    t = torch.arange(*args, **{k: getattr(torch, v) for k, v in kw.items()})
    assert same_dtype(e, t) and tuple(e.shape) == tuple(t.shape)
    np.testing.assert_allclose(e.numpy(), t.numpy(), rtol=1e-6)


def test_arange_errors():
    with pytest.raises(RuntimeError, match="step"):
        ember.arange(0, 5, 0)
    with pytest.raises(RuntimeError, match="inconsistent"):
        ember.arange(5, 0, 1)


def test_linspace_logspace_eye():
    np.testing.assert_allclose(
        ember.linspace(-1, 1, 7).numpy(), torch.linspace(-1, 1, 7).numpy(), atol=1e-6
    )
    assert ember.linspace(0, 1, 5).dtype is ember.float32
    assert ember.linspace(0, 1, 0).shape == (0,)
    assert ember.linspace(0, 1, 3, dtype=ember.float64).dtype is ember.float64
    np.testing.assert_allclose(ember.logspace(0, 2, 3).numpy(), torch.logspace(0, 2, 3).numpy())
    np.testing.assert_array_equal(ember.eye(3).numpy(), torch.eye(3).numpy())
    np.testing.assert_array_equal(ember.eye(2, 4).numpy(), torch.eye(2, 4).numpy())
    assert ember.eye(3, dtype=ember.int64).dtype is ember.int64
    assert ember.eye(2, requires_grad=True).requires_grad


def test_requires_grad_on_creation_makes_a_leaf():
    for x in [
        ember.tensor([1.0], requires_grad=True),
        ember.arange(3.0, requires_grad=True),
        ember.linspace(0, 1, 3, requires_grad=True),
        ember.randn(2, requires_grad=True),
        ember.rand(2, requires_grad=True),
    ]:
        assert x.requires_grad and x.is_leaf and x.grad_fn is None
    with pytest.raises(RuntimeError, match="floating point"):
        ember.tensor([1, 2], requires_grad=True)


def test_creation_on_a_cpu_device_argument():
    for dev in ("cpu", ember.device("cpu"), None):
        assert ember.zeros(2, device=dev).device == ember.device("cpu")
        assert ember.tensor([1], device=dev).device.type == "cpu"
        assert ember.arange(3, device=dev).device == "cpu"
