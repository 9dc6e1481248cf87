import numpy as np
import pytest

import ember
import ember.nn as nn
import ember.nn.functional as F
from ember.nn.functional.attention import attention_probs
from tests.oracle import check_op, gradcheck_op, torch
from tests.oracle import rand as _rand

TF = torch.nn.functional
SDPA = "scaled_dot_product_attention"


def rand(*shape, **kw):
    return np.asarray(_rand(*shape, **kw))


def sdpa_pair(**kw):
    """The same SDPA call in ember and in torch (constant keyword arguments)."""
    return (
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, **kw),
        lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, **kw),
    )


# ---------------------------------------------------------------- scaled_dot_product_attention
SHAPES = [  # q, k, v
    ((2, 3, 5, 4), (2, 3, 5, 4), (2, 3, 5, 4)),
    ((2, 3, 5, 4), (2, 3, 7, 4), (2, 3, 7, 6)),  # L != S, Ev != E
    ((2, 3, 7, 4), (2, 3, 5, 4), (2, 3, 5, 4)),  # L > S
    ((3, 6, 8), (3, 4, 8), (3, 4, 8)),  # 3-D
    ((5, 4), (6, 4), (6, 3)),  # 2-D
    ((2, 1, 5, 4), (3, 6, 4), (1, 6, 2)),  # broadcast batch dims
]


@pytest.mark.parametrize("shapes", SHAPES)
@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("scale", [None, 0.37])
def test_sdpa_matches_torch(shapes, is_causal, scale):
    q, k, v = (rand(*s, seed=i) for i, s in enumerate(shapes))
    e, t = sdpa_pair(is_causal=is_causal, scale=scale)
    check_op(e, [q, k, v], torch_fn=t)


@pytest.mark.parametrize("mask_shape", [(5, 7), (3, 5, 7), (2, 1, 5, 7), (1, 7)])
@pytest.mark.parametrize("kind", ["bool", "float"])
def test_sdpa_masks_broadcast(mask_shape, kind):
    q, k, v = rand(2, 3, 5, 4, seed=1), rand(2, 3, 7, 4, seed=2), rand(2, 3, 7, 6, seed=3)
    if kind == "bool":
        m = np.random.default_rng(4).random(mask_shape) > 0.3
        m[..., 0] = True
        check_op(
            lambda a, b, c: F.scaled_dot_product_attention(a, b, c, ember.tensor(m)),
            [q, k, v],
            torch_fn=lambda a, b, c: TF.scaled_dot_product_attention(a, b, c, torch.from_numpy(m)),
        )
    else:  # an additive mask that itself needs a gradient
        m = rand(*mask_shape, seed=5)
        m.reshape(-1)[::5] = -np.inf
        m[..., 0] = 0.0
        check_op(
            lambda a, b, c, d: F.scaled_dot_product_attention(a, b, c, d),
            [q, k, v, m],
            torch_fn=lambda a, b, c, d: TF.scaled_dot_product_attention(a, b, c, d),
        )


def test_sdpa_fully_masked_rows_give_zeros_like_torch():
    q, k, v = rand(2, 2, 4, 3, seed=6), rand(2, 2, 5, 3, seed=7), rand(2, 2, 5, 3, seed=8)
    m = np.random.default_rng(9).random((4, 5)) > 0.4
    m[:, 0] = True
    m[2] = False  # query 2 may attend to nothing
    out = check_op(
        lambda a, b, c: F.scaled_dot_product_attention(a, b, c, ember.tensor(m)),
        [q, k, v],
        torch_fn=lambda a, b, c: TF.scaled_dot_product_attention(a, b, c, torch.from_numpy(m)),
    )
    np.testing.assert_array_equal(out[0].detach().numpy()[:, :, 2], 0.0)
    fm = np.where(m, 0.0, -np.inf).astype(np.float32)
    check_op(
        lambda a, b, c: F.scaled_dot_product_attention(a, b, c, ember.tensor(fm)),
        [q, k, v],
        torch_fn=lambda a, b, c: TF.scaled_dot_product_attention(a, b, c, torch.from_numpy(fm)),
    )


