"""gather, scatter, index_select/add/fill, masked_fill/select, take(_along_dim), nonzero and
one_hot against PyTorch (forward and every gradient), gradcheck and the error messages."""

import numpy as np
import pytest

import ember
from tests.oracle import check_op, gradcheck_op, rand, torch

RNG = np.random.default_rng(0)


def _perm_index(shape, dim, size):
    """An index of ``shape`` whose entries along ``dim`` are distinct (deterministic scatter)."""
    moved = list(shape)
    n = moved.pop(dim)
    flat = [RNG.permutation(size)[:n] for _ in range(int(np.prod(moved)))]
    arr = np.stack(flat, axis=-1).reshape([n] + moved)
    return np.moveaxis(arr, 0, dim).astype(np.int64)


@pytest.mark.parametrize(
    "dim,ishape", [(0, (2, 4, 5)), (1, (3, 6, 5)), (-1, (3, 4, 7)), (1, (2, 3, 4)), (2, (1, 1, 1))]
)
def test_gather(dim, ishape):
    idx = RNG.integers(0, (3, 4, 5)[dim], size=ishape)  # repeated indices included
    check_op(lambda x, i: x.gather(dim, i), [rand(3, 4, 5, seed=1), idx])
    check_op(
        lambda x, i: ember.gather(x, dim, i),
        [rand(3, 4, 5, seed=1), idx],
        torch_fn=lambda x, i: torch.gather(x, dim, i),
    )


def test_gather_noncontiguous_and_gradcheck():
    idx = np.array([[0, 0, 2], [1, 1, 1]])
    check_op(lambda x, i: x.gather(1, i), [rand(2, 3, seed=2), idx], noncontiguous=True)
    gradcheck_op(lambda x, i: x.gather(1, i), [rand(2, 3, seed=2), idx])
    gradcheck_op(lambda x, i: x.gather(0, i), [rand(3, 3, seed=2), idx])


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_scatter_with_src(dim):
    shape = (3, 4)
    ishape = (2, 3) if dim == 0 else (3, 2)
    idx = _perm_index(ishape, dim, shape[dim])
    check_op(
        lambda x, i, s: x.scatter(dim, i, s), [rand(*shape, seed=3), idx, rand(*ishape, seed=4)]
    )
    check_op(lambda x, i: x.scatter(dim, i, 1.5), [rand(*shape, seed=3), idx])
    check_op(
        lambda x, i: ember.scatter(x, dim, i, value=-2.0),
        [rand(*shape, seed=3), idx],
        torch_fn=lambda x, i: torch.scatter(x, dim, i, value=-2.0),
    )


@pytest.mark.parametrize("dim", [0, 1])
def test_scatter_add_repeated(dim):
    ishape = (4, 3) if dim == 0 else (3, 5)
    idx = RNG.integers(0, 3, size=ishape)
    check_op(
        lambda x, i, s: x.scatter_add(dim, i, s), [rand(3, 3, seed=6), idx, rand(*ishape, seed=5)]
    )
    gradcheck_op(
        lambda x, i, s: x.scatter_add(dim, i, s), [rand(3, 3, seed=6), idx, rand(*ishape, seed=5)]
    )


def test_scatter_src_bigger_than_index():
    # torch's forward reads the leading corner of src; its backward for such a src fails,
    # Ember's gives zeros outside the corner (checked by gradcheck).
    idx = np.array([[0, 2], [1, 0]])
    for fn in (lambda x, i, s: x.scatter(1, i, s), lambda x, i, s: x.scatter_add(0, i, s)):
        check_op(fn, [rand(3, 3, seed=3), idx, rand(3, 4, seed=4)], grad=False)
        gradcheck_op(fn, [rand(3, 3, seed=3), idx, rand(3, 4, seed=4)])


@pytest.mark.filterwarnings("ignore:The reduce argument of torch.scatter")
def test_scatter_reduce_forward_matches_torch():
    idx = np.array([[0, 1, 0], [2, 0, 0]])
    x = rand(3, 3, seed=7)
    src = rand(2, 3, seed=8)
    for reduce in ("add", "multiply"):
        e = ember.tensor(x).scatter(0, ember.tensor(idx), ember.tensor(src), reduce=reduce)
        t = torch.tensor(x).scatter(0, torch.tensor(idx), torch.tensor(src), reduce=reduce)
        np.testing.assert_allclose(e.numpy(), t.numpy(), rtol=1e-6)
    # reduce='add' is differentiable (like scatter_add); 'multiply' is not (as in torch)
    check_op(
        lambda x, i, s: x.scatter(0, i, s, reduce="add"),
        [x, idx, src],
        torch_fn=lambda x, i, s: x.scatter_add(0, i, s),
    )
    y = ember.tensor(x, requires_grad=True).scatter(
        0, ember.tensor(idx), ember.tensor(src), reduce="multiply"
    )
    with pytest.raises(RuntimeError, match="not implemented"):
        y.sum().backward()


