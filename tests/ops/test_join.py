import numpy as np
import pytest

import ember
from ember.ops.join import pad
from tests.ops.shape_oracle import check_double_backward, first_grad_gradcheck, lib
from tests.oracle import check_op, gradcheck_op, rand, torch

F = torch.nn.functional


def tpad(x, *args, **kw):
    return pad(x, *args, **kw) if isinstance(x, ember.Tensor) else F.pad(x, *args, **kw)


# (id, fn on both libraries, input shapes)
CASES = [
    ("cat", lambda a, b: lib(a).cat([a, b]), [(2, 3), (4, 3)]),
    ("cat_dim1", lambda a, b: lib(a).cat((a, b, a), 1), [(2, 3), (2, 1)]),
    ("cat_neg", lambda a, b: lib(a).cat([a, b], dim=-2), [(2, 3, 2), (2, 1, 2)]),
    ("concat", lambda a, b: lib(a).concat([a, b], -1), [(2, 3), (2, 2)]),
    ("concatenate", lambda a, b: lib(a).concatenate([b, a], 0), [(1, 3), (2, 3)]),
    ("cat_one", lambda a: lib(a).cat([a]), [(2, 3)]),
    ("cat_empty_piece", lambda a, b: lib(a).cat([a, b], 1), [(2, 0), (2, 3)]),
    ("cat_legacy_empty", lambda a, b: lib(a).cat([a, b], 1), [(0,), (2, 3)]),
    ("stack", lambda a, b: lib(a).stack([a, b]), [(2, 3), (2, 3)]),
    ("stack_end", lambda a, b: lib(a).stack([a, b, a], -1), [(2, 3), (2, 3)]),
    ("stack_mid", lambda a, b: lib(a).stack((a, b), 1), [(2, 3), (2, 3)]),
    ("stack_0d", lambda a, b: lib(a).stack([a, b]), [(), ()]),
    ("hstack", lambda a, b: lib(a).hstack([a, b]), [(2, 3), (2, 1)]),
    ("hstack_1d", lambda a, b: lib(a).hstack([a, b]), [(3,), (2,)]),
    ("vstack", lambda a, b: lib(a).vstack([a, b]), [(3,), (2, 3)]),
    ("dstack", lambda a, b: lib(a).dstack([a, b]), [(2, 3), (2, 3, 2)]),
    ("split", lambda a: a.split(2), [(5, 3)]),
    ("split_dim", lambda a: lib(a).split(a, 2, dim=-1), [(2, 5)]),
    ("split_sizes", lambda a: a.split([1, 3, 0, 1], 1), [(2, 5)]),
    ("split_big", lambda a: a.split(10), [(3, 2)]),
    ("chunk", lambda a: a.chunk(3), [(5, 2)]),
    ("chunk_fewer", lambda a: lib(a).chunk(a, 4, -1), [(2, 6)]),
    ("tensor_split", lambda a: a.tensor_split(3), [(7, 2)]),
    ("tensor_split_idx", lambda a: lib(a).tensor_split(a, [1, 5], 1), [(2, 7)]),
    ("tensor_split_overlap", lambda a: a.tensor_split([5, 1, 9]), [(7,)]),
    ("unbind", lambda a: a.unbind(), [(3, 2)]),
    ("unbind_neg", lambda a: lib(a).unbind(a, -1), [(2, 3, 4)]),
    ("repeat", lambda a: a.repeat(2, 3), [(2, 3)]),
    ("repeat_lead", lambda a: a.repeat(2, 1, 3), [(2, 3)]),
    ("repeat_zero", lambda a: a.repeat(0, 2), [(2, 3)]),
    ("tile", lambda a: lib(a).tile(a, (2,)), [(2, 3)]),
    ("tile_more", lambda a: a.tile(2, 1, 2), [(2, 3)]),
    ("pad_const", lambda a: tpad(a, (1, 2)), [(2, 3)]),
    ("pad_const_2d", lambda a: tpad(a, (1, 0, 0, 2), value=1.5), [(2, 3, 2)]),
    ("pad_const_neg", lambda a: tpad(a, (-1, 2, 1, -1)), [(3, 4)]),
    ("pad_const_crop", lambda a: tpad(a, (-1, -1, 0, -1)), [(3, 4)]),
    ("pad_const_all", lambda a: tpad(a, (1, 1, 1, 1, 1, 1)), [(2, 3, 2)]),
    ("pad_const_none", lambda a: tpad(a, ()), [(2, 3)]),
    ("reflect_1d", lambda a: tpad(a, (2, 1), mode="reflect"), [(2, 3, 4)]),
    ("reflect_2d", lambda a: tpad(a, (1, 2, 2, 1), mode="reflect"), [(2, 3, 4)]),
    ("reflect_3d", lambda a: tpad(a, (1, 0, 0, 1, 1, 1), mode="reflect"), [(1, 2, 3, 3, 3)]),
    ("reflect_neg", lambda a: tpad(a, (-2, 3), mode="reflect"), [(1, 2, 5)]),
    ("reflect_max", lambda a: tpad(a, (2, 2), mode="reflect"), [(2, 3)]),
    ("replicate_1d", lambda a: tpad(a, (3, 1), mode="replicate"), [(2, 3, 2)]),
    ("replicate_2d", lambda a: tpad(a, (4, 1, 0, 2), mode="replicate"), [(1, 2, 3, 2)]),
    ("replicate_neg", lambda a: tpad(a, (3, -2), mode="replicate"), [(2, 5)]),
    ("replicate_3d", lambda a: tpad(a, (1, 1, 2, 0, 0, 1), mode="replicate"), [(2, 2, 3, 2)]),
    ("circular_1d", lambda a: tpad(a, (2, 3), mode="circular"), [(2, 3, 4)]),
    ("circular_2d", lambda a: tpad(a, (1, 1, 2, 0), mode="circular"), [(1, 2, 3, 2)]),
    ("circular_neg", lambda a: tpad(a, (-1, 2), mode="circular"), [(1, 2, 5)]),
    ("circular_3d", lambda a: tpad(a, (1, 0, 0, 1, 1, 1), mode="circular"), [(2, 2, 2, 2)]),
]
IDS = [c[0] for c in CASES]


