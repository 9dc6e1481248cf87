"""Custom Functions (single and multi output, saved tensors, non-differentiable outputs,
once_differentiable), gradcheck catching a wrong backward, and detect_anomaly."""

import numpy as np
import pytest

import ember
from ember.autograd import Function, gradcheck, once_differentiable

torch = pytest.importorskip("torch")


class Cube(Function):
    """x ** 3 with a backward written in Tensor ops (so it is twice differentiable)."""

    def forward(self, x):
        self.save_for_backward(x)
        return x * x * x

    def backward(self, g):
        (x,) = self.saved_tensors
        return g * 3 * x * x


class WrongCube(Cube):
    def backward(self, g):
        (x,) = self.saved_tensors
        return g * 2 * x * x  # deliberately wrong


class ScaledSub(Function):
    """a - k * b, with a non-tensor argument passed through forward."""

    def forward(self, a, b, k):
        self.k = k
        return a - k * b

    def backward(self, g):
        return g, -self.k * g, None


class SplitSign(Function):
    """Two outputs: the positive and the negative part."""

    def forward(self, x):
        self.save_for_backward(x)
        return np.maximum(x, 0), np.minimum(x, 0)

    def backward(self, g_pos, g_neg):
        (x,) = self.saved_tensors
        pos = ember.tensor((x.data > 0).astype(x.data.dtype))
        self.got = (g_pos.tolist(), g_neg.tolist())
        return g_pos * pos + g_neg * (1 - pos)


def f64(*shape, seed=0):
    return ember.tensor(np.random.default_rng(seed).standard_normal(shape), requires_grad=True)


def test_custom_function_forward_backward():
    x = ember.tensor([1.0, -2.0, 0.5], requires_grad=True)
    y = Cube().apply(x)
    assert y.grad_fn is not None and y.grad_fn.name() == "CubeBackward"
    assert repr(y).endswith("grad_fn=<CubeBackward>)")
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 3 * x.detach().numpy() ** 2)


def test_custom_function_gets_raw_arrays_and_needs_input_grad():
    seen = {}

    class Probe(Function):
        def forward(self, a, b):
            seen["types"] = (type(a), type(b))
            seen["needs"] = self.needs_input_grad
            return a + b

        def backward(self, g):
            return g, g

    a = ember.ones(2, requires_grad=True)
    Probe().apply(a, ember.ones(2))
    assert seen["types"] == (np.ndarray, np.ndarray) and seen["needs"] == (True, False)
    with ember.no_grad():
        out = Probe().apply(a, a)
    assert seen["needs"] == (False, False) and not out.requires_grad


def test_non_tensor_arguments_and_none_gradients():
    a, b = f64(3), f64(3, seed=1)
    y = ScaledSub().apply(a, b, 2.5)
    y.sum().backward()
    assert a.grad.tolist() == [1.0] * 3 and b.grad.tolist() == [-2.5] * 3
    assert gradcheck(lambda p, q: ScaledSub().apply(p, q, 0.5), (f64(2, 2), f64(2, 2, seed=3)))


def test_gradcheck_passes_a_correct_function_and_catches_a_wrong_one():
    assert gradcheck(lambda t: Cube().apply(t), (f64(2, 3),))
    with pytest.raises(RuntimeError, match="Jacobian mismatch"):
        gradcheck(lambda t: WrongCube().apply(t), (f64(2, 3),))
    assert gradcheck(lambda t: WrongCube().apply(t), (f64(2, 3),), raise_exception=False) is False


def test_gradcheck_catches_a_wrong_gradient_for_one_of_two_inputs():
    class BadMul(Function):
        def forward(self, a, b):
            self.save_for_backward(a, b)
            return a * b

        def backward(self, g):
            a, b = self.saved_tensors
            return g * b, g * b  # second should be g * a

    with pytest.raises(RuntimeError, match="input 1"):
        gradcheck(lambda p, q: BadMul().apply(p, q), (f64(3), f64(3, seed=1)))


def test_gradcheck_needs_float64():
    x = ember.ones(2, requires_grad=True)
    with pytest.raises(ValueError, match="float64"):
        gradcheck(lambda t: t * 2, (x,))


def test_gradgradcheck_uses_the_tensor_op_backward():
    assert ember.autograd.gradgradcheck(lambda t: Cube().apply(t), (f64(3),))

    class WrongSecond(Function):
        def forward(self, x):
            self.save_for_backward(x)
            return x * x * x

        def backward(self, g):
            (x,) = self.saved_tensors
            return g * 3 * x.detach() * x.detach()  # right value, no second derivative

    with pytest.raises(RuntimeError, match="Jacobian mismatch"):
        ember.autograd.gradgradcheck(lambda t: WrongSecond().apply(t), (f64(3),))


