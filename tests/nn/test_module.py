"""Module, Parameter and the containers, checked against torch.nn on equivalent structures.

The same model-building code runs with ``(nn, lib) = (ember.nn, ember)`` and with
``(torch.nn, torch)``, so names, order, repr and error messages can be compared directly.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

import ember
import ember.nn as enn

torch = pytest.importorskip("torch")
tnn = torch.nn


def make_block(nn, lib):
    class Block(nn.Module):
        def __init__(self, n: int):
            super().__init__()
            self.weight = nn.Parameter(lib.ones(n, 3))
            self.bias = nn.Parameter(lib.zeros(n))
            self.register_buffer("running_mean", lib.zeros(n))
            self.register_buffer("count", lib.tensor(0))
            self.register_buffer("scratch", lib.zeros(2), persistent=False)

        def extra_repr(self):
            return f"n={self.weight.shape[0]}"

        def forward(self, x):
            return x @ self.weight.T + self.bias

    return Block


def make_net(nn, lib):
    Block = make_block(nn, lib)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(lib.ones(1))
            self.embed = Block(4)
            self.layers = nn.Sequential(Block(3), nn.Identity(), Block(5))
            self.heads = nn.ModuleList([Block(2), Block(2), Block(2), Block(6)])
            self.extras = nn.ModuleDict({"b": Block(1), "a": nn.Flatten()})
            self.plist = nn.ParameterList([lib.zeros(2), nn.Parameter(lib.ones(3))])
            self.register_buffer("step", lib.tensor(0.0))
            self.shared = self.embed  # the same module under two names
            self.unflat = nn.Unflatten(1, (2, 3))
            self.empty = nn.Sequential()

        def forward(self, x):
            return self.layers[0](x)

    return Net


@pytest.fixture
def nets():
    return make_net(enn, ember)(), make_net(tnn, torch)()


def names(it):
    return [n for n, _ in it]


# ------------------------------------------------------------------------------- Parameter
def test_parameter_is_a_tensor_that_requires_grad():
    t = ember.randn(2, 3)
    p = enn.Parameter(t)
    assert isinstance(p, ember.Tensor) and isinstance(p, enn.Parameter)
    assert p.requires_grad and p.is_leaf and p.grad_fn is None
    assert p.data is t.data  # shares memory, as torch.nn.Parameter does
    assert not enn.Parameter(t, requires_grad=False).requires_grad
    assert enn.Parameter().shape == (0,)
    with pytest.raises(RuntimeError, match="floating point"):
        enn.Parameter(ember.tensor([1, 2]))
    assert enn.Parameter(ember.tensor([1, 2]), requires_grad=False).dtype == ember.int64


def test_parameter_repr_matches_torch():
    arr = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    e = repr(enn.Parameter(ember.tensor(arr, device="cpu")))  # torch's is a CPU tensor
    t = repr(tnn.Parameter(torch.tensor(arr)))
    assert e == t
    assert e.startswith("Parameter containing:\ntensor(") and e.endswith("requires_grad=True)")


def test_ops_accept_parameters_and_grads_reach_them():
    w = enn.Parameter(ember.tensor(np.arange(6, dtype=np.float32).reshape(2, 3)))
    x = ember.ones(4, 3)
    out = (x @ w.T * 2.0 + w.sum()).sum()
    assert type(out) is ember.Tensor  # ops return plain tensors
    out.backward()
    tw = tnn.Parameter(torch.arange(6, dtype=torch.float32).reshape(2, 3))
    (torch.ones(4, 3) @ tw.T * 2.0 + tw.sum()).sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), tw.grad.numpy())


def test_parameter_deepcopy_keeps_type_and_copies_data():
    p = enn.Parameter(ember.ones(2))
    p.no_decay = True  # parameters can be tagged
    p.grad = ember.ones(2)
    q = copy.deepcopy(p)
    assert type(q) is enn.Parameter and q.requires_grad and q.no_decay
    assert q.data is not p.data and q.grad is not None
    q.data[0] = 5
    assert p.data[0] == 1


# ---------------------------------------------------------------------------- registration
def test_named_members_match_torch(nets):
    e, t = nets
    assert names(e.named_parameters()) == names(t.named_parameters())
    assert names(e.named_buffers()) == names(t.named_buffers())
    assert names(e.named_modules()) == names(t.named_modules())
    assert names(e.named_children()) == names(t.named_children())
    assert names(e.named_parameters(remove_duplicate=False)) == names(
        t.named_parameters(remove_duplicate=False)
    )
    assert names(e.named_modules(remove_duplicate=False)) == names(
        t.named_modules(remove_duplicate=False)
    )
    assert names(e.named_parameters(prefix="m", recurse=False)) == ["m.scale"]
    assert names(e.named_buffers(recurse=False)) == ["step"]
    assert len(list(e.parameters())) == len(list(t.parameters()))
    assert len(list(e.buffers())) == len(list(t.buffers()))
    assert len(list(e.children())) == len(list(t.children()))
    assert len(list(e.modules())) == len(list(t.modules()))


def test_setattr_registers_and_reassigns():
    m = enn.Module()
    m.w = enn.Parameter(ember.ones(2))
    m.sub = enn.Identity()
    m.register_buffer("buf", ember.zeros(1))
    m.plain = ember.zeros(1)  # a plain tensor attribute is not registered
    assert list(m._parameters) == ["w"] and list(m._modules) == ["sub"]
    assert list(m._buffers) == ["buf"] and "plain" in m.__dict__
    m.buf = ember.ones(3)
    assert m._buffers["buf"].shape == (3,)
    m.w = None
    assert m._parameters["w"] is None and m.w is None
    assert list(m.parameters()) == []
    m.sub = enn.Parameter(ember.ones(1))  # a name can change kind
    assert "sub" not in m._modules and "sub" in m._parameters
    with pytest.raises(TypeError, match="cannot assign 'ember.Tensor' as parameter 'sub'"):
        m.sub = ember.ones(1)
    m.child = enn.Identity()
    with pytest.raises(TypeError, match="as child module 'child'"):
        m.child = 3
    with pytest.raises(TypeError, match="as buffer 'buf'"):
        m.buf = 3
    del m.child, m.buf, m.sub, m.plain, m.w
    assert not m._modules and not m._buffers and not m._parameters
    with pytest.raises(AttributeError, match="'Module' object has no attribute 'nope'"):
        _ = m.nope


@pytest.mark.parametrize("fw", ["ember", "torch"])
def test_registration_errors_match_torch(fw):
    nn, lib = (enn, ember) if fw == "ember" else (tnn, torch)

    class Early(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(lib.ones(1))

    with pytest.raises(AttributeError, match="before Module.__init__"):
        Early()
    m = nn.Module()
    m.x = 1
    with pytest.raises(KeyError, match="contain"):
        m.register_buffer("a.b", lib.zeros(1))
    with pytest.raises(KeyError, match="empty string"):
        m.register_parameter("", None)
    with pytest.raises(KeyError, match="attribute 'x' already exists"):
        m.register_buffer("x", lib.zeros(1))
    with pytest.raises(TypeError, match="buffer 'b'"):
        m.register_buffer("b", 3)
    with pytest.raises(TypeError, match="parameter 'p'"):
        m.register_parameter("p", lib.zeros(1))
    with pytest.raises(TypeError, match="is not a Module subclass"):
        m.add_module("c", 3)
    if fw == "ember":  # torch cannot even build a non-leaf Parameter to try this with
        with pytest.raises(ValueError, match="non-leaf Tensor to parameter 'q'"):
            m.register_parameter("q", _nonleaf_parameter(nn.Parameter(lib.ones(1))))


def _nonleaf_parameter(w):
    p = enn.Parameter(ember.ones(1))
    p.grad_fn = (w * 2).grad_fn  # ember has no non-leaf Parameter otherwise; fake one
    return p


def test_lookups_and_their_errors(nets):
    e, t = nets
    assert e.get_submodule("layers.2") is e.layers[2]
    assert e.get_submodule("") is e
    assert e.get_parameter("heads.3.bias") is e.heads[3].bias
    assert e.get_buffer("extras.b.count") is e.extras["b"].count
    for m in (e, t):
        with pytest.raises(AttributeError, match="Sequential has no attribute `9`"):
            m.get_submodule("layers.9")
        with pytest.raises(AttributeError, match="`weight` is not an nn.Module"):
            m.get_submodule("embed.weight")
        with pytest.raises(AttributeError, match="`running_mean` is not an nn.Parameter"):
            m.get_parameter("embed.running_mean")
        with pytest.raises(AttributeError, match="`weight` is not a buffer"):
            m.get_buffer("embed.weight")


def test_dir_lists_members(nets):
    e, _ = nets
    d = dir(e)
    for name in ("scale", "embed", "step", "forward", "state_dict", "training"):
        assert name in d
    assert not any(k[0].isdigit() for k in dir(e.layers))


def test_forward_missing_raises():
    with pytest.raises(
        NotImplementedError,
        match=r"Module \[ModuleList\] is missing the "
        r'required "forward" function',
    ):
        enn.ModuleList()(1)


# ---------------------------------------------------------------------------- modes, grads
def test_train_eval_propagate(nets):
    e, _ = nets
    assert all(m.training for m in e.modules())
    assert e.eval() is e
    assert not any(m.training for m in e.modules())
    e.layers.train()
    assert e.layers[2].training and not e.embed.training
    with pytest.raises(ValueError, match="boolean"):
        e.train(1)


def test_requires_grad_and_zero_grad(nets):
    e, _ = nets
    e.requires_grad_(False)
    assert not any(p.requires_grad for p in e.parameters())
    e.requires_grad_()
    out = e.layers[0](ember.ones(2, 3)).sum()
    out.backward()
    w = e.layers[0].weight
    assert w.grad is not None
    e.zero_grad(set_to_none=False)
    assert w.grad is not None and float(w.grad.abs().sum()) == 0.0
    e.zero_grad()
    assert w.grad is None


def test_apply_visits_children_first(nets):
    e, t = nets
    seen_e, seen_t = [], []
    assert e.apply(lambda m: seen_e.append(type(m).__name__)) is e
    t.apply(lambda m: seen_t.append(type(m).__name__))
    assert seen_e == seen_t


# ----------------------------------------------------------------------- dtypes and devices
def test_to_dtype_keeps_parameter_identity_and_int_buffers(nets):
    e, _ = nets
    w = e.embed.weight
    e.embed(ember.ones(1, 3)).sum().backward()
    assert e.to(ember.float64) is e
    assert e.embed.weight is w and w.dtype == ember.float64 and w.grad.dtype == ember.float64
    assert e.embed.running_mean.dtype == ember.float64
    assert e.embed.count.dtype == ember.int64  # integer buffers keep their dtype
    assert e.embed._buffers["scratch"].dtype == ember.float64  # non-persistent ones move too
    e.half()
    assert w.dtype == ember.float16
    e.bfloat16()
    assert w.dtype == ember.bfloat16
    e.float()
    assert w.dtype == ember.float32
    e.double()
    assert w.dtype == ember.float64
    e.to(ember.zeros(1, device="cpu"))  # to(tensor) takes its dtype and device
    assert w.dtype == ember.float32 and w.device == ember.device("cpu")
    e.to("cpu", dtype=ember.float64).cpu()
    assert w.dtype == ember.float64 and w.requires_grad
    with pytest.raises(TypeError, match="only accepts floating point"):
        e.to(ember.int64)


# ----------------------------------------------------------------------------------- hooks
def test_forward_pre_hooks_and_hooks():
    m = enn.Identity()
    calls = []
    h1 = m.register_forward_pre_hook(lambda mod, args: calls.append("pre") or (args[0] + 1))
    h2 = m.register_forward_hook(lambda mod, args, out: calls.append("post") or out * 10)
    h3 = m.register_forward_pre_hook(lambda mod, args: calls.append("first"), prepend=True)
    assert float(m(ember.tensor(1.0))) == 20.0
    assert calls == ["first", "pre", "post"]
    h1.remove()
    h2.remove()
    h3.remove()
    assert float(m(ember.tensor(1.0))) == 1.0 and len(calls) == 3


def test_hooks_with_kwargs_and_handle_context():
    class Add(enn.Module):
        def forward(self, x, y=0.0):
            return x + y

    m = Add()

    def pre(mod, args, kwargs):
        return args, {"y": kwargs.get("y", 0.0) + 100.0}

    def post(mod, args, kwargs, out):
        assert kwargs == {"y": 102.0}
        return out - 1

    with m.register_forward_pre_hook(pre, with_kwargs=True):
        with m.register_forward_hook(post, with_kwargs=True):
            assert float(m(ember.tensor(1.0), y=2.0)) == 102.0
    assert float(m(ember.tensor(1.0), y=2.0)) == 3.0
    m.register_forward_pre_hook(lambda mod, a, k: 5, with_kwargs=True)
    with pytest.raises(RuntimeError, match="forward pre-hook must return None or a tuple"):
        m(ember.tensor(1.0))


def test_always_call_hook_runs_when_forward_raises():
    class Boom(enn.Module):
        def forward(self, x):
            raise ValueError("boom")

    m = Boom()
    seen = []
    m.register_forward_hook(lambda mod, args, out: seen.append("always"), always_call=True)
    m.register_forward_hook(lambda mod, args, out: seen.append("normal"))
    with pytest.raises(ValueError, match="boom"):
        m(1)
    assert seen == ["always"]


def test_global_forward_hooks():
    from ember.nn.hooks import register_module_forward_hook, register_module_forward_pre_hook

    seen = []
    h1 = register_module_forward_pre_hook(lambda mod, args: seen.append(type(mod).__name__))
    h2 = register_module_forward_hook(lambda mod, args, out: seen.append("out"))
    try:
        enn.Sequential(enn.Identity())(ember.ones(1))
    finally:
        h1.remove()
        h2.remove()
    assert seen == ["Sequential", "Identity", "out", "out"]
    enn.Identity()(ember.ones(1))
    assert len(seen) == 4


# ------------------------------------------------------------------------------------ repr
def _torch_to_ember(text: str) -> str:
    return text.replace("torch.", "ember.")


def test_repr_matches_torch(nets):
    e, t = nets
    assert repr(e.cpu()) == _torch_to_ember(repr(t))  # torch's parameters are on the CPU
    assert "(0-2): 3 x Block(n=2)" in repr(e)  # ModuleList compresses repeats, as torch does


def test_repr_multiline_extra_repr_and_empty_containers():
    for nn in (enn, tnn):

        class Multi(nn.Module):
            def extra_repr(self):
                return "a=1\nb=2"

        class Wrap(nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = Multi()
                self.none = None

        nn.m = (Wrap(), nn.Sequential(), nn.ModuleList(), nn.ModuleDict())
    assert [repr(m) for m in enn.m] == [repr(m) for m in tnn.m]
    del enn.m, tnn.m


def test_parameter_containers_repr():
    cpu = ember.device("cpu")  # torch's parameters are on the CPU: no device in the repr
    e = enn.ParameterList([ember.zeros(2, 3, device=cpu), enn.Parameter(ember.ones(1, device=cpu))])
    t = tnn.ParameterList([torch.zeros(2, 3), tnn.Parameter(torch.ones(1))])
    assert repr(e) == _torch_to_ember(repr(t))
    d = enn.ParameterDict({"w": ember.zeros(4, device=cpu)})
    assert repr(d) == "ParameterDict(  (w): Parameter containing: [ember.float32 of size 4])"


# ------------------------------------------------------------------------------ state dict
def test_state_dict_keys_and_order_match_torch(nets):
    e, t = nets
    es, ts = e.state_dict(), t.state_dict()
    assert list(es) == list(ts)
    assert "embed.scratch" not in es and "shared.weight" in es  # non-persistent out, ties in
    assert all(type(v) is ember.Tensor and not v.requires_grad for v in es.values())
    assert es["embed.weight"].data is e.embed.weight.data  # detached, sharing memory
    kv = e.state_dict(keep_vars=True)
    assert kv["embed.weight"] is e.embed.weight
    assert list(e.layers.state_dict(prefix="x.")) == ["x." + k for k in t.layers.state_dict()]
    assert es._metadata[""] == {"version": 1} and "layers.0" in es._metadata


def test_load_state_dict_copies_in_place(nets):
    e, t = nets
    src = make_net(enn, ember)()
    for i, p in enumerate(src.parameters()):
        p.data[...] = i + 1
    src.embed.count.data[...] = 7
    w = e.embed.weight
    version = w._version
    result = e.load_state_dict(src.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert (
        repr(result)
        == repr(t.load_state_dict(t.state_dict()))
        == ("<All keys matched successfully>")
    )
    assert e.embed.weight is w and w._version > version and w.requires_grad
    for (n, a), (_, b) in zip(e.state_dict().items(), src.state_dict().items()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=n)
    assert int(e.embed.count) == 7 and e.embed.count.dtype == ember.int64
    assert w.data is not src.embed.weight.data  # copied, not shared


def test_load_state_dict_casts_and_accepts_numpy():
    e = make_block(enn, ember)(2)
    sd = {k: v.numpy().astype(np.float64) + 1 for k, v in e.state_dict().items()}
    sd["count"] = np.array(3)
    e.load_state_dict(sd)
    assert e.weight.dtype == ember.float32 and float(e.weight.data[0, 0]) == 2.0
    assert int(e.count) == 3


def test_load_state_dict_strict_errors_match_torch(nets):
    e, t = nets
    for m, lib in ((e, ember), (t, torch)):
        sd = m.state_dict()
        del sd["embed.bias"], sd["layers.2.count"]
        sd["bogus"] = lib.zeros(1)
        sd["layers.7.weight"] = lib.zeros(1)
        sd["heads.0.weight"] = lib.zeros(5, 3)
        m.errors = None
        with pytest.raises(RuntimeError) as info:
            m.load_state_dict(sd)
        m.errors = str(info.value)
        res = m.load_state_dict(
            {k: v for k, v in sd.items() if k != "heads.0.weight"}, strict=False
        )
        m.res = (res.missing_keys, res.unexpected_keys)
    assert e.errors == _torch_to_ember(t.errors)
    assert (
        "size mismatch for heads.0.weight: copying a param with shape ember.Size([5, 3]) "
        "from checkpoint, the shape in current model is ember.Size([2, 3])." in e.errors
    )
    assert e.res == t.res
    assert e.res[0] == ["embed.bias", "layers.2.count", "heads.0.weight"]
    assert e.res[1] == ["bogus", "layers.7.weight"]


def test_load_state_dict_rejects_non_tensors_and_non_mappings():
    e = make_block(enn, ember)(2)
    sd = e.state_dict()
    sd["weight"] = [1.0]
    with pytest.raises(RuntimeError, match='While copying the parameter named "weight"'):
        e.load_state_dict(sd)
    with pytest.raises(TypeError, match="Expected state_dict to be dict-like"):
        e.load_state_dict([1, 2])


def test_load_state_dict_assign_replaces_tensors():
    e = make_block(enn, ember)(2)
    e.bias.requires_grad_(False)
    new = {
        "weight": ember.full((2, 3), 3.0, dtype=ember.float64),
        "bias": ember.ones(2),
        "running_mean": ember.ones(2),
        "count": ember.tensor(4),
    }
    old_w = e.weight
    e.load_state_dict(new, assign=True)
    assert e.weight is not old_w and isinstance(e.weight, enn.Parameter)
    assert e.weight.data is new["weight"].data and e.weight.dtype == ember.float64
    assert e.weight.requires_grad and not e.bias.requires_grad
    assert e.running_mean is new["running_mean"] and e.count is new["count"]
    assert "weight" in e._parameters and "running_mean" in e._buffers


def test_zero_dim_buffer_from_shape_one_and_none_entries():
    m = enn.Module()
    m.register_buffer("n", ember.tensor(0))
    m.register_parameter("unused", None)
    m.load_state_dict({"n": ember.tensor([5])})
    assert m.n.shape == () and int(m.n) == 5
    assert list(m.state_dict()) == ["n"]


def test_state_dict_hooks_and_extra_state():
    class WithExtra(enn.Module):
        def __init__(self):
            super().__init__()
            self.w = enn.Parameter(ember.zeros(1))
            self.note = "a"

        def get_extra_state(self):
            return {"note": self.note}

        def set_extra_state(self, state):
            self.note = state["note"]

    m = WithExtra()
    assert list(m.state_dict()) == ["w", "_extra_state"]
    m2 = WithExtra()
    m2.note = "b"
    m.load_state_dict(m2.state_dict())
    assert m.note == "b"
    with pytest.raises(RuntimeError, match='Missing key\\(s\\) in state_dict: "_extra_state"'):
        m.load_state_dict({"w": ember.zeros(1)})

    def drop_extra(mod, sd, prefix, meta):
        del sd[prefix + "_extra_state"]

    handle = m.register_state_dict_post_hook(drop_extra)
    assert list(m.state_dict()) == ["w"]
    handle.remove()
    m.register_state_dict_post_hook(lambda mod, sd, prefix, meta: sd)
    with pytest.raises(RuntimeError, match="post-hook must return None"):
        m.state_dict()

    def rename(mod, sd, prefix, meta, strict, missing, unexpected, errors):
        if prefix + "old_w" in sd:
            sd[prefix + "w"] = sd.pop(prefix + "old_w")

    m.register_load_state_dict_pre_hook(rename)
    seen = []
    m.register_load_state_dict_post_hook(lambda mod, keys: seen.append(list(keys.missing_keys)))
    m.load_state_dict({"old_w": ember.ones(1)}, strict=False)
    assert float(m.w) == 1.0 and seen == [["_extra_state"]]


def test_module_deepcopy_is_independent(nets):
    e, _ = nets
    c = copy.deepcopy(e)
    assert c.embed is c.shared and c.embed is not e.embed
    assert isinstance(c.embed.weight, enn.Parameter)
    c.embed.weight.data[...] = 9
    assert float(e.embed.weight.data[0, 0]) == 1.0
    assert list(c.state_dict()) == list(e.state_dict())