def _inputs(shapes, seed):
    return [rand(*s, seed=seed + k) for k, s in enumerate(shapes)]


@pytest.mark.parametrize("name,fn,shapes", CASES, ids=IDS)
def test_matches_torch(name, fn, shapes):
    check_op(fn, _inputs(shapes, 1))


NONCONTIG = [c for c in CASES if all(len(s) >= 2 and min(s[:2]) > 1 for s in c[2])]


@pytest.mark.parametrize("name,fn,shapes", NONCONTIG, ids=[c[0] for c in NONCONTIG])
def test_noncontiguous_inputs(name, fn, shapes):
    check_op(fn, _inputs(shapes, 2), noncontiguous=True)


@pytest.mark.parametrize("name,fn,shapes", CASES, ids=IDS)
def test_gradcheck(name, fn, shapes):
    gradcheck_op(fn, _inputs(shapes, 3))


# torch cannot differentiate the (empty) gradient of repeat(0, 2) a second time
SECOND = [c for c in CASES if c[0] != "repeat_zero"]


@pytest.mark.parametrize("name,fn,shapes", SECOND, ids=[c[0] for c in SECOND])
def test_double_backward(name, fn, shapes):
    check_double_backward(fn, _inputs(shapes, 4))
    if len(shapes) == 1:
        first_grad_gradcheck(fn, _inputs(shapes, 5)[0])


def test_unused_outputs_get_zero_gradient():
    """Only some pieces of a split are used: one backward, zeros for the rest."""
    check_op(lambda a: a.split(2)[1] * 3, [rand(5, 3, seed=6)])
    check_op(lambda a: a.unbind(1)[0] + a.unbind(1)[2], [rand(2, 3, seed=7)])
    check_op(lambda a: a.chunk(2)[0].sum() * a.chunk(2)[1], [rand(4, 2, seed=8)])


@pytest.mark.parametrize(
    "dtypes",
    [
        (np.float32, np.float64),
        (np.int64, np.float32),
        (np.int32, np.int64),
        (np.bool_, np.float32),
        (np.bool_, np.int32),
        (np.uint8, np.int8),
        (np.float16, np.int64),
        (np.float32, np.float32),
    ],
)
def test_cat_and_stack_promote_like_torch(dtypes):
    a = (rand(2, 3, seed=9) * 3).astype(dtypes[0])
    b = (rand(2, 3, seed=10) * 3).astype(dtypes[1])
    check_op(lambda x, y: lib(x).cat([x, y], 1), [a, b], atol=1e-3)
    check_op(lambda x, y: lib(x).stack([y, x]), [a, b], atol=1e-3)
    check_op(lambda x, y: lib(x).cat([x.flatten().narrow(0, 0, 0), y]), [a, b], atol=1e-3)


