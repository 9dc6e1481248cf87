import numpy as np
import pytest

import ember
from tests.oracle import check_op, gradcheck_op, rand, torch


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
@pytest.mark.parametrize(
    "shapes",
    [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 4), (3, 1)), ((), (3,)), ((0, 3), (3,)), ((5,), ())],
)
def test_binary_matches_torch(op, shapes):
    a = rand(*shapes[0], seed=1)
    b = rand(*shapes[1], seed=2, positive=(op == "div"))
    check_op(lambda x, y: getattr(x, op)(y), [a, b])
    check_op(
        lambda x, y: getattr(ember, op)(x, y),
        [a, b],
        torch_fn=lambda x, y: getattr(torch, op)(x, y),
    )


@pytest.mark.parametrize(
    "expr",
    [
        lambda x, y: x + y * 2.0 - 1,
        lambda x, y: 3.0 / y - x / 2,
        lambda x, y: 2 - x,
        lambda x, y: -(x**2) + y**3,
        lambda x, y: y**x,
        lambda x, y: 2.0**x,
        lambda x, y: x**0.5 + y,
    ],
)
def test_operators_and_reflected_forms(expr):
    check_op(expr, [rand(3, 4, seed=3, positive=True), rand(3, 4, seed=4, positive=True)])


def test_noncontiguous_inputs():
    check_op(lambda x, y: x * y + x, [rand(3, 4, seed=5), rand(3, 4, seed=6)], noncontiguous=True)


@pytest.mark.parametrize(
    "fn",
    [
        lambda x, y: x + y,
        lambda x, y: x - y,
        lambda x, y: x * y,
        lambda x, y: x / y,
        lambda x, y: x**y,
    ],
)
def test_gradcheck_binary(fn):
    gradcheck_op(fn, [rand(2, 3, seed=7, positive=True), rand(3, seed=8, positive=True)])


def test_promotion_follows_torch():
    i = ember.tensor([1, 2])
    assert i.dtype is ember.int64
    assert (i + 1.5).dtype is ember.float32
    assert (i / 2).dtype is ember.float32
    assert (i * 2).dtype is ember.int64
    h = ember.ones(2, dtype=ember.float16)
    assert (h + 1.0).dtype is ember.float16
    assert (h + ember.tensor(1.0, dtype=ember.float64)).dtype is ember.float16
    assert (h + ember.ones(2, dtype=ember.bfloat16)).dtype is ember.float32
    assert (ember.ones(2, dtype=ember.bfloat16) * 2.5).dtype is ember.bfloat16
    assert (i + ember.tensor(2.5, dtype=ember.float64)).dtype is ember.float64
    assert (ember.ones(2, dtype=ember.uint8) + ember.ones(2, dtype=ember.int8)).dtype is ember.int16


def test_numpy_operand_reflected():
    x = ember.ones(3, requires_grad=True, device="cpu")  # host arrays join CPU tensors only
    y = np.array([1.0, 2.0, 3.0], dtype=np.float32) * x
    assert isinstance(y, ember.Tensor)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1, 2, 3])


def test_matmul_shape_error_names_op_and_shapes():
    with pytest.raises(RuntimeError, match=r"matmul: shapes \(2, 3\) and \(4, 5\) are not aligned"):
        ember.ones(2, 3) @ ember.ones(4, 5)


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "pow"])
def test_broadcast_error_names_op_and_shapes(op):
    with pytest.raises(
        RuntimeError,
        match=rf"{op}: shapes \(2, 3\) and \(4,\) cannot be "
        r"broadcast together",
    ):
        getattr(ember, op)(ember.ones(2, 3), ember.ones(4))


def test_augmented_assignment_is_in_place_like_torch():
    y = ember.ones(2) * 1
    z = y
    y += 1
    y *= 3
    assert z is y
    np.testing.assert_array_equal(z.numpy(), [6.0, 6.0])
    a = ember.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        a += 1
    b = a * 2
    b += 1
    b *= 3
    b.sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), [6.0, 6.0])
    i = ember.tensor([1, 2])
    with pytest.raises(RuntimeError, match="can't be cast"):
        i /= 2


@pytest.mark.filterwarnings("error")
def test_inf_and_nan_arithmetic_is_quiet_like_torch():
    """Overflow, x / 0, 0 / 0 and inf - inf give inf / nan without NumPy's RuntimeWarnings
    (torch is silent), forward and backward, and the values are torch's."""
    a = np.array([1e30, 1.0, 0.0, np.inf, -2.0], np.float32)
    b = np.array([1e-30, 0.0, 0.0, np.inf, 0.0], np.float32)
    for fn in (
        lambda x, y: x / y,
        lambda x, y: x * x * y,
        lambda x, y: (x - y) + (y - x),
        lambda x, y: x**y,
    ):
        e = [ember.tensor(v, requires_grad=True) for v in (a, b)]
        t = [torch.tensor(v, requires_grad=True) for v in (a, b)]
        ye, yt = fn(*e), fn(*t)
        ye.sum().backward()
        yt.sum().backward()
        np.testing.assert_array_equal(ye.detach().numpy(), yt.detach().numpy())
        for ge, gt in zip(e, t):
            np.testing.assert_array_equal(ge.grad.numpy(), gt.grad.numpy())
    floor = ember.tensor(a).div(ember.tensor(b), rounding_mode="floor")
    np.testing.assert_array_equal(
        floor.numpy(), torch.tensor(a).div(torch.tensor(b), rounding_mode="floor").numpy()
    )


@pytest.mark.filterwarnings("error")
def test_pow_gradient_edges_match_torch():
    """The exponent's gradient keeps the base in the graph (its second derivative includes
    log(a)'s slope), NaN exponents in bfloat16 compare quietly, and NumPy's refusal of
    integers to negative integer powers is reported as such, not as a broadcast error."""
    a, b = np.array([2.0, 3.0], np.float64), np.array([2.0, 0.5], np.float64)
    res = []
    for lib in (ember, torch):
        ta, tb = (lib.tensor(v, requires_grad=True) for v in (a, b))
        grad = ember.autograd.grad if lib is ember else torch.autograd.grad
        (gb,) = grad((ta**tb).sum(), tb, create_graph=True)
        (gab,) = grad(gb.sum(), ta)
        res.append((gb.detach().numpy(), gab.numpy()))
    for e, t in zip(*res):
        np.testing.assert_allclose(e, t, rtol=1e-12)
    x = ember.tensor([2.0], requires_grad=True).to(ember.bfloat16)
    y = ember.tensor([float("nan")], requires_grad=True).to(ember.bfloat16)
    x.retain_grad()
    y.retain_grad()
    (x**y).sum().backward()
    assert np.isnan(x.grad.float().numpy()).all() and np.isnan(y.grad.float().numpy()).all()
    with pytest.raises(RuntimeError, match="pow: Integers to negative integer powers"):
        ember.tensor([2, 3]) ** ember.tensor([-1, 1])
