"""Ember's device paths on the fake CuPy (tests/cuda/fake_cupy.py), in the default CPU suite.

Every result computed with ``device="cuda"`` must equal the CPU result: ops forward and
backward, a small Linear/Conv/LayerNorm/attention model, an AdamW step and a checkpoint round
trip. The fake refuses host arrays in device operations as CuPy does, so an ``np.`` call on
device data fails here as it would on a GPU. (The whole op and nn suites also run this way:
``EMBER_TEST_DEVICE=fake-cuda pytest tests/ops tests/nn``, see tests/oracle.py.)
"""

from __future__ import annotations

import numpy as np
import pytest

import ember
import ember.nn as nn
import ember.nn.functional as F
from ember.tensor.random import cuda_generator
from tests.cuda import fake_cupy


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _host(t):
    return t.detach().cpu().numpy()


CREATORS = [
    lambda d: ember.zeros(2, 3, device=d),
    lambda d: ember.ones((2, 3), device=d),
    lambda d: ember.full((2,), 4.5, device=d),
    lambda d: ember.empty(3, device=d).fill_(1.0),
    lambda d: ember.zeros_like(ember.ones(2, device=d)),
    lambda d: ember.ones_like(ember.ones(2, device=d)),
    lambda d: ember.full_like(ember.ones(2, device=d), 7),
    lambda d: ember.tensor([[1.0, 2.0]], device=d),
    lambda d: ember.as_tensor([1, 2, 3], device=d),
    lambda d: ember.arange(5, device=d),
    lambda d: ember.linspace(0, 1, 5, device=d),
    lambda d: ember.logspace(0, 1, 3, device=d),
    lambda d: ember.eye(3, device=d),
]


@pytest.mark.parametrize("make", CREATORS)
def test_creation_with_device(fake_cuda, make):
    t = make("cuda")
    assert isinstance(t.data, fake_cuda.ndarray) and t.device == "cuda:0" and t.is_cuda
    np.testing.assert_array_equal(_host(t), make("cpu").numpy())


def test_to_cuda_cpu_round_trip_and_gradient(fake_cuda):
    x = ember.tensor(_rand(3, 4), requires_grad=True)
    y = x.to("cuda")
    assert y.device == "cuda:0" and x.cuda().device == "cuda:0"
    assert y.to("cuda") is y and y.cpu().device == "cpu"
    (y * y).sum().backward()
    assert x.grad.device == "cpu"
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.detach().numpy(), rtol=1e-6)
    z = ember.tensor([1.0]).to(device=ember.device("cuda", 0), dtype=ember.float64)
    assert z.device == "cuda:0" and z.dtype == ember.float64
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(y.data)


@pytest.mark.parametrize(
    "op",
    [
        lambda a, b: a + b,
        lambda a, b: a @ b.T,
        lambda a, b: ember.cat([a, b]),
        lambda a, b: ember.where(a > 0, a, b),
        lambda a, b: F.linear(a, b),
    ],
)
def test_mixing_devices_is_a_clear_error(fake_cuda, op):
    a = ember.ones(2, 3)
    b = ember.ones(2, 3, device="cuda")
    with pytest.raises(RuntimeError, match="expected all tensors on the same device, got"):
        op(a, b)
    with pytest.raises(RuntimeError, match="cuda:0 and cpu|cpu and cuda:0"):
        op(b, a)


def test_attention_mask_on_another_device_is_a_clear_error(fake_cuda):
    q = ember.ones(1, 2, 3, 4, device="cuda")
    cpu_mask = ember.ones(3, 3, dtype=ember.bool)
    for mask in (cpu_mask, cpu_mask.float()):
        with pytest.raises(RuntimeError, match="same device, got cuda:0 and cpu"):
            F.scaled_dot_product_attention(q, q, q, attn_mask=mask)
    # a NumPy mask is not a tensor on any device: it goes to the query's
    host = np.tril(np.ones((3, 3), bool))
    out = F.scaled_dot_product_attention(q, q, q, attn_mask=host)
    assert out.device == "cuda:0"
    # a CPU scalar mask joins the query's device, as CPU scalars do everywhere
    plain = F.scaled_dot_product_attention(q, q, q)
    for scalar in (ember.tensor(True), ember.tensor(0.0)):
        out = F.scaled_dot_product_attention(q, q, q, attn_mask=scalar)
        np.testing.assert_allclose(out.cpu().numpy(), plain.cpu().numpy(), rtol=1e-6)