def test_cat_bfloat16_and_half_give_float32():
    a = ember.ones(2, dtype=ember.float16)
    b = ember.ones(2, dtype=ember.bfloat16)
    assert ember.cat([a, b]).dtype is ember.float32


def test_cat_all_legacy_empty():
    e = ember.tensor(np.zeros(0, np.float64), requires_grad=True)
    out = ember.cat([e, ember.zeros(0)])
    assert tuple(out.shape) == (0,) and out.dtype is ember.float64


@pytest.mark.parametrize(
    "fn,shapes",
    [
        (lambda a: a.split(0), [(0, 2)]),
        (lambda a: a.split(2), [(0, 2)]),
        (lambda a: a.chunk(3), [(0, 2)]),
        (lambda a: a.unbind(1), [(3, 0)]),
        (lambda a: a.tensor_split(2, 1), [(2, 0)]),
        (lambda a: a.repeat(2, 2), [(0, 2)]),
        (lambda a: a.repeat(3), [()]),
        (lambda a: a.repeat(2, 3), [()]),
        (lambda a: a.tile(()), [()]),
        (lambda a: lib(a).stack([a, a], 1), [(0, 2)]),
        (lambda a: lib(a).cat([a, a], 1), [(0, 2)]),
        (lambda a: tpad(a, (1, 1)), [(0, 2)]),
        (lambda a: tpad(a, ()), [()]),
        (lambda a: tpad(a, (1, 1), mode="reflect"), [(0, 2, 3)]),
        (lambda a: tpad(a, (1, 1), mode="circular"), [(1, 0, 3)]),
        (lambda a: lib(a).atleast_1d(a), [()]),
        (lambda a: lib(a).atleast_2d(a), [(3,)]),
        (lambda a: lib(a).atleast_3d(a), [(3,)]),
        (lambda a: lib(a).atleast_3d(a), [(2, 3)]),
        (lambda a: lib(a).atleast_3d(a, a), [()]),
        (lambda a: lib(a).hstack([a, a]), [()]),
    ],
)
def test_zero_dim_and_empty(fn, shapes):
    check_op(fn, _inputs(shapes, 11))


def test_unbind_of_empty_dim_is_empty_tuple():
    assert ember.zeros(0, 3).unbind() == ()
    assert len(ember.zeros(2, 0).split(1, 1)) == 1
    assert len(ember.zeros(2, 0).chunk(3, 1)) == 3


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
def test_pad_other_dtypes(mode):
    x = (rand(1, 3, 4, seed=12) * 3).astype(np.int64)
    check_op(lambda a: tpad(a, (1, 2), mode=mode), [x])
    check_op(lambda a: tpad(a, (2, 0), mode=mode), [x.astype(np.float16)], atol=1e-3)
    if mode in ("constant", "circular"):  # torch has no bool reflect/replicate kernels
        check_op(lambda a: tpad(a, (1, 2), mode=mode), [x.astype(np.bool_)])


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize(
    "shape, pad",
    [((2, 3, 9), (2, 3)), ((2, 3, 8, 7), (1, 2, 3, 0)), ((1, 2, 5, 6, 7), (2, 1, 0, 3, 1, 2))],
)
def test_pad_without_cropping_fills_the_borders_in_place(mode, shape, pad):
    """Non-negative pads copy the input once into the output and fill each axis's borders
    from the output itself (the gradient: one copy, borders folded back). Forward, gradient
    and double backward are the per-axis concatenation's bit for bit."""
    from ember.ops import join

    x = rand(*shape, seed=13)
    w = rand(*shape, seed=15)
    g = rand(*torch.nn.functional.pad(torch.tensor(x), pad, mode=mode).shape, seed=14)

    def run():
        t = ember.tensor(x, requires_grad=True)
        gt = ember.tensor(g, requires_grad=True)
        y = ember.nn.functional.pad(t, pad, mode=mode)
        (gx,) = ember.autograd.grad(y, t, gt, create_graph=True)
        (gg,) = ember.autograd.grad((gx * ember.tensor(w)).sum(), gt)  # the pad of w again
        return y.detach().numpy(), gx.detach().numpy(), gg.numpy()

    filled = run()
    real_index_pad = join.IndexPad
    join.IndexPad = lambda plan, mode, fills=None: real_index_pad(plan, mode, None)
    try:
        concatenated = run()
    finally:
        join.IndexPad = real_index_pad
    for a, b in zip(filled, concatenated):
        np.testing.assert_array_equal(a, b)
    check_op(lambda a: tpad(a, pad, mode=mode), [x])


