import numpy as np
import pytest

import ember
from tests.ops.shape_oracle import check_double_backward, first_grad_gradcheck, lib
from tests.oracle import check_op, gradcheck_op, rand, torch

# (id, fn usable on both ember and torch tensors, input shape)
CASES = [
    ("reshape", lambda x: x.reshape(3, -1), (2, 3, 2)),
    ("reshape_tuple", lambda x: x.reshape((-1,)), (2, 3)),
    ("view", lambda x: x.view(6, 2), (3, 4)),
    ("view_as", lambda x: x.view_as(x.reshape(-1)), (2, 3)),
    ("reshape_as", lambda x: x.reshape_as(x.reshape(3, 2)), (2, 3)),
    ("ravel", lambda x: x.ravel(), (2, 3, 2)),
    ("expand", lambda x: x.expand(2, 3, 4), (3, 1)),
    ("expand_as", lambda x: x.expand_as(x.expand(4, 3, 2)), (3, 2)),
    ("broadcast_to", lambda x: lib(x).broadcast_to(x, (5, 2, 3)), (2, 1)),
    ("permute", lambda x: x.permute(2, 0, 1), (2, 3, 4)),
    ("permute_neg", lambda x: lib(x).permute(x, (-1, -3, -2)), (2, 3, 4)),
    ("transpose", lambda x: x.transpose(0, -1), (2, 3, 4)),
    ("swapaxes", lambda x: x.swapaxes(1, 2), (2, 3, 4)),
    ("t", lambda x: x.t(), (2, 3)),
    ("T", lambda x: x.T, (2, 3)),
    ("mT", lambda x: x.mT, (4, 2, 3)),
    ("flatten", lambda x: x.flatten(), (2, 3, 4)),
    ("flatten_mid", lambda x: x.flatten(1, 2), (2, 3, 4, 2)),
    ("flatten_neg", lambda x: lib(x).flatten(x, -3, -2), (2, 3, 4)),
    ("flatten_same", lambda x: x.flatten(1, 1) * 1, (2, 3)),
    ("unflatten", lambda x: x.unflatten(1, (2, 3)), (4, 6)),
    ("unflatten_infer", lambda x: lib(x).unflatten(x, -1, (-1, 2)), (3, 4)),
    ("squeeze_all", lambda x: x.squeeze(), (1, 3, 1, 2)),
    ("squeeze_dim", lambda x: x.squeeze(-2), (1, 3, 1, 2)),
    ("squeeze_noop", lambda x: x.squeeze(1), (1, 3, 1, 2)),
    ("squeeze_tuple", lambda x: lib(x).squeeze(x, (0, 2, 3)), (1, 3, 1, 2)),
    ("unsqueeze", lambda x: x.unsqueeze(1), (2, 3)),
    ("unsqueeze_end", lambda x: x.unsqueeze(-1), (2, 3)),
    ("unsqueeze_neg", lambda x: lib(x).unsqueeze(x, -3), (2, 3)),
    ("movedim", lambda x: x.movedim(0, -1), (2, 3, 4)),
    ("movedim_tuple", lambda x: lib(x).movedim(x, (0, 1), (2, 0)), (2, 3, 4)),
    ("moveaxis", lambda x: lib(x).moveaxis(x, -1, 0), (2, 3, 4)),
    ("narrow", lambda x: x.narrow(1, 1, 2), (3, 4)),
    ("narrow_neg", lambda x: lib(x).narrow(x, -1, -3, 2), (3, 4)),
    ("narrow_empty", lambda x: x.narrow(0, 3, 0), (3, 4)),
    ("diagonal", lambda x: x.diagonal(), (3, 4)),
    ("diagonal_offset", lambda x: x.diagonal(1, -1, 0), (3, 4, 5)),
    ("diagonal_neg", lambda x: lib(x).diagonal(x, -1, 1, 2), (2, 3, 4)),
    ("diagonal_far", lambda x: x.diagonal(7), (3, 4)),
    ("diag_embed", lambda x: lib(x).diag_embed(x), (2, 3)),
    ("diag_embed_dims", lambda x: lib(x).diag_embed(x, 1, 0, 2), (2, 3)),
    ("diag_vec", lambda x: lib(x).diag(x, -1), (3,)),
    ("diag_mat", lambda x: lib(x).diag(x, 1), (3, 4)),
    ("flip", lambda x: x.flip(0), (3, 4)),
    ("flip_many", lambda x: lib(x).flip(x, (0, -1)), (2, 3, 4)),
    ("flip_none", lambda x: x.flip(()), (2, 3)),
    ("fliplr", lambda x: x.fliplr(), (3, 4)),
    ("flipud", lambda x: lib(x).flipud(x), (3, 4)),
    ("roll", lambda x: x.roll(1, 0), (3, 4)),
    ("roll_neg", lambda x: lib(x).roll(x, -5, -1), (3, 4)),
    ("roll_tuple", lambda x: x.roll((1, -2), (1, 0)), (3, 4, 2)),
    ("roll_flat", lambda x: x.roll(5), (3, 4)),
    ("tril", lambda x: x.tril(), (4, 3)),
    ("tril_k", lambda x: lib(x).tril(x, -1), (2, 4, 3)),
    ("triu", lambda x: x.triu(), (3, 4)),
    ("triu_k", lambda x: lib(x).triu(x, 2), (2, 3, 5)),
    ("triu_big", lambda x: x.triu(-10), (3, 4)),
]
IDS = [c[0] for c in CASES]


