"""softmax, log_softmax and embedding against PyTorch: forward, gradients, gradcheck, double
backward (Hessian-vector products), extreme inputs and errors."""

import numpy as np
import pytest

import ember
from ember.ops.nn_ops import embedding
from tests.oracle import check_op, cpu_only, gradcheck_op, rand, torch

F = torch.nn.functional
OPS = ["softmax", "log_softmax"]


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize(
    "shape,dim",
    [
        ((3, 4), 1),
        ((3, 4), 0),
        ((2, 3, 5), -1),
        ((2, 3, 5), 1),
        ((7,), 0),
        ((), 0),
        ((0, 3), 1),
        ((2, 0), -1),
    ],
)
def test_matches_torch(op, shape, dim):
    x = rand(*shape, seed=1, low=-5, high=5)
    check_op(lambda t: getattr(t, op)(dim), [x])
    check_op(
        lambda t: getattr(ember, op)(t, dim), [x], torch_fn=lambda t: getattr(torch, op)(t, dim)
    )


@pytest.mark.parametrize("op", OPS)
def test_noncontiguous_and_dtype(op):
    check_op(lambda t: getattr(t, op)(1), [rand(4, 3, seed=2)], noncontiguous=True)
    check_op(
        lambda t: getattr(t, op)(-1, dtype=ember.float64),
        [rand(2, 3, seed=3)],
        torch_fn=lambda t: getattr(t, op)(-1, dtype=torch.float64),
    )
    e = getattr(ember.tensor([1, 2, 3]), op)(0, dtype=ember.float32)
    t = getattr(torch.tensor([1, 2, 3]), op)(0, dtype=torch.float32)
    np.testing.assert_allclose(e.numpy(), t.numpy(), rtol=1e-6)
    assert e.dtype is ember.float32


@pytest.mark.parametrize("op", OPS)
def test_float32_stays_float32_and_half_is_accurate(op):
    assert getattr(ember.ones(2, 3), op)(1).dtype is ember.float32
    x = rand(3, 6, seed=4, low=-8, high=8)
    e = getattr(ember.tensor(x).half(), op)(1)
    t = getattr(torch.tensor(x).half(), op)(1)
    assert e.dtype is ember.float16
    np.testing.assert_allclose(e.float().numpy(), t.float().numpy(), atol=2e-3, rtol=2e-3)


@pytest.mark.parametrize("op", OPS)
def test_extreme_inputs_stay_finite(op):
    x = np.array(
        [[1000.0, 1001.0, 999.0], [-1000.0, -1001.0, -999.0], [1000.0, -1000.0, 0.0]], np.float32
    )
    out = check_op(lambda t: getattr(t, op)(1), [x])[0]
    assert np.all(np.isfinite(out.detach().numpy()))
    xe = ember.tensor(x, requires_grad=True)
    getattr(xe, op)(1).sum().backward()
    assert np.all(np.isfinite(xe.grad.numpy()))


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("op", OPS)
def test_masked_rows_like_attention(op):
    # -inf entries (masked attention) are exact zeros; an all -inf row is NaN quietly, as torch
    x = np.array([[0.0, -np.inf, 1.0], [-np.inf, -np.inf, -np.inf]], np.float32)
    e = getattr(ember.tensor(x), op)(1).numpy()
    t = getattr(torch.tensor(x), op)(1).numpy()
    np.testing.assert_array_equal(np.isnan(e), np.isnan(t))
    np.testing.assert_allclose(e[0], t[0], rtol=1e-6)
    check_op(lambda t: getattr(t, op)(1), [x[:1]])


@cpu_only("the row blocks are a NumPy path")
@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_last_axis_row_blocks_are_bitwise_the_composite(op, dtype, monkeypatch):
    """From _BLOCKED_MIN elements on, the last axis runs in row blocks on the CPU threads with
    the composite's own per-row operations: the same bits forward and backward as one block,
    masked (-inf) entries and an all -inf row included, and torch's values."""
    from ember.ops import nn_ops

    monkeypatch.setenv("EMBER_CPU_KERNELS", "0")  # the composite (ember/cpu's loops: tests/cpu)
    x = rand(8, 4, 64, 128, seed=7, low=-6, high=6).astype(dtype)
    x[0, 0, 0, :5] = -np.inf
    x[1, 1, 1, :] = -np.inf  # NaN row, quietly
    g = rand(*x.shape, seed=8).astype(dtype)

    def run():
        t = ember.tensor(x, requires_grad=True)
        y = getattr(t, op)(-1)
        y.backward(ember.tensor(g))
        return y.detach().numpy(), t.grad.numpy()

    blocked = run()
    monkeypatch.setattr(nn_ops, "_BLOCKED_MIN", x.size + 1)  # one composite, one thread
    whole = run()
    for a, b in zip(blocked, whole):
        np.testing.assert_array_equal(a, b)
    monkeypatch.setattr(nn_ops, "_BLOCKED_MIN", nn_ops._BLOCKED_MIN)
    finite = x.copy()
    finite[np.isinf(finite)] = 0
    check_op(lambda t: getattr(t, op)(-1), [finite], atol=1e-5)