def test_pad_value_is_cast_to_the_dtype():
    check_op(lambda a: tpad(a, (1, 1), value=2.5), [(rand(2, 3, seed=12) * 3).astype(np.int64)])
    check_op(lambda a: tpad(a, (1, 1, 0, 1), value=-1.0), [rand(2, 3, seed=12)])


# ------------------------------------------------------------------ views and versions
@pytest.mark.parametrize(
    "fn",
    [
        lambda x: x.split(2),
        lambda x: x.split([1, 3], 1),
        lambda x: x.chunk(2),
        lambda x: x.unbind(),
        lambda x: x.unbind(1),
        lambda x: x.tensor_split([1, 2], 1),
    ],
)
def test_pieces_are_views_sharing_the_version(fn):
    x = ember.tensor(rand(4, 4, seed=13))
    pieces = fn(x)
    assert len(pieces) >= 2
    with ember.no_grad():
        x.add_(1.0)
    ref = fn(torch.from_numpy(x.numpy().copy()))
    for p, r in zip(pieces, ref):
        assert p._version == 1 and p._base is x
        np.testing.assert_array_equal(p.numpy(), r.numpy())


@pytest.mark.parametrize(
    "fn",
    [
        lambda x: ember.cat([x, x]),
        lambda x: ember.stack([x]),
        lambda x: x.repeat(1, 1),
        lambda x: x.tile((1,)),
        lambda x: pad(x, (0, 0)),
        lambda x: pad(x, (-1, 0)),
        lambda x: pad(x.unsqueeze(0), (0, 0), mode="reflect"),
    ],
)
def test_joins_are_copies(fn):
    x = ember.tensor(rand(3, 3, seed=14))
    y = fn(x)
    snapshot = y.numpy().copy()
    with ember.no_grad():
        x.add_(1.0)
    assert y._version == 0
    np.testing.assert_array_equal(y.numpy(), snapshot)


def test_inplace_on_a_split_piece_that_requires_grad_raises():
    x = ember.tensor(rand(4, 2, seed=15), requires_grad=True)
    a, _ = (x * 1).split(2)
    with pytest.raises(RuntimeError, match="view"):
        a.add_(1.0)


def test_grad_fn_names():
    x = ember.ones(1, 2, 3, requires_grad=True)
    assert ember.cat([x, x]).grad_fn.name() == "CatBackward"
    assert x.split(1, 2)[0].grad_fn.name() == "SplitBackward"
    assert x.unbind(2)[0].grad_fn.name() == "UnbindBackward"
    assert pad(x, (1, 1), mode="reflect").grad_fn.name() == "ReflectionPadBackward"
    assert pad(x, (1, 1)).grad_fn.name() == "ConstantPadNdBackward"