def test_multi_output_with_one_output_used_gets_zeros_for_the_other():
    x = ember.tensor([1.0, -2.0, 3.0], requires_grad=True)
    fn = SplitSign()
    pos, neg = fn.apply(x)
    assert pos.grad_fn is neg.grad_fn and pos.requires_grad and neg.requires_grad
    (neg * 2).sum().backward()
    assert fn.got == ([0.0, 0.0, 0.0], [2.0, 2.0, 2.0])
    assert x.grad.tolist() == [0.0, 2.0, 0.0]


def test_multi_output_both_used_matches_torch_reference():
    x = ember.tensor([1.0, -2.0, 3.0], requires_grad=True)
    pos, neg = SplitSign().apply(x)
    (pos * 3 + neg * neg).sum().backward()
    t = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    (t.clamp(min=0) * 3 + t.clamp(max=0) ** 2).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy())


def test_mark_non_differentiable():
    class ArgSort(Function):
        def forward(self, x):
            idx = np.argsort(x)
            out = np.sort(x)
            self.mark_non_differentiable(idx)
            self.idx = idx
            return out, idx

        def backward(self, g, g_idx):
            assert g_idx is None or not g_idx.data.any()
            inv = np.empty_like(self.idx)
            inv[self.idx] = np.arange(self.idx.size)
            return ember.tensor(g.data[inv])

    x = ember.tensor([3.0, 1.0, 2.0], requires_grad=True)
    vals, idx = ArgSort().apply(x)
    assert vals.requires_grad and not idx.requires_grad and idx.grad_fn is None
    (vals * ember.tensor([1.0, 10.0, 100.0])).sum().backward()
    assert x.grad.tolist() == [100.0, 1.0, 10.0]


def test_wrong_number_of_gradients_is_an_error():
    class TooMany(Function):
        def forward(self, x):
            return x * 1

        def backward(self, g):
            return g, g

    x = ember.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"TooManyBackward.*incorrect number of gradients"):
        TooMany().apply(x).sum().backward()


def test_default_backward_is_not_differentiable():
    class NoGrad(Function):
        def forward(self, x):
            return x * 1

    x = ember.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="not differentiable"):
        NoGrad().apply(x).sum().backward()


def test_once_differentiable():
    class Square(Function):
        def forward(self, x):
            self.save_for_backward(x)
            return x * x

        @once_differentiable
        def backward(self, g):
            (x,) = self.saved_tensors
            return ember.tensor(2 * x.data * g.data)

    x = ember.tensor([1.0, 2.0], requires_grad=True)
    Square().apply(x).sum().backward()
    assert x.grad.tolist() == [2.0, 4.0]
    y = Square().apply(x)
    (g,) = ember.autograd.grad((y * y).sum(), x, create_graph=True)  # fine, as in torch
    assert g.tolist() == [4.0, 32.0] and g.requires_grad
    with pytest.raises(RuntimeError, match="SquareBackward.*not differentiable"):
        g.sum().backward()  # the double backward itself is what fails


def test_saved_tensors_are_freed_after_backward():
    x = ember.ones(2, requires_grad=True)
    y = Cube().apply(x)
    y.sum().backward()
    with pytest.raises(RuntimeError, match="second time"):
        y.grad_fn.saved_tensors


# ---------------------------------------------------------------------- anomaly mode
class NanBackward(Function):
    def forward(self, x):
        return x * 2

    def backward(self, g):
        return g * float("nan")


def test_detect_anomaly_names_the_op_and_where_it_was_created():
    x = ember.ones(3, requires_grad=True)
    with ember.autograd.detect_anomaly():
        y = NanBackward().apply(x)  # the line the error must point at
        z = (y * 3).sum()
        with pytest.raises(RuntimeError) as info:
            z.backward()
    msg = str(info.value)
    assert "Function 'NanBackwardBackward' returned nan values in its 0th output" in msg
    assert "test_function.py" in msg and "NanBackward().apply(x)" in msg
    assert x.grad is None


def test_detect_anomaly_on_inf_from_a_builtin_op():
    """d/dx sqrt(x) at 0 is inf: the error names the power op that made it."""
    x = ember.tensor([0.0, 1.0], requires_grad=True)
    with ember.autograd.detect_anomaly():
        y = x**0.5
        with np.errstate(divide="ignore"), pytest.raises(RuntimeError, match=r"PowBackward.*inf"):
            y.sum().backward()


def test_without_anomaly_mode_nan_passes_silently():
    x = ember.ones(2, requires_grad=True)
    assert not ember.autograd.is_anomaly_enabled()
    NanBackward().apply(x).sum().backward()
    assert np.isnan(x.grad.numpy()).all()


def test_detect_anomaly_as_decorator_and_switch():
    @ember.autograd.detect_anomaly()
    def run():
        assert ember.autograd.is_anomaly_enabled()
        x = ember.ones(2, requires_grad=True)
        NanBackward().apply(x).sum().backward()

    with pytest.raises(RuntimeError, match="nan"):
        run()
    assert not ember.autograd.is_anomaly_enabled()
    ember.autograd.set_detect_anomaly(True)
    try:
        assert ember.autograd.is_anomaly_enabled()
    finally:
        ember.autograd.set_detect_anomaly(False)