@pytest.mark.parametrize("op", OPS)
def test_gradcheck(op):
    gradcheck_op(lambda t: getattr(t, op)(1), [rand(3, 4, seed=5)])
    gradcheck_op(lambda t: getattr(t, op)(0), [rand(3, seed=6)])


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dim", [0, -1])
def test_double_backward_hvp_matches_torch(op, dim):
    x = rand(3, 4, seed=7).astype(np.float64)
    v = rand(3, 4, seed=8).astype(np.float64)
    w = rand(3, 4, seed=9).astype(np.float64)

    def f(t, lib):
        y = getattr(t, op)(dim)
        return (y * y * lib.tensor(w)).sum()

    xe = ember.tensor(x, requires_grad=True)
    (g,) = ember.autograd.grad(f(xe, ember), [xe], create_graph=True)
    (he,) = ember.autograd.grad((g * ember.tensor(v)).sum(), [xe])
    xt = torch.tensor(x, requires_grad=True)
    (gt,) = torch.autograd.grad(f(xt, torch), [xt], create_graph=True)
    (ht,) = torch.autograd.grad((gt * torch.tensor(v)).sum(), [xt])
    np.testing.assert_allclose(g.detach().numpy(), gt.detach().numpy(), rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(he.numpy(), ht.numpy(), rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("op", OPS)
def test_gradgradcheck(op):
    x = ember.tensor(rand(2, 3, seed=10).astype(np.float64), requires_grad=True)
    assert ember.autograd.gradgradcheck(lambda t: getattr(t, op)(1), [x])


def test_implicit_dim_warns_like_torch():
    x = ember.tensor(rand(2, 3, seed=11))
    with pytest.warns(UserWarning, match="Implicit dimension choice"):
        y = ember.softmax(x)
    np.testing.assert_allclose(
        y.numpy(), F.softmax(torch.tensor(x.numpy()), dim=1).numpy(), rtol=1e-6
    )


def test_softmax_errors():
    with pytest.raises(RuntimeError, match="softmax: expected a floating point input, got int64"):
        ember.tensor([1, 2]).softmax(0)
    with pytest.raises(IndexError, match="log_softmax: Dimension out of range"):
        ember.ones(2, 3).log_softmax(2)


# ------------------------------------------------------------------------------ embedding
def _emb(torch_kwargs=None, **kw):
    def ember_fn(w, i):
        return embedding(i, w, **kw)

    def torch_fn(w, i):
        return F.embedding(i, w, **(torch_kwargs or kw))

    return ember_fn, torch_fn


@pytest.mark.parametrize("ishape", [(16, 128), (5,), (), (2, 3, 4), (0,)])
def test_embedding_matches_torch_with_repeats(ishape):
    idx = np.random.default_rng(12).integers(0, 65, size=ishape)
    fe, ft = _emb()
    check_op(fe, [rand(65, 8, seed=13), idx], torch_fn=ft)


def test_embedding_gpt_sized_backward():
    idx = np.random.default_rng(14).integers(0, 65, size=(16, 128))
    fe, ft = _emb()
    check_op(fe, [rand(65, 128, seed=15), idx], torch_fn=ft, atol=1e-4)


@pytest.mark.parametrize("padding_idx", [0, 3, -1])
def test_embedding_padding_idx_gets_zero_grad(padding_idx):
    idx = np.array([[0, 3, 3, 9], [9, 1, 0, 3]])
    fe, ft = _emb(padding_idx=padding_idx)
    check_op(fe, [rand(10, 4, seed=16), idx], torch_fn=ft)
    w = ember.tensor(rand(10, 4, seed=16), requires_grad=True)
    embedding(ember.tensor(idx), w, padding_idx=padding_idx).sum().backward()
    assert np.all(w.grad.numpy()[padding_idx] == 0)


def test_embedding_int32_indices_and_gradcheck():
    idx = np.array([[1, 1], [0, 2]], dtype=np.int32)
    fe, ft = _emb()
    check_op(fe, [rand(3, 2, seed=17), idx], torch_fn=ft)
    gradcheck_op(fe, [rand(3, 2, seed=17), idx])
    # (no plain gradcheck with padding_idx: its zero gradient is a definition, not a
    # derivative; the double backward through the padded path is checked instead)
    assert ember.autograd.gradgradcheck(
        lambda w: embedding(ember.tensor(idx), w, padding_idx=1) ** 2,
        [ember.tensor(rand(3, 2, seed=18).astype(np.float64), requires_grad=True)],
    )


def test_embedding_max_norm_renormalises_rows_like_torch():
    w0 = rand(6, 3, seed=19, low=-3, high=3)
    idx = np.array([0, 2, 2, 5])
    we = ember.tensor(w0.copy())
    out_e = embedding(ember.tensor(idx), we, max_norm=1.0)
    wt = torch.tensor(w0.copy())
    out_t = F.embedding(torch.tensor(idx), wt, max_norm=1.0)
    np.testing.assert_allclose(out_e.numpy(), out_t.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(we.numpy(), wt.numpy(), rtol=1e-5, atol=1e-6)


def test_embedding_errors():
    w = ember.zeros(65, 3)
    with pytest.raises(IndexError, match="index 70 is out of bounds for dimension 0 with size 65"):
        embedding(ember.tensor([70]), w)
    with pytest.raises(IndexError, match="index -1 is out of bounds"):
        embedding(ember.tensor([-1]), w)
    with pytest.raises(RuntimeError, match="scalar types: Long, Int; but got"):
        embedding(ember.tensor([1.0]), w)
    with pytest.raises(AssertionError, match="Padding_idx must be within num_embeddings"):
        embedding(ember.tensor([1]), w, padding_idx=70)
    with pytest.raises(RuntimeError, match="'weight' must be 2-D"):
        embedding(ember.tensor([1]), ember.zeros(3))
