"""The Tensor's attributes, plain methods, conversions and repr, against PyTorch."""

import copy
import pickle

import numpy as np
import pytest

import ember

torch = pytest.importorskip("torch")


def like_torch(t) -> str:
    """torch's repr with the module renamed and grad_fn's trailing overload number dropped."""
    text = repr(t).replace("torch.", "ember.")
    for name in ("Add", "Mul", "Sub", "Div", "Sum", "Mean", "Clone", "Pow"):
        for k in range(3):
            text = text.replace(f"{name}Backward{k}", f"{name}Backward")
    return text


# ------------------------------------------------------------------------ attributes
def test_metadata_attributes():
    x = ember.zeros(2, 3, 4)
    assert isinstance(x.data, np.ndarray) and x.data.shape == (2, 3, 4)
    assert x.shape == (2, 3, 4) and isinstance(x.shape, ember.Size)
    assert repr(x.shape) == "ember.Size([2, 3, 4])"
    assert x.size() == (2, 3, 4) and x.size(1) == 3 and x.size(-1) == 4
    assert x.ndim == 3 and x.dim() == 3
    assert x.numel() == 24 and ember.numel(x) == 24 and x.shape.numel() == 24
    assert x.dtype is ember.float32
    assert x.device == ember.device("cpu") and x.device.type == "cpu"
    assert not x.is_cuda
    assert x.element_size() == 4 and x.nbytes == 96
    assert x.is_floating_point() and not ember.zeros(2, dtype=ember.int64).is_floating_point()
    assert x.is_contiguous() and not x.transpose(0, 2).is_contiguous()
    assert x.stride() == torch.zeros(2, 3, 4).stride()
    assert x.transpose(0, 2).stride() == torch.zeros(2, 3, 4).transpose(0, 2).stride()
    assert len(x) == 2


def test_size_of_bad_dim_names_dim_and_ndim():
    with pytest.raises(IndexError, match=r"size.*range.*got 3.*ndim 2"):
        ember.zeros(2, 3).size(3)


def test_autograd_attributes_of_a_leaf_and_a_result():
    a = ember.ones(3, requires_grad=True)
    assert a.requires_grad and a.is_leaf and a.grad_fn is None and a.grad is None
    b = a * 2
    assert b.requires_grad and not b.is_leaf and b.grad_fn is not None
    assert b.grad_fn.name() == "MulBackward"
    c = ember.ones(3) * 2
    assert not c.requires_grad and c.is_leaf and c.grad_fn is None


def test_T_transposes_all_dims():
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(ember.tensor(a[0]).T.numpy(), a[0].T)
    assert ember.tensor(a[0]).T.shape == (4, 3)
    v = ember.tensor([1.0, 2.0])
    assert v.T.shape == (2,)


# ------------------------------------------------------------------------ conversions
def test_item_tolist_numpy():
    assert ember.tensor(2.5).item() == 2.5 and isinstance(ember.tensor(2.5).item(), float)
    assert ember.tensor([7]).item() == 7 and isinstance(ember.tensor([7]).item(), int)
    assert ember.tensor(True).item() is True
    assert ember.tensor([[1, 2], [3, 4]]).tolist() == [[1, 2], [3, 4]]
    assert ember.tensor(3.0).tolist() == 3.0
    half = ember.tensor([1.5, 2.0], dtype=ember.bfloat16)
    assert half.tolist() == [1.5, 2.0] and type(half.tolist()[0]) is float
    one = ember.tensor(1.5, dtype=ember.bfloat16).item()
    assert one == 1.5 and type(one) is float
    assert float(ember.tensor([2.5])) == 2.5 and int(ember.tensor(3)) == 3
    with pytest.raises(RuntimeError, match="3 elements"):
        ember.tensor([1, 2, 3]).item()
    with pytest.raises(RuntimeError, match="ambiguous"):
        bool(ember.tensor([1, 2]))


def test_numpy_shares_memory_and_refuses_requires_grad():
    x = ember.zeros(3)
    x.numpy()[0] = 5
    assert x.tolist() == [5.0, 0.0, 0.0]
    w = ember.zeros(3, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"requires grad.*detach\(\)\.numpy\(\)"):
        w.numpy()
    assert w.detach().numpy().shape == (3,)
    assert np.asarray(w).shape == (3,)  # __array__ works for plotting and printing


def test_detach_shares_data_and_version_but_not_history():
    a = ember.ones(3, requires_grad=True)
    b = a * 2
    d = b.detach()
    assert not d.requires_grad and d.grad_fn is None and d.is_leaf
    assert d.data is b.data or np.shares_memory(d.data, b.data)
    v = b._version
    d.add_(1)
    assert b._version == v + 1  # torch: detach() shares the version counter
    assert b.tolist() == [3.0, 3.0, 3.0]


def test_requires_grad_():
    x = ember.zeros(2)
    assert x.requires_grad_() is x and x.requires_grad
    x.requires_grad_(False)
    assert not x.requires_grad
    with pytest.raises(RuntimeError, match="floating point"):
        ember.zeros(2, dtype=ember.int64).requires_grad_()
    y = ember.ones(2, requires_grad=True) * 2
    with pytest.raises(RuntimeError, match="leaf"):
        y.requires_grad_(False)