@pytest.mark.parametrize("dim,idx", [(0, [2, 0, 2, 2]), (1, [3, 3]), (-1, [0]), (1, []), (0, 1)])
def test_index_select(dim, idx):
    idx = np.array(idx, dtype=np.int64)
    check_op(lambda x, i: x.index_select(dim, i), [rand(3, 4, 2, seed=9), idx])


def test_index_select_gradcheck_and_noncontiguous():
    idx = np.array([1, 0, 1])
    gradcheck_op(lambda x, i: x.index_select(1, i), [rand(2, 3, seed=10), idx])
    check_op(lambda x, i: x.index_select(0, i), [rand(3, 2, seed=10), idx], noncontiguous=True)


@pytest.mark.parametrize("dim", [0, 1])
def test_index_add(dim):
    idx = np.array([1, 0, 1])
    src = rand(3, 4, seed=11) if dim == 0 else rand(3, 3, seed=11)
    x = rand(3, 4, seed=12) if dim == 0 else rand(3, 3, seed=12)
    check_op(lambda x, i, s: x.index_add(dim, i, s), [x, idx, src])
    check_op(lambda x, i, s: x.index_add(dim, i, s, alpha=2.5), [x, idx, src])


def test_index_fill():
    idx = np.array([2, 0, 2])
    check_op(lambda x, i: x.index_fill(1, i, -1.0), [rand(2, 3, seed=13), idx])

    def fill_with_tensor(x, i, v):
        return x.index_fill(1, i, v.reshape(()))

    check_op(fill_with_tensor, [rand(2, 3, seed=13), idx, rand(1, seed=14)])


@pytest.mark.parametrize("mshape", [(3, 4), (4,), (3, 1), ()])
def test_masked_fill(mshape):
    mask = np.asarray(RNG.random(mshape) > 0.5)
    check_op(lambda x, m: x.masked_fill(m, -1e9), [rand(3, 4, seed=15), mask])
    check_op(
        lambda x, m, v: x.masked_fill(m, v.reshape(())),
        [rand(3, 4, seed=15), mask, rand(1, seed=16)],
    )


def test_masked_fill_broadcasts_input_to_mask():
    check_op(lambda x, m: x.masked_fill(m, 2.0), [rand(4, seed=17), RNG.random((3, 4)) > 0.5])


@pytest.mark.parametrize("xshape,mshape", [((3, 4), (3, 4)), ((3, 4), (4,)), ((4,), (2, 4))])
def test_masked_select(xshape, mshape):
    mask = RNG.random(mshape) > 0.4
    check_op(lambda x, m: x.masked_select(m), [rand(*xshape, seed=18), mask])
    gradcheck_op(lambda x, m: ember.masked_select(x, m), [rand(*xshape, seed=18), mask])


def test_take_along_dim():
    x = rand(3, 4, seed=19)
    idx = np.array([[0, 3], [1, 1], [2, 0]])
    check_op(
        lambda x, i: ember.take_along_dim(x, i, 1),
        [x, idx],
        torch_fn=lambda x, i: torch.take_along_dim(x, i, 1),
    )
    check_op(lambda x, i: x.take_along_dim(i), [x, np.array([11, 0, 0])])
    # broadcasting apart from dim
    check_op(lambda x, i: x.take_along_dim(i, dim=0), [x, np.array([[2], [0]])])
    check_op(
        lambda x, i: x.take_along_dim(i, dim=-1),
        [rand(2, 1, 5, seed=20), np.array([[[0, 4]], [[1, 1]]]).repeat(3, axis=1)],
    )


def test_take():
    check_op(lambda x, i: x.take(i), [rand(3, 4, seed=21), np.array([[0, -1], [11, 0]])])
    gradcheck_op(lambda x, i: ember.take(x, i), [rand(2, 2, seed=21), np.array([3, 3, -4])])