def test_pad_is_not_an_ember_function_like_torch():
    assert not hasattr(ember, "pad") and not hasattr(ember.Tensor, "pad")
    assert not hasattr(ember.Tensor, "cat") and hasattr(ember.Tensor, "repeat")
    assert not hasattr(ember, "repeat")


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "fn,exc,pattern",
    [
        (lambda x: ember.cat([]), ValueError, r"cat\(\): expected a non-empty list of Tensors"),
        (lambda x: ember.cat(x), TypeError, "cat: expected a sequence of Tensors"),
        (lambda x: ember.cat([x, 1.0]), TypeError, "element 1 is float"),
        (
            lambda x: ember.cat([x, ember.ones(2, 4)]),
            RuntimeError,
            r"cat: Sizes of tensors must match except in dimension 0. Expected size 3 but got size 4 "  # noqa: E501
            r"for tensor number 1 in the list \(shapes \[\(2, 3\), \(2, 4\)\]\)",
        ),
        (
            lambda x: ember.cat([x, ember.ones(3)]),
            RuntimeError,
            "Tensors must have same number of dimensions: got 2 and 1",
        ),
        (
            lambda x: ember.cat([ember.tensor(1.0), x]),
            RuntimeError,
            r"zero-dimensional tensor \(at position 0\) cannot be concatenated",
        ),
        (lambda x: ember.cat([x, x], 2), IndexError, "cat: Dimension out of range"),
        (lambda x: ember.stack([]), RuntimeError, "stack expects a non-empty TensorList"),
        (
            lambda x: ember.stack([x, ember.ones(2, 4)]),
            RuntimeError,
            r"stack expects each tensor to be equal size, but got \[2, 3\] at entry 0 and \[2, 4\] "
            r"at entry 1",
        ),
        (
            lambda x: ember.stack([x, x], 3),
            IndexError,
            r"stack: Dimension out of range \(expected to be in range of \[-3, 2\], but got 3\)",
        ),
        (lambda x: ember.hstack([]), RuntimeError, "hstack expects a non-empty TensorList"),
        (lambda x: x.split(0), RuntimeError, "split_size can only be 0 if dimension size is 0"),
        (lambda x: x.split(-1), RuntimeError, "split expects split_size be non-negative"),
        (
            lambda x: x.split([1, 2]),
            RuntimeError,
            r"split_with_sizes expects split_sizes to sum exactly to 2 \(input tensor's size at "
            r"dimension 0\), but got split_sizes=\[1, 2\]",
        ),
        (lambda x: x.split([3, -1]), RuntimeError, "only non-negative entries"),
        (lambda x: x.split(1, 2), IndexError, "split: Dimension out of range"),
        (lambda x: ember.tensor(1.0).split(1), RuntimeError, "split expects at least a 1-dim"),
        (lambda x: x.chunk(0), RuntimeError, "chunk expects `chunks` to be greater than 0"),
        (lambda x: ember.tensor(1.0).chunk(1), RuntimeError, "chunk expects at least a 1-dim"),
        (lambda x: x.tensor_split(0), RuntimeError, "number of sections must be larger than 0"),
        (lambda x: ember.tensor(1.0).unbind(), IndexError, "tensor has no dimensions"),
        (lambda x: x.unbind(-3), IndexError, "unbind: Dimension out of range"),
        (
            lambda x: x.repeat(2),
            RuntimeError,
            "Number of dimensions of repeat dims can not be "
            "smaller than number of dimensions of tensor",
        ),
        (
            lambda x: x.repeat(-1, 2),
            RuntimeError,
            "Trying to create tensor with negative dimension",
        ),
        (lambda x: x.repeat(), TypeError, "repeat"),
        (lambda x: pad(x, (1,)), RuntimeError, "Padding length must be divisible by 2"),
        (
            lambda x: pad(x, (1,) * 6),
            RuntimeError,
            "Padding length should be less than or equal to two times the input dimension but got "
            "padding length 6 and input of dimension 2",
        ),
        (lambda x: pad(x, (-2, -2)), RuntimeError, r"pad: .*to a negative size \(-1\)"),
        (
            lambda x: pad(x, (1, 1), mode="foo"),
            NotImplementedError,
            "Unrecognised padding mode foo",
        ),
        (
            lambda x: pad(x, (1, 1), mode="reflect", value=1),
            RuntimeError,
            'Padding mode "reflect" doesn\'t take in value argument',
        ),
        (
            lambda x: pad(x.flatten(), (1, 1), mode="reflect"),
            NotImplementedError,
            "Padding size 2 is not supported for 1D input tensor",
        ),
        (
            lambda x: pad(x, (1, 1, 1, 1), mode="replicate"),
            NotImplementedError,
            "Padding size 4 is not supported for 2D input tensor",
        ),
        (
            lambda x: pad(x, (3, 0), mode="reflect"),
            RuntimeError,
            r"Padding size should be less than the corresponding input dimension, but got: "
            r"padding \(3, 0\) at dimension 1 of input \[2, 3\]",
        ),
        (
            lambda x: pad(x, (4, 0), mode="circular"),
            RuntimeError,
            "Padding value causes wrapping around more than once",
        ),
        (lambda x: pad(x, (-2, -2), mode="replicate"), RuntimeError, "is too small"),
        (lambda x: pad(x, (-2, -2), mode="circular"), RuntimeError, "resulting in an empty dim"),
        (
            lambda x: pad(ember.ones(1, 0, 3), (1, 1), mode="reflect"),
            RuntimeError,
            r"other non-zero dimensions for input, but got: \[1, 0, 3\]",
        ),
    ],
)
def test_errors(fn, exc, pattern):
    x = ember.ones(2, 3)
    with pytest.raises(exc, match=pattern):
        fn(x)


def test_pad_is_public_under_nn_functional():
    import ember.nn.functional as F

    out = F.pad(ember.ones(2, 2), (1, 1), value=0.5)
    np.testing.assert_array_equal(out.numpy()[:, 0], [0.5, 0.5])
    assert tuple(out.shape) == (2, 4)