@pytest.mark.parametrize("name,fn,shape", CASES, ids=IDS)
def test_matches_torch(name, fn, shape):
    check_op(fn, [rand(*shape, seed=1)])


# view() of a non-contiguous tensor raises (see test_errors); a transposed (n, 1) is contiguous
NONCONTIG = [
    c for c in CASES if len(c[2]) >= 2 and min(c[2][:2]) > 1 and c[0] not in ("view", "view_as")
]


@pytest.mark.parametrize("name,fn,shape", NONCONTIG, ids=[c[0] for c in NONCONTIG])
def test_noncontiguous_input(name, fn, shape):
    check_op(fn, [rand(*shape, seed=2)], noncontiguous=True)


@pytest.mark.parametrize("name,fn,shape", CASES, ids=IDS)
def test_gradcheck(name, fn, shape):
    gradcheck_op(fn, [rand(*shape, seed=3)])


@pytest.mark.parametrize("name,fn,shape", CASES, ids=IDS)
def test_double_backward(name, fn, shape):
    check_double_backward(fn, [rand(*shape, seed=4)])
    first_grad_gradcheck(fn, rand(*shape, seed=5))


@pytest.mark.parametrize(
    "fn,shape",
    [
        (lambda x: x.flatten(), ()),
        (lambda x: x.reshape(1, 1), ()),
        (lambda x: x.squeeze(), ()),
        (lambda x: x.squeeze(0), ()),
        (lambda x: x.unsqueeze(0), ()),
        (lambda x: x.unsqueeze(-1), ()),
        (lambda x: x.movedim(0, 0), ()),
        (lambda x: x.flip(0), ()),
        (lambda x: x.roll(2), ()),
        (lambda x: x.expand(2, 3), ()),
        (lambda x: x.flatten(), (0, 3)),
        (lambda x: x.flatten(0, 1), (2, 0, 3)),
        (lambda x: x.unflatten(0, (-1, 2)), (0, 3)),
        (lambda x: x.squeeze(), (1, 0, 1)),
        (lambda x: x.unsqueeze(1), (0, 3)),
        (lambda x: x.movedim(0, 1), (0, 3)),
        (lambda x: x.narrow(1, 1, 1), (0, 3)),
        (lambda x: x.flip(0, 1), (0, 3)),
        (lambda x: x.roll(1, 0), (0, 3)),
        (lambda x: x.roll(1, 1), (0, 3)),
        (lambda x: x.tril(), (0, 3)),
        (lambda x: x.triu(1), (3, 0)),
        (lambda x: x.diagonal(), (0, 3)),
        (lambda x: lib(x).diag_embed(x), (0,)),
        (lambda x: x.transpose(0, 1), (0, 3)),
    ],
    ids=lambda v: str(v) if isinstance(v, tuple) else None,
)
def test_zero_dim_and_empty(fn, shape):
    check_op(fn, [rand(*shape, seed=6)])


@pytest.mark.parametrize("dtype", [np.int64, np.bool_, np.float16])
def test_other_dtypes(dtype):
    x = (rand(3, 4, seed=7) * 3).astype(dtype)
    for fn in (
        lambda t: t.flip(1),
        lambda t: t.roll(1, 0),
        lambda t: t.tril(),
        lambda t: t.triu(1),
        lambda t: t.diagonal(),
        lambda t: t.narrow(0, 1, 2),
        lambda t: t.flatten(),
        lambda t: t.movedim(1, 0),
        lambda t: t.unsqueeze(0),
    ):
        check_op(fn, [x], atol=1e-3)