def test_cpu_scalar_tensor_joins_a_device_tensor(fake_cuda):
    s = ember.tensor(2.0, requires_grad=True)
    x = ember.ones(3, device="cuda", requires_grad=True)
    y = (x * s).sum()
    y.backward()
    assert y.device == "cuda:0" and s.grad.device == "cpu"
    assert s.grad.item() == 3.0 and _host(x.grad).tolist() == [2.0, 2.0, 2.0]


OPS = {
    "arith": lambda a, b: (a * 2 + b / 3 - a * b) ** 2,
    "unary": lambda a, b: a.exp() + b.tanh() + a.abs().sqrt() + b.sigmoid() + a.sin(),
    "reduce": lambda a, b: a.sum(0) + b.mean(1, keepdim=True).squeeze(1)[:1] + a.amax(),
    "var_norm": lambda a, b: a.var(1) + b.norm(dim=0)[:3] + a.logsumexp(1),
    "matmul": lambda a, b: a @ b.transpose(0, 1),
    "shape": lambda a, b: ember.stack([a.reshape(-1), b.flatten()]).permute(1, 0).flip(0),
    "index": lambda a, b: a[ember.tensor([0, 2, 2], device=a.device)] + b[1:, ::2].sum(),
    "gather": lambda a, b: a.gather(1, ember.tensor([[0], [1], [2]], device=a.device)) * b,
    "masked": lambda a, b: a.masked_fill(b > 0, 0.5) + ember.where(a > b, a, b),
    "softmax": lambda a, b: F.softmax(a, -1) * F.log_softmax(b, 0),
    "activations": lambda a, b: F.gelu(a) + F.silu(b) + F.relu(a) + F.leaky_relu(b),
    "gelu_tanh": lambda a, b: F.gelu(a, approximate="tanh") * b,
    "cumsum_min": lambda a, b: a.cumsum(1) + b.amin(1, keepdim=True) + b.prod(0),
    "pad_cat": lambda a, b: F.pad(a, (1, 1)).sum(1) + ember.cat([a, b], 1).max(1).values,
    "clamp": lambda a, b: a.clamp(-0.5, 0.5) + b.clamp(min=0.0),
    "embedding": lambda a, b: F.embedding(ember.tensor([[0, 2], [2, 1]], device=a.device), a),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_op_forward_and_backward_match_cpu(fake_cuda, name):
    fn = OPS[name]
    grads = {}
    for dev in ("cpu", "cuda"):
        a = ember.tensor(_rand(3, 4, seed=1), device=dev, requires_grad=True)
        b = ember.tensor(_rand(3, 4, seed=2), device=dev, requires_grad=True)
        out = fn(a, b)
        assert out.device.type == dev
        out.backward(ember.ones_like(out))
        grads[dev] = [_host(out)] + [None if t.grad is None else _host(t.grad) for t in (a, b)]
    for c, d in zip(grads["cpu"], grads["cuda"]):
        assert (c is None) == (d is None)
        if c is not None:
            np.testing.assert_allclose(d, c, rtol=1e-5, atol=1e-6)


class TinyNet(nn.Module):
    """Linear + Conv + LayerNorm + attention + dropout: the layers the workloads use."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.proj = nn.Linear(16, 8)
        self.norm = nn.LayerNorm(8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.drop = nn.Dropout(0.25)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        h = self.pool(F.relu(self.conv(x)))  # (B, 4, 2, 2)
        h = self.proj(h.reshape(h.shape[0], 1, 16).expand(-1, 3, -1))  # (B, 3, 8)
        h = self.norm(h)
        a, _ = self.attn(h, h, h, need_weights=False, is_causal=False)
        return self.head(self.drop(F.gelu(h + a))).mean(1)


def _train_step(dev: str, steps: int = 2):
    ember.manual_seed(3)
    model = TinyNet()
    model.to(dev)
    # eps above float32 noise: Adam divides by sqrt(v), so the attention's ~0 key-bias gradients
    # would turn rounding-level differences into visible ones
    opt = ember.optim.AdamW(model.parameters(), lr=1e-2, eps=1e-3)
    x = ember.tensor(_rand(4, 2, 4, 4, seed=5), device=dev)
    y = ember.tensor([0, 3, 1, 4], device=dev)
    model.eval()  # dropout off: the CPU and device generators draw different streams
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        ember.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return model, opt, loss


def test_training_step_on_device_matches_cpu(fake_cuda):
    cpu_model, _, cpu_loss = _train_step("cpu")
    dev_model, opt, dev_loss = _train_step("cuda")
    assert dev_loss.device == "cuda:0"
    np.testing.assert_allclose(dev_loss.item(), cpu_loss.item(), rtol=1e-5)
    for (name, p), (_, q) in zip(cpu_model.named_parameters(), dev_model.named_parameters()):
        assert q.device == "cuda:0", name
        np.testing.assert_allclose(_host(q), p.detach().numpy(), rtol=1e-4, atol=1e-6)
    state = opt.state_dict()["state"]
    moments = [v for s in state.values() for v in s.values() if isinstance(v, ember.Tensor)]
    assert moments and all(v.device == "cuda:0" for v in moments if v.ndim)


def test_dropout_on_device_draws_from_the_device_generator(fake_cuda):
    x = ember.ones(1000, device="cuda")
    cpu_state = ember.get_rng_state()
    y = F.dropout(x, 0.5, training=True)
    assert y.device == "cuda:0" and 400 < int((y == 0).sum().item()) < 600
    assert ember.get_rng_state().tolist() == cpu_state.tolist()  # the CPU stream is untouched


def test_checkpoint_saved_on_device_loads_on_cpu_and_back(fake_cuda, tmp_path):
    model, opt, _ = _train_step("cuda", steps=1)
    path = tmp_path / "ckpt.safetensors"
    ember.save({"model": model.state_dict(), "optim": opt.state_dict()}, path)
    on_cpu = ember.load(path, map_location="cpu")
    for k, v in model.state_dict().items():
        assert on_cpu["model"][k].device == "cpu"
        np.testing.assert_array_equal(on_cpu["model"][k].numpy(), _host(v))
    fresh = TinyNet()
    fresh.load_state_dict(on_cpu["model"])
    fresh.to("cuda")
    for (k, a), b in zip(fresh.state_dict().items(), model.state_dict().values()):
        assert a.device == "cuda:0", k
        np.testing.assert_array_equal(_host(a), _host(b))
    back = ember.load(path, map_location="cuda")
    assert all(v.device == "cuda:0" for v in back["model"].values())


def test_device_rng_is_seeded_and_resumable(fake_cuda):
    ember.manual_seed(7)
    a = ember.randn(5, device="cuda")

    gen = cuda_generator("cuda")
    state = gen.get_state()
    assert state.dtype == ember.uint8 and state.numel() == 16
    b = ember.rand(4, device="cuda")
    ember.manual_seed(7)
    np.testing.assert_array_equal(_host(ember.randn(5, device="cuda")), _host(a))
    gen.set_state(state)
    np.testing.assert_array_equal(_host(ember.rand(4, device="cuda")), _host(b))
    assert isinstance(b.data, fake_cuda.ndarray)
    perm = ember.randperm(10, device="cuda")
    assert sorted(_host(perm).tolist()) == list(range(10))
    ints = ember.randint(3, 9, (200,), device="cuda")
    assert _host(ints).min() >= 3 and _host(ints).max() == 8
    g2 = ember.Generator("cuda").manual_seed(1)
    g3 = ember.Generator(device="cuda:0").manual_seed(1)
    np.testing.assert_array_equal(
        _host(ember.rand(3, device="cuda", generator=g2)),
        _host(ember.rand(3, device="cuda", generator=g3)),
    )
    with pytest.raises(RuntimeError, match="16 bytes"):
        gen.set_state(ember.zeros(3, dtype=ember.uint8))


def test_fake_refuses_host_arrays_like_cupy(fake_cuda):
    cp = fake_cuda
    d = cp.asarray(np.ones(3, np.float32))
    with pytest.raises(TypeError, match="Unsupported type"):
        d + np.ones(3, np.float32)
    with pytest.raises(TypeError, match="Unsupported type"):
        d * np.asarray(2.0, np.float32)  # a 0-d host array too (CuPy's CScalar refuses it)
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.array(d)
    assert isinstance(d * np.float32(2), cp.ndarray) and isinstance(d.sum(), cp.ndarray)
    assert isinstance(np.exp(d), cp.ndarray)  # NumPy functions dispatch to CuPy's
    assert not hasattr(d.flags, "writeable")
    with pytest.raises(fake_cupy.FakeKernelError):
        cp.RawModule(code="")


OPTIMIZERS = {
    "sgd": lambda ps: ember.optim.SGD(ps, lr=0.1),
    "sgd_nesterov": lambda ps: ember.optim.SGD(
        ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2
    ),
    "adam_amsgrad": lambda ps: ember.optim.Adam(ps, lr=1e-2, amsgrad=True, eps=1e-3),
    "adamw_foreach": lambda ps: ember.optim.AdamW(ps, lr=1e-2, foreach=True, eps=1e-3),
    "adamw_loop": lambda ps: ember.optim.AdamW(ps, lr=1e-2, foreach=False, eps=1e-3),
    "rmsprop": lambda ps: ember.optim.RMSprop(ps, lr=1e-2, momentum=0.5, centered=True),
    "adagrad": lambda ps: ember.optim.Adagrad(ps, lr=0.1),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_steps_on_device_match_cpu(fake_cuda, name):
    results = {}
    for dev in ("cpu", "cuda"):
        w = ember.tensor(_rand(4, 3, seed=8), device=dev, requires_grad=True)
        b = ember.tensor(_rand(3, seed=9), device=dev, requires_grad=True)
        opt = OPTIMIZERS[name]([w, b])
        sched = ember.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)
        x = ember.tensor(_rand(5, 4, seed=10), device=dev)
        for _ in range(3):
            opt.zero_grad()
            ((x @ w + b).tanh() ** 2).sum().backward()
            opt.step()
            sched.step()
        assert w.device.type == dev and w.grad.device.type == dev
        results[dev] = (_host(w), _host(b))
    for c, d in zip(results["cpu"], results["cuda"]):
        np.testing.assert_allclose(d, c, rtol=1e-5, atol=1e-6)


def test_set_default_device(fake_cuda):
    try:
        ember.set_default_device("cuda")
        assert ember.get_default_device() == "cuda"
        made = [
            ember.tensor([1.0]),
            ember.zeros(2),
            ember.arange(3),
            ember.randn(2),
            ember.randint(0, 5, (3,)),
            ember.randperm(4),
            ember.eye(2),
            ember.as_tensor(np.ones(2)),
        ]
        assert all(t.device == "cuda:0" for t in made)
        assert ember.from_numpy(np.ones(2)).device == "cpu"  # shares host memory, as in torch
        assert ember.zeros(2, device="cpu").device == "cpu"
    finally:
        ember.set_default_device(None)
    assert ember.get_default_device() == "cpu" and ember.zeros(1).device == "cpu"


def test_manual_seed_and_seed_reach_every_device_generator(fake_cuda):
    gen = cuda_generator("cuda:0")
    ember.manual_seed(21)
    assert gen.initial_seed() == 21 and gen.get_state().tolist()[8:] == [0] * 8  # offset 0
    ember.rand(3, device="cuda")
    assert gen.get_state().tolist()[8:] != [0] * 8  # the offset moved past the draw
    new = ember.seed()
    assert gen.initial_seed() == new == ember.initial_seed()
    with pytest.raises(RuntimeError, match="draws on its device"):
        gen.numpy_rng  # noqa: B018 - the property raises