def test_sdpa_large_scores_and_rows_far_below_the_batch_max():
    """Scores of very different size per head: the batch-wide shift underflows most rows,
    which must be recomputed around their own max; large scores must not overflow."""
    q = rand(2, 3, 6, 4, seed=10)
    q[0, 1] *= 300.0  # scores of +-1000s in one head
    q[1, 2] *= 40.0
    k, v = rand(2, 3, 6, 4, seed=11), rand(2, 3, 6, 4, seed=12)
    for causal in (False, True):
        e, t = sdpa_pair(is_causal=causal)
        out = check_op(e, [q, k, v], torch_fn=t, atol=1e-4)
        assert np.isfinite(out[0].detach().numpy()).all()
    m = rand(6, 6, seed=13) - 60.0  # a float mask that sinks every row far below the max
    check_op(
        lambda a, b, c: F.scaled_dot_product_attention(a, b, c, ember.tensor(m)),
        [q, k, v],
        torch_fn=lambda a, b, c: TF.scaled_dot_product_attention(a, b, c, torch.from_numpy(m)),
        atol=1e-4,
    )


def test_sdpa_noncontiguous_inputs():
    base = [rand(2, 5, 3, 4, seed=s) for s in (14, 15, 16)]  # (N, L, H, d): heads as views
    res = []
    for lib, fn in (
        (ember, F.scaled_dot_product_attention),
        (torch, TF.scaled_dot_product_attention),
    ):
        leaves = [lib.tensor(b, requires_grad=True) for b in base]
        q, k, v = (x.permute(0, 2, 1, 3) for x in leaves)
        out = fn(q, k, v, is_causal=True)
        out.backward(lib.tensor(rand(*out.shape, seed=17)))
        res.append([out.detach().numpy()] + [x.grad.numpy() for x in leaves])
    for a, b in zip(*res):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)


def test_sdpa_enable_gqa():
    q, k, v = rand(2, 6, 5, 4, seed=18), rand(2, 2, 7, 4, seed=19), rand(2, 2, 7, 3, seed=20)
    e, t = sdpa_pair(enable_gqa=True, is_causal=True)
    check_op(e, [q, k, v], torch_fn=t)


def test_sdpa_empty_keys_and_queries():
    for ls in ((2, 0, 4), (2, 3, 4)):
        ss = (2, 0, 4) if ls[1] else (2, 5, 4)
        e, t = sdpa_pair()
        check_op(e, [rand(*ls, seed=21), rand(*ss, seed=22), rand(*ss, seed=23)], torch_fn=t)


def test_sdpa_gradcheck():
    q, k, v = rand(2, 3, 4, seed=24), rand(2, 5, 4, seed=25), rand(2, 5, 3, seed=26)
    m = np.random.default_rng(27).random((3, 5)) > 0.3
    m[:, 0] = True
    m[1] = False
    bm = ember.tensor(m)
    gradcheck_op(lambda a, b, c: F.scaled_dot_product_attention(a, b, c), [q, k, v])
    gradcheck_op(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, bm, scale=0.7), [q, k, v])
    gradcheck_op(
        lambda a, b, c, d: F.scaled_dot_product_attention(a, b, c, d), [q, k, v, rand(3, 5)]
    )
    gradcheck_op(
        lambda a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=True),
        [rand(2, 6, 4, seed=28), k, v],
    )


