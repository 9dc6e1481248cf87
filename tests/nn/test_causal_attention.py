"""The row-blocked causal path of scaled_dot_product_attention (_causal_attention): several
query blocks, L != S, split batches on one and two threads, underflowing rows, half inputs."""

import numpy as np
import pytest

import ember
import ember.nn.functional as F
from ember.nn.functional import _causal_attention as C
from ember.ops import parallel
from tests.oracle import check_op, cpu_only, gradcheck_op, torch
from tests.oracle import rand as _rand

TF = torch.nn.functional
BLOCKED = "the row-blocked causal path runs on NumPy arrays only"


def rand(*shape, **kw):
    return np.asarray(_rand(*shape, **kw))


def causal(**kw):
    return (
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True, **kw),
        lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, is_causal=True, **kw),
    )


SHAPES = [  # q, k, v: every case has more than one query block
    ((2, 3, 100, 8), (2, 3, 100, 8), (2, 3, 100, 6)),
    ((3, 2, 70, 8), (3, 2, 45, 8), (3, 2, 45, 8)),  # L > S: late rows see every key
    ((5, 40, 8), (5, 90, 8), (5, 90, 4)),  # L < S
    ((70, 4), (70, 4), (70, 5)),  # 2-D: no batch to split
]


def test_spans_cover_the_rows_and_only_the_allowed_keys():
    for tgt, src in ((128, 128), (100, 45), (40, 90), (7, 7), (257, 300)):
        sp = C.spans(tgt, src)
        assert sp[0][0] == 0 and sp[-1][1] == tgt
        assert all(a[1] == b[0] for a, b in zip(sp, sp[1:]))
        assert all(keys == min(hi, src) for _, hi, keys in sp)
    assert len(C.spans(128, 128)) == 4


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shapes", SHAPES)
def test_blocked_causal_matches_torch(shapes, threads):
    q, k, v = (rand(*s, seed=i) for i, s in enumerate(shapes))
    before = parallel.get_num_threads()
    parallel.set_num_threads(threads)
    try:
        check_op(*causal()[:1], [q, k, v], torch_fn=causal()[1], atol=1e-5, rtol=1e-4)
        check_op(
            *causal(scale=0.3)[:1], [q, k, v], torch_fn=causal(scale=0.3)[1], atol=1e-5, rtol=1e-4
        )
    finally:
        parallel.set_num_threads(before)


@cpu_only(BLOCKED)
def test_blocked_causal_is_used_and_saves_blocks():
    q = ember.tensor(rand(2, 2, 100, 8, seed=1), requires_grad=True)
    out = F.scaled_dot_product_attention(q, q, q, is_causal=True)
    node = out.grad_fn
    assert node.causal and len(node.saved_tensors) == 6 + len(C.spans(100, 100))


def test_blocked_causal_noncontiguous_heads():
    base = [rand(2, 96, 3, 8, seed=s) for s in (4, 5, 6)]  # (N, L, H, d): heads as views
    res = []
    for lib, fn in (
        (ember, F.scaled_dot_product_attention),
        (torch, TF.scaled_dot_product_attention),
    ):
        leaves = [lib.tensor(b, requires_grad=True) for b in base]
        q, k, v = (x.permute(0, 2, 1, 3) for x in leaves)
        out = fn(q, k, v, is_causal=True)
        out.backward(lib.tensor(rand(*out.shape, seed=7)))
        res.append([out.detach().numpy()] + [x.grad.numpy() for x in leaves])
    for a, b in zip(*res):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)


@cpu_only(BLOCKED)
def test_blocked_causal_output_keeps_the_heads_memory_order():
    """Heads made by view(b, t, h, d).transpose(1, 2) give an output in that memory order (as
    torch's CPU flash attention), so transpose(1, 2).contiguous() copies nothing; contiguous
    heads give a contiguous output. Values and gradients still match torch."""
    x = rand(2, 100, 3 * 16, seed=8)
    res = []
    for lib, fn in (
        (ember, F.scaled_dot_product_attention),
        (torch, TF.scaled_dot_product_attention),
    ):
        leaf = lib.tensor(x, requires_grad=True)
        q, k, v = (z.view(2, 100, 2, 8).transpose(1, 2) for z in leaf.split(16, dim=2))
        out = fn(q, k, v, is_causal=True)
        y = out.transpose(1, 2)
        if lib is ember:
            assert not out.is_contiguous() and y.is_contiguous()
            assert y.contiguous() is y
        y.contiguous().view(2, 100, 16).backward(lib.tensor(rand(2, 100, 16, seed=9)))
        res.append([out.detach().numpy(), leaf.grad.numpy()])
    for a, b in zip(*res):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)
    q = ember.tensor(rand(2, 2, 100, 8, seed=1))
    assert F.scaled_dot_product_attention(q, q, q, is_causal=True).is_contiguous()


def test_blocked_causal_underflowing_rows_are_rescued(monkeypatch):
    """Scores spanning far more than float32's exp range within one block: the rows that
    underflow under the block's shift are redone, and the result agrees with the full
    (bool-mask) path and with a float64 torch reference (float32 torch is further off)."""
    from ember.nn.functional.attention import ScaledDotProductAttention as Sdpa

    q, k, v = (rand(2, 2, 80, 8, seed=s) * m for s, m in ((8, 30), (9, 30), (10, 1)))
    g = rand(2, 2, 80, 8, seed=11)
    calls = []
    rescue = Sdpa._rescue
    monkeypatch.setattr(Sdpa, "_rescue", staticmethod(lambda *a: calls.append(1) or rescue(*a)))
    mask = ember.tensor(np.tril(np.ones((80, 80), bool)))
    results = []
    for kw in ({"is_causal": True}, {"attn_mask": mask}):
        ts = [ember.tensor(a, requires_grad=True) for a in (q, k, v)]
        out = F.scaled_dot_product_attention(*ts, **kw)
        out.backward(ember.tensor(g))
        results.append([out.detach().numpy()] + [t.grad.numpy() for t in ts])
    assert calls
    ref = [torch.from_numpy(a.astype(np.float64)).requires_grad_() for a in (q, k, v)]
    out = TF.scaled_dot_product_attention(*ref, is_causal=True)
    out.backward(torch.from_numpy(g.astype(np.float64)))
    ref = [out.detach().numpy()] + [t.grad.numpy() for t in ref]
    for a, b, r in zip(*results, ref):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(a, r, atol=1e-2, rtol=1e-3)


def test_blocked_causal_gradcheck_and_double_backward():
    q, k, v = (rand(2, 70, 3, seed=s, dtype=np.float64) for s in (11, 12, 13))
    gradcheck_op(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=True), [q, k, v])
    args = [
        ember.tensor(rand(1, 66, 2, seed=s, dtype=np.float64), requires_grad=True)
        for s in (14, 15, 16)
    ]
    assert ember.autograd.gradgradcheck(
        lambda a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=True), args
    )


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_blocked_causal_half_inputs(dtype):
    x = rand(2, 2, 64, 8, seed=17)
    outs = []
    for lib, fn in (
        (ember, F.scaled_dot_product_attention),
        (torch, TF.scaled_dot_product_attention),
    ):
        t = lib.tensor(x).to(getattr(lib, dtype))
        out = fn(t, t, t, is_causal=True)
        assert out.dtype == getattr(lib, dtype)
        outs.append(out.to(lib.float32).numpy())
    np.testing.assert_allclose(outs[0], outs[1], atol=2e-2, rtol=2e-2)