def test_nonzero_and_argwhere():
    x = np.array([[0, 1.5, 0], [2, 0, 3]], np.float32)
    e, t = ember.tensor(x), torch.tensor(x)
    np.testing.assert_array_equal(e.nonzero().numpy(), t.nonzero().numpy())
    assert e.nonzero().dtype is ember.int64
    for a, b in zip(ember.nonzero(e, as_tuple=True), torch.nonzero(t, as_tuple=True)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(ember.argwhere(e).numpy(), torch.argwhere(t).numpy())
    assert ember.tensor(3.0).nonzero().shape == (1, 0)
    assert ember.zeros(2, 0).nonzero().shape == (0, 2)


def test_one_hot():
    i = np.array([[0, 3], [2, 2]])
    e = ember.one_hot(ember.tensor(i))
    t = torch.nn.functional.one_hot(torch.tensor(i))
    np.testing.assert_array_equal(e.numpy(), t.numpy())
    assert e.dtype is ember.int64 and e.shape == (2, 2, 4)
    assert ember.one_hot(ember.tensor([1]), num_classes=5).shape == (1, 5)
    with pytest.raises(RuntimeError, match="Class values must be smaller than num_classes"):
        ember.one_hot(ember.tensor([0, 3]), 2)
    with pytest.raises(RuntimeError, match="Class values must be non-negative"):
        ember.one_hot(ember.tensor([0, -1]))
    with pytest.raises(RuntimeError, match="LongTensor"):
        ember.one_hot(ember.tensor([0.0]))
    with pytest.raises(RuntimeError, match="empty tensor"):
        ember.one_hot(ember.zeros(0, dtype=ember.int64))


# ---------------------------------------------------------------------------- in place
@pytest.mark.parametrize(
    "op",
    [
        lambda y, i, s: y.scatter_(1, i, s),
        lambda y, i, s: y.scatter_add_(1, i, s),
        lambda y, i, s: (
            y.masked_fill_(i[:, :1] == 0, 3.0)
            if isinstance(y, torch.Tensor)
            else y.masked_fill_(ember.tensor(i.numpy()[:, :1] == 0), 3.0)
        ),
        lambda y, i, s: y.index_fill_(1, i[0], -1.0),
        lambda y, i, s: y.index_add_(1, i[0], s[:, :2]),
    ],
)
def test_inplace_variants(op):
    idx = np.array([[0, 2], [1, 0]])

    def fn(x, i, s):
        y = x * 1
        out = op(y, i, s)
        assert out is y
        return y

    check_op(fn, [rand(2, 3, seed=22), idx, rand(2, 2, seed=23)])


def test_inplace_bumps_version_and_checks_leaves():
    x = ember.zeros(2, 3)
    v = x._version
    x.masked_fill_(ember.tensor([True, False, True]), 1.0)
    assert x._version == v + 1 and x.tolist() == [[1, 0, 1], [1, 0, 1]]
    w = ember.zeros(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable"):
        w.scatter_(0, ember.tensor([0]), 1.0)


# ------------------------------------------------------------------------------ errors
def test_errors():
    x = ember.ones(3, 4)
    with pytest.raises(
        RuntimeError, match="Index tensor must have the same number of dimensions as input tensor"
    ):
        x.gather(1, ember.tensor([0, 1]))
    with pytest.raises(
        RuntimeError,
        match=r"Size does not match at dimension 0 expected index "
        r"\[4, 1\] to be no larger than self \[3, 4\] apart "
        r"from dimension 1",
    ):
        x.gather(1, ember.zeros(4, 1, dtype=ember.int64))
    with pytest.raises(RuntimeError, match="index 5 is out of bounds for dimension 1 with size 4"):
        x.gather(1, ember.tensor([[5], [1]]))
    with pytest.raises(RuntimeError, match="index -1 is out of bounds for dimension 1"):
        x.gather(1, ember.tensor([[-1], [1]]))
    with pytest.raises(
        IndexError,
        match=r"gather: Dimension out of range \(expected to be in "
        r"range of \[-2, 1\], but got 2\)",
    ):
        x.gather(2, ember.tensor([[0]]))
    with pytest.raises(RuntimeError, match="Expected dtype int32 or int64 for index"):
        x.gather(1, ember.tensor([[0.0]]))
    with pytest.raises(RuntimeError, match=r"to be no larger size than src \[1\]"):
        ember.zeros(3).scatter(0, ember.tensor([0, 1]), ember.ones(1))
    with pytest.raises(RuntimeError, match="index 9 is out of bounds for dimension 0 with size 3"):
        ember.zeros(3).scatter_add(0, ember.tensor([9]), ember.ones(1))
    with pytest.raises(IndexError, match="Index is supposed to be a vector"):
        x.index_select(1, ember.tensor([[1]]))
    with pytest.raises(IndexError, match="index 4 is out of bounds for dimension 1 with size 4"):
        x.index_select(1, ember.tensor([4]))
    with pytest.raises(
        RuntimeError, match="only supports boolean masks, but got mask with dtype float32"
    ):
        x.masked_fill(ember.ones(4), 1.0)
    with pytest.raises(
        RuntimeError,
        match="only supports a 0-dimensional value tensor, but "
        r"got tensor with 1 dimension\(s\)",
    ):
        x.masked_fill(ember.ones(4, dtype=ember.bool), ember.ones(2))
    with pytest.raises(RuntimeError, match=r"mask of shape \[2\] does not broadcast"):
        x.masked_fill(ember.ones(2, dtype=ember.bool), 0.0)
    with pytest.raises(RuntimeError, match=r"mask of shape \[3\] does not broadcast"):
        x.masked_select(ember.ones(3, dtype=ember.bool))
    with pytest.raises(IndexError, match="tried to access index 12 on a tensor of 12 elements"):
        x.take(ember.tensor([12]))
    with pytest.raises(RuntimeError, match="same number of dimensions"):
        ember.take_along_dim(x, ember.tensor([0]), 1)