def test_sdpa_double_backward():
    args = [
        ember.tensor(rand(2, 3, 4, seed=s, dtype=np.float64), requires_grad=True)
        for s in (29, 30, 31)
    ]
    m = ember.tensor(rand(3, 3, seed=32, dtype=np.float64), requires_grad=True)
    assert ember.autograd.gradgradcheck(
        lambda a, b, c, d: F.scaled_dot_product_attention(a, b, c, d), args + [m]
    )
    assert ember.autograd.gradgradcheck(
        lambda a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=True), args
    )
    bm = np.ones((3, 3), bool)
    bm[0] = False  # a dead row must not leak NaN into double backward
    assert ember.autograd.gradgradcheck(
        lambda a, b, c: F.scaled_dot_product_attention(a, b, c, ember.tensor(bm)), args
    )


@pytest.mark.parametrize("p", [0.3, 1.0])
def test_sdpa_dropout_uses_embers_rng(p):
    q, k, v = (rand(2, 3, 4, 5, seed=s, dtype=np.float64) for s in (33, 34, 35))
    ember.manual_seed(123)
    ins = [ember.tensor(x, requires_grad=True) for x in (q, k, v)]
    out = F.scaled_dot_product_attention(*ins, dropout_p=p, is_causal=True)
    g = ember.tensor(rand(2, 3, 4, 5, seed=36, dtype=np.float64))
    out.backward(g)
    # the same keep-mask drawn again from the reseeded generator, applied by ember ops
    ember.manual_seed(123)
    draw = ember.rand(2, 3, 4, 4, dtype=ember.float64).numpy()  # the inputs' device generator
    keep = ember.tensor(np.where(draw >= p, 1.0 / (1.0 - p) if p < 1 else 0.0, 0.0))
    ref_in = [ember.tensor(x, requires_grad=True) for x in (q, k, v)]
    tril = ember.tensor(np.tril(np.ones((4, 4), bool))).data  # on the inputs' device
    probs = attention_probs(ref_in[0], ref_in[1], None, tril, 1 / np.sqrt(5))
    ref = (probs * keep).matmul(ref_in[2])
    ref.backward(g)
    np.testing.assert_allclose(out.detach().numpy(), ref.detach().numpy(), atol=1e-12)
    for a, b in zip(ins, ref_in):
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), atol=1e-12)
    if p == 1.0:
        assert not out.detach().numpy().any()


def test_sdpa_errors():
    q, k = ember.zeros(2, 3, 4), ember.zeros(2, 5, 4)
    with pytest.raises(
        RuntimeError, match=f"{SDPA}: Expected query, key, and value to have the same dtype"
    ):
        F.scaled_dot_product_attention(q, k, ember.zeros(2, 5, 4, dtype=ember.float64))
    with pytest.raises(RuntimeError, match=r"query \(2, 3, 4\), key \(2, 5, 3\) and value"):
        F.scaled_dot_product_attention(q, ember.zeros(2, 5, 3), ember.zeros(2, 5, 3))
    with pytest.raises(
        RuntimeError, match="Explicit attn_mask should not be set when is_causal=True"
    ):
        F.scaled_dot_product_attention(q, k, k, attn_mask=ember.zeros(3, 5), is_causal=True)
    with pytest.raises(RuntimeError, match=r"attn_mask of shape \(4, 5\) cannot be broadcast"):
        F.scaled_dot_product_attention(q, k, k, attn_mask=ember.zeros(4, 5))
    with pytest.raises(RuntimeError, match="Expected attn_mask dtype to be bool or float"):
        F.scaled_dot_product_attention(q, k, k, attn_mask=ember.zeros(3, 5, dtype=ember.int64))
    with pytest.raises(RuntimeError, match="batch dimensions of query"):
        F.scaled_dot_product_attention(q, ember.zeros(3, 5, 4), ember.zeros(3, 5, 4))
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1"):
        F.scaled_dot_product_attention(q, k, k, dropout_p=1.5)


# -------------------------------------------------------------------- MultiheadAttention
def copy_state(em, tm):
    """torch's weights into the ember module (strict: the keys must be the same)."""
    res = em.load_state_dict(
        {k: ember.tensor(v.detach().numpy().copy()) for k, v in tm.state_dict().items()},
        strict=True,
    )
    assert not res.missing_keys and not res.unexpected_keys