def test_clone_is_a_differentiable_copy():
    a = ember.tensor([1.0, 2.0], requires_grad=True)
    c = a.clone()
    assert c.grad_fn is not None and not np.shares_memory(c.data, a.data)
    (c * ember.tensor([3.0, 4.0])).sum().backward()
    assert a.grad.tolist() == [3.0, 4.0]
    plain = ember.tensor([1, 2])
    assert plain.clone().tolist() == [1, 2] and plain.clone().dtype is ember.int64


def test_contiguous():
    x = ember.tensor(np.arange(6.0, dtype=np.float32).reshape(2, 3))
    assert x.contiguous() is x
    t = x.transpose(0, 1)
    c = t.contiguous()
    assert c.is_contiguous() and c.tolist() == t.tolist()
    a = ember.ones(2, 3, requires_grad=True)
    a.transpose(0, 1).contiguous().sum().backward()
    assert a.grad.shape == (2, 3) and a.grad.tolist() == [[1.0] * 3] * 2


@pytest.mark.parametrize(
    "method,dtype",
    [
        ("float", "float32"),
        ("double", "float64"),
        ("half", "float16"),
        ("bfloat16", "bfloat16"),
        ("long", "int64"),
        ("int", "int32"),
        ("short", "int16"),
        ("bool", "bool"),
        ("byte", "uint8"),
    ],
)
def test_cast_methods(method, dtype):
    x = ember.tensor([0.0, 1.5, -2.0])
    out = getattr(x, method)()
    ref = getattr(torch.tensor([0.0, 1.5, -2.0]), method)()
    assert out.dtype is getattr(ember, dtype)
    np.testing.assert_array_equal(np.asarray(out.tolist()), np.asarray(ref.tolist()))


def test_to_dtype_device_and_other_tensor():
    x = ember.tensor([1.0, 2.0])
    assert x.to(ember.float32) is x and x.to("cpu") is x
    assert x.to(ember.float64).dtype is ember.float64
    assert x.to("cpu", ember.int64).dtype is ember.int64
    assert x.to(dtype=ember.float16).dtype is ember.float16
    assert x.to(device=ember.device("cpu")) is x
    assert x.to(ember.zeros(1, dtype=ember.float64)).dtype is ember.float64
    assert x.to(ember.float32, copy=True) is not x
    a = ember.tensor([1.0, 2.0], requires_grad=True)
    y = a.to(ember.float64)
    assert y.grad_fn is not None
    (y * 3).sum().backward()
    assert a.grad.dtype is ember.float32 and a.grad.tolist() == [3.0, 3.0]


def test_deepcopy_copies_and_pickle_is_refused():
    a = ember.tensor([1.0, 2.0], requires_grad=True)
    b = copy.deepcopy(a)
    assert b.requires_grad and b.tolist() == [1.0, 2.0] and not np.shares_memory(a.data, b.data)
    with pytest.raises(TypeError, match="not picklable"):
        pickle.dumps(a)


# ------------------------------------------------------------------------------ repr
@pytest.mark.parametrize(
    "make",
    [
        lambda m: m.tensor([1.0, 2.0]),
        lambda m: m.tensor([1, 2]),
        lambda m: m.tensor([1.5, 2.25]),
        lambda m: m.tensor(3.0),
        lambda m: m.tensor(-7),
        lambda m: m.tensor([True, False]),
        lambda m: m.tensor([True, True]),
        lambda m: m.tensor([[1.5, -2.0], [3.0, 4.0]]),
        lambda m: m.tensor([1e-5, 1.0]),
        lambda m: m.tensor([1.0, 2000.0]),
        lambda m: m.tensor([1e10, 1.0]),
        lambda m: m.tensor([1.0, float("inf")]),
        lambda m: m.tensor([1.5, float("nan")]),
        lambda m: m.tensor([1.0, 100.0]),
        lambda m: m.zeros(0, 3),
        lambda m: m.tensor([]),
        lambda m: m.tensor([], dtype=m.int64),
        lambda m: m.ones(2, 3),
        lambda m: m.arange(30.0),
        lambda m: m.linspace(0, 1, 23),
        lambda m: m.ones(2, dtype=m.float64),
        lambda m: m.ones(2, dtype=m.int32),
        lambda m: m.ones(2, dtype=m.float16),
        lambda m: m.ones(2, dtype=m.bfloat16),
        lambda m: m.tensor([1.0, 2.0], requires_grad=True),
        lambda m: m.tensor([1.0, 2.0], requires_grad=True) * 2,
        lambda m: m.tensor([1.0, 2.0], requires_grad=True) + 1,
        lambda m: m.tensor([1.0, 2.0], requires_grad=True).sum(),
        lambda m: m.tensor([1.0, 2.0], dtype=m.float64, requires_grad=True) - 1,
        lambda m: m.tensor([1.0, 2.0], requires_grad=True).clone(),
    ],
)
def test_repr_matches_torch(make):
    assert repr(make(ember)) == like_torch(make(torch))


def test_repr_of_random_matrices_matches_torch():
    rng = np.random.default_rng(0)
    for shape in [(5,), (3, 4), (2, 3, 4), (7, 9), (12, 12), (3, 20)]:
        for scale in (1.0, 100.0, 1e-3):
            arr = (rng.standard_normal(shape) * scale).astype(np.float32)
            assert repr(ember.tensor(arr)) == like_torch(torch.tensor(arr))
        ints = (rng.standard_normal(shape) * 1000).astype(np.int64)
        assert repr(ember.tensor(ints)) == like_torch(torch.tensor(ints))


def test_str_and_format():
    x = ember.tensor(2.5)
    assert str(x) == "tensor(2.5000)"
    assert f"{x:.2f}" == "2.50"