def test_flatten_same_dim_returns_input_like_torch():
    x = ember.ones(2, 3)
    assert x.flatten(1, 1) is x
    assert x.flatten(0, 0) is x


# ------------------------------------------------------------------ views and versions
VIEWS = [
    ("reshape", lambda x: x.reshape(4, 3)),
    ("view", lambda x: x.view(-1)),
    ("flatten", lambda x: x.flatten()),
    ("unflatten", lambda x: x.unflatten(1, (2, 2))),
    ("squeeze", lambda x: x.unsqueeze(0).squeeze(0)),
    ("unsqueeze", lambda x: x.unsqueeze(1)),
    ("movedim", lambda x: x.movedim(0, 1)),
    ("permute", lambda x: x.permute(1, 0)),
    ("transpose", lambda x: x.transpose(0, 1)),
    ("T", lambda x: x.T),
    ("expand", lambda x: x.unsqueeze(0).expand(2, 3, 4)),
    ("narrow", lambda x: x.narrow(1, 1, 2)),
    ("diagonal", lambda x: x.diagonal(1)),
]


@pytest.mark.parametrize("name,fn", VIEWS, ids=[v[0] for v in VIEWS])
def test_view_shares_memory_and_version(name, fn):
    x = ember.tensor(rand(3, 4, seed=8))
    v = fn(x)
    before = v._version
    with ember.no_grad():
        x.add_(1.0)
    assert v._version == before + 1
    assert x._version == v._version
    np.testing.assert_allclose(v.numpy(), fn(torch.from_numpy(x.numpy().copy())).numpy())
    assert v._base is x


def test_view_of_view_has_root_base():
    x = ember.tensor(rand(3, 4, seed=9))
    v = x.transpose(0, 1).narrow(0, 1, 2).unsqueeze(0)
    assert v._base is x
    with ember.no_grad():
        v.mul_(0.0)
    assert x._version == 1
    assert np.all(x.numpy()[:, 1:3] == 0) and np.all(x.numpy()[:, 0] != 0)


def test_writes_through_diagonal_and_narrow_views():
    x = ember.zeros(3, 3)
    x.diagonal().fill_(2.0)
    x.narrow(0, 2, 1).add_(1.0)
    np.testing.assert_array_equal(x.numpy(), [[2, 0, 0], [0, 2, 0], [1, 1, 3]])
    assert x._version == 2


@pytest.mark.parametrize(
    "fn",
    [
        lambda x: x.flip(0),
        lambda x: x.roll(1, 0),
        lambda x: x.tril(),
        lambda x: x.triu(),
        lambda x: x.t().reshape(-1),
        lambda x: ember.diag(x),
    ],
)
def test_copies_do_not_share_version(fn):
    x = ember.tensor(rand(3, 3, seed=10))
    y = fn(x)
    snapshot = y.numpy().copy()
    with ember.no_grad():
        x.add_(1.0)
    assert y._version == 0 and y._base is None
    np.testing.assert_array_equal(y.numpy(), snapshot)


def test_inplace_on_view_then_backward_raises():
    x = ember.tensor(rand(3, 4, seed=11), requires_grad=True)
    y = x * 2
    v = y.narrow(0, 0, 2)
    z = (v * v).sum()
    with ember.no_grad():
        y.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        z.backward()


def test_inplace_tril_triu():
    x = ember.tensor(rand(3, 3, seed=12))
    ref = torch.from_numpy(x.numpy().copy())
    assert x.tril_(-1) is x
    np.testing.assert_array_equal(x.numpy(), ref.tril(-1).numpy())
    x = ember.tensor(rand(3, 3, seed=12))
    x.triu_(1)
    np.testing.assert_array_equal(x.numpy(), ref.triu(1).numpy())