def compare_modules(em, tm, inputs, call, atol=1e-5, rtol=1e-4):
    """Forward both modules on the same arrays; compare outputs, input and parameter grads."""
    res = []
    for lib, m in ((ember, em), (torch, tm)):
        ins = [
            lib.tensor(x, requires_grad=x.dtype.kind == "f") if isinstance(x, np.ndarray) else x
            for x in inputs
        ]
        outs = call(m, lib, *ins)
        outs = [o for o in (outs if isinstance(outs, tuple) else (outs,)) if o is not None]
        total = sum((o * lib.tensor(rand(*o.shape, seed=40 + i))).sum() for i, o in enumerate(outs))
        total.backward()
        grads = {n: p.grad for n, p in m.named_parameters()}
        res.append(
            (
                [o.detach().numpy() for o in outs],
                [x.grad.numpy() for x in ins if getattr(x, "requires_grad", False)],
                {n: None if g is None else g.numpy() for n, g in grads.items()},
            )
        )
    (eo, eg, ep), (to, tg, tp) = res
    assert len(eo) == len(to)
    for a, b in zip(eo, to):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=atol, rtol=rtol, err_msg="forward")
    for a, b in zip(eg, tg):
        np.testing.assert_allclose(a, b, atol=atol, rtol=rtol, err_msg="input gradient")
    assert list(ep) == list(tp)
    for name in tp:
        assert (ep[name] is None) == (tp[name] is None), name
        if tp[name] is not None:
            np.testing.assert_allclose(ep[name], tp[name], atol=atol, rtol=rtol, err_msg=name)


MHA_CONFIGS = [
    dict(),
    dict(bias=False),
    dict(kdim=5, vdim=6),
    dict(add_bias_kv=True),
    dict(add_zero_attn=True),
    dict(add_bias_kv=True, add_zero_attn=True, kdim=3),
]


@pytest.mark.parametrize("cfg", MHA_CONFIGS)
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("need_weights,average", [(True, True), (True, False), (False, True)])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_multihead_attention_matches_torch(cfg, batch_first, need_weights, average, mode):
    E, H, L, S, N = 8, 2, 4, 5, 3
    torch.manual_seed(0)
    tm = torch.nn.MultiheadAttention(E, H, batch_first=batch_first, **cfg)
    em = nn.MultiheadAttention(E, H, batch_first=batch_first, **cfg)
    assert list(em.state_dict()) == list(tm.state_dict())
    assert repr(em) == repr(tm)
    copy_state(em, tm)
    getattr(em, mode)()
    getattr(tm, mode)()

    def shape(n, f):
        return (N, n, f) if batch_first else (n, N, f)

    q = rand(*shape(L, E), seed=1)
    k = rand(*shape(S, cfg.get("kdim", E)), seed=2)
    v = rand(*shape(S, cfg.get("vdim", E)), seed=3)
    kpm = np.random.default_rng(4).random((N, S)) < 0.3
    kpm[:, 0] = False
    am = rand(L, S, seed=5)

    def call(m, lib, a, b, c):
        return m(
            a,
            b,
            c,
            key_padding_mask=lib.tensor(kpm),
            attn_mask=lib.tensor(am),
            need_weights=need_weights,
            average_attn_weights=average,
        )

    with pytest.warns(UserWarning, match="mismatched key_padding_mask and attn_mask"):
        compare_modules(em, tm, [q, k, v], call)


@pytest.mark.parametrize("mask", ["bool2d", "bool3d", "float3d", "kpm_float", "none"])
@pytest.mark.parametrize("need_weights", [True, False])
def test_multihead_self_attention_masks(mask, need_weights):
    E, H, L, N = 8, 4, 5, 2
    tm = torch.nn.MultiheadAttention(E, H, batch_first=True)
    em = nn.MultiheadAttention(E, H, batch_first=True)
    copy_state(em, tm)
    x = rand(N, L, E, seed=6)
    rng = np.random.default_rng(7)
    am = kpm = None
    if mask == "bool2d":
        am = np.triu(np.ones((L, L), bool), 1)
    elif mask == "bool3d":
        am = rng.random((N * H, L, L)) < 0.3
        am[..., 0] = False
    elif mask == "float3d":
        am = rand(N * H, L, L, seed=8)
    elif mask == "kpm_float":
        kpm = np.where(rng.random((N, L)) < 0.3, -1e4, 0.0).astype(np.float32)

    def call(m, lib, a):
        return m(
            a,
            a,
            a,
            attn_mask=None if am is None else lib.tensor(am),
            key_padding_mask=None if kpm is None else lib.tensor(kpm),
            need_weights=need_weights,
        )

    compare_modules(em, tm, [x], call)


@pytest.mark.parametrize("need_weights", [True, False])
def test_multihead_attention_unbatched_and_causal_hint(need_weights):
    E, H, L = 6, 3, 4
    tm = torch.nn.MultiheadAttention(E, H)
    em = nn.MultiheadAttention(E, H)
    copy_state(em, tm)
    causal = np.triu(np.full((L, L), -np.inf, np.float32), 1)
    x, y = rand(L, E, seed=9), rand(L + 1, E, seed=10)

    def self_call(m, lib, a):
        return m(a, a, a, attn_mask=lib.tensor(causal), is_causal=True, need_weights=need_weights)

    compare_modules(em, tm, [x], self_call)

    def cross_call(m, lib, a, b):
        return m(
            a, b, b, need_weights=need_weights, attn_mask=lib.tensor(rand(H, L, L + 1, seed=11))
        )

    compare_modules(em, tm, [x, y], cross_call)


def test_multihead_attention_init_and_errors():
    ember.manual_seed(0)
    m = nn.MultiheadAttention(16, 4)
    bound = np.sqrt(6.0 / (16 + 48))  # xavier_uniform_ on the (3E, E) in-projection
    w = m.in_proj_weight.detach().numpy()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
    assert not m.in_proj_bias.detach().numpy().any()
    assert not m.out_proj.bias.detach().numpy().any()
    assert [n for n, _ in m.named_parameters()] == [
        "in_proj_weight",
        "in_proj_bias",
        "out_proj.weight",
        "out_proj.bias",
    ]
    sep = nn.MultiheadAttention(16, 4, kdim=3, vdim=5, add_bias_kv=True)
    assert [n for n, _ in sep.named_parameters()] == [
        n
        for n, _ in torch.nn.MultiheadAttention(
            16, 4, kdim=3, vdim=5, add_bias_kv=True
        ).named_parameters()
    ]
    with pytest.raises(AssertionError, match="embed_dim must be divisible by num_heads"):
        nn.MultiheadAttention(10, 4)
    with pytest.raises(
        RuntimeError,
        match=r"MultiheadAttention: expected key with 3 features "
        r"\(last dim\), got key of shape \(4, 2, 16\)",
    ):
        sep(ember.zeros(4, 2, 16), ember.zeros(4, 2, 16), ember.zeros(4, 2, 5))
    with pytest.raises(RuntimeError, match="Need attn_mask if specifying the is_causal hint"):
        m(ember.zeros(4, 2, 16), ember.zeros(4, 2, 16), ember.zeros(4, 2, 16), is_causal=True)
    with pytest.raises(
        RuntimeError,
        match=r"The shape of the 2D attn_mask is \(3, 4\), but "
        r"should be \(4, 4\)",
    ):
        x = ember.zeros(4, 2, 16)
        m(x, x, x, attn_mask=ember.zeros(3, 4))
    with pytest.raises(AssertionError, match="query should be unbatched 2D or batched 3D"):
        x = ember.zeros(1, 4, 2, 16)
        m(x, x, x)