def test_grad_fn_names():
    x = ember.ones(2, 3, requires_grad=True)
    assert x.narrow(0, 0, 1).grad_fn.name() == "SliceBackward"
    assert x.squeeze().grad_fn.name() == "SqueezeBackward"
    assert x.unsqueeze(0).grad_fn.name() == "UnsqueezeBackward"
    assert x.flip(0).grad_fn.name() == "FlipBackward"
    assert x.triu().grad_fn.name() == "TriuBackward"
    assert x.diagonal().grad_fn.name() == "DiagonalBackward"


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "fn,exc,pattern",
    [
        (lambda x: x.flatten(1, 0), RuntimeError, "start_dim cannot come after end_dim"),
        (lambda x: x.flatten(3), IndexError, r"flatten: Dimension out of range.*got 3"),
        (
            lambda x: x.unflatten(1, (2, 2)),
            RuntimeError,
            r"unflatten: Provided sizes \[2, 2\] don't multiply up to the size of dim 1 \(3\)",
        ),
        (lambda x: x.unflatten(1, ()), RuntimeError, "unflatten: sizes must be non-empty"),
        (lambda x: x.unflatten(1, (-1, -1)), RuntimeError, "only one dimension can be inferred"),
        (lambda x: x.squeeze(2), IndexError, r"squeeze: Dimension out of range"),
        (lambda x: x.squeeze((0, -2)), RuntimeError, "appears multiple times"),
        (
            lambda x: x.unsqueeze(3),
            IndexError,
            r"unsqueeze: Dimension out of range \(expected to be in range of \[-3, 2\], but got 3\)",  # noqa: E501
        ),
        (lambda x: x.unsqueeze(-4), IndexError, "unsqueeze: Dimension out of range"),
        (
            lambda x: x.movedim((0, 1), 0),
            RuntimeError,
            r"movedim: Invalid source or destination dims: source \(\[0, 1\] dims\)",
        ),
        (lambda x: x.movedim((0, 0), (0, 1)), RuntimeError, r"movedim: repeated dim in `source`"),
        (lambda x: x.movedim((0, 1), (1, -1)), RuntimeError, "repeated dim in `destination`"),
        (lambda x: x.movedim(2, 0), IndexError, "movedim: Dimension out of range"),
        (
            lambda x: x.narrow(1, 2, 2),
            RuntimeError,
            r"narrow: start \(2\) \+ length \(2\) exceeds dimension size \(3\)",
        ),
        (
            lambda x: x.narrow(1, 4, 0),
            IndexError,
            r"start out of range \(expected to be in range of \[-3, 3\], but got 4\)",
        ),
        (lambda x: x.narrow(1, 0, -1), RuntimeError, "length must be non-negative"),
        (lambda x: x.narrow(2, 0, 1), IndexError, "narrow: Dimension out of range"),
        (lambda x: x.narrow(0, ember.tensor(1.0), 1), RuntimeError, "0-dim integral Tensor"),
        (lambda x: x.diagonal(0, 1, -1), RuntimeError, "diagonal dimensions cannot be identical"),
        (lambda x: ember.diag(x.unsqueeze(0)), RuntimeError, r"diag\(\): Supports 1D or 2D"),
        (lambda x: x.flip(0, 0), RuntimeError, "appears multiple times"),
        (lambda x: x.flip(2), IndexError, "flip: Dimension out of range"),
        (lambda x: x.flatten().fliplr(), RuntimeError, "fliplr: Input must be >= 2-d"),
        (
            lambda x: x.roll((1, 2), 0),
            RuntimeError,
            "roll: shifts and dimensions must align. shifts: 2, dims:1",
        ),
        (lambda x: x.roll((1, 2)), RuntimeError, "shifts: 2, dims:0"),
        (lambda x: x.roll(1, 2), IndexError, "roll: Dimension out of range"),
        (
            lambda x: x.flatten().tril(),
            RuntimeError,
            "tril: input tensor must have at least 2 dimensions",
        ),
        (lambda x: x.flatten().triu(), RuntimeError, "triu: input tensor must have at least 2"),
        (lambda x: x.t().view(-1), RuntimeError, "view size is not compatible"),
        (
            lambda x: x.reshape(4, -1),
            RuntimeError,
            r"reshape: shape '\[4, -1\]' is invalid for input",
        ),
        (lambda x: x.expand(3, 3), RuntimeError, "expand: the expanded size"),
        (lambda x: x.permute(0), RuntimeError, "permute: number of dims don't match"),
    ],
)
def test_errors(fn, exc, pattern):
    x = ember.ones(2, 3)
    with pytest.raises(exc, match=pattern):
        fn(x)


def test_zero_dim_errors():
    s = ember.tensor(1.0)
    with pytest.raises(RuntimeError, match="narrow\\(\\) cannot be applied to a 0-dim tensor"):
        s.narrow(0, 0, 1)
    with pytest.raises(RuntimeError, match="flipud: Input must be >= 1-d"):
        s.flipud()
    with pytest.raises(RuntimeError, match="diagonal: expected a tensor with at least 2"):
        s.diagonal()
