"""The three reference models (issue 3, Benchmarks), written twice with the same code.

Each builder takes the framework's ``nn`` module and ``nnf`` (``torch.nn``/``torch.nn.functional``
or ``ember.nn``/``ember.nn.functional``), so the Ember model is a faithful port by construction:
same layers, same order, same state-dict keys. ``copy_weights`` then loads torch's initial
weights into the Ember model, so both start from identical numbers.
"""

from __future__ import annotations

import numpy as np

MLP_SIZES = (784, 512, 512, 10)
MLP_BATCH = 128

CNN_INPUT = (64, 3, 32, 32)

GPT_VOCAB = 65
GPT_BLOCK = 128
GPT_LAYERS = 4
GPT_HEADS = 4
GPT_EMBD = 128
GPT_BATCH = 16


def mlp(nn):
    """784-512-512-10 with ReLU."""
    a, b, c, d = MLP_SIZES
    return nn.Sequential(nn.Linear(a, b), nn.ReLU(), nn.Linear(b, c), nn.ReLU(), nn.Linear(c, d))


def cnn(nn):
    """Four conv3x3 (no bias) + BatchNorm2d + ReLU blocks, two max-pools, Linear(4096, 10)."""

    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(
        *block(3, 32),
        *block(32, 32),
        nn.MaxPool2d(2),
        *block(32, 64),
        *block(64, 64),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 8 * 8, 10),
    )


def gpt(nn, nnf, vocab=None, block=None, layers=None, heads=None, embd=None):
    """A character-level GPT: token + position embeddings, pre-LayerNorm blocks (causal
    ``scaled_dot_product_attention``, 4x GELU MLP), final LayerNorm, untied lm_head. Sizes
    default to the module's GPT_* constants, read at call time (benchmarks/gpu.py resizes them)."""
    vocab = GPT_VOCAB if vocab is None else vocab
    block = GPT_BLOCK if block is None else block
    layers = GPT_LAYERS if layers is None else layers
    heads = GPT_HEADS if heads is None else heads
    embd = GPT_EMBD if embd is None else embd

    class CausalSelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_attn = nn.Linear(embd, 3 * embd)
            self.c_proj = nn.Linear(embd, embd)

        def forward(self, x):
            b, t, c = x.shape
            h = heads
            q, k, v = self.c_attn(x).split(c, dim=2)
            q = q.view(b, t, h, c // h).transpose(1, 2)
            k = k.view(b, t, h, c // h).transpose(1, 2)
            v = v.view(b, t, h, c // h).transpose(1, 2)
            y = nnf.scaled_dot_product_attention(q, k, v, is_causal=True)
            y = y.transpose(1, 2).contiguous().view(b, t, c)
            return self.c_proj(y)

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_fc = nn.Linear(embd, 4 * embd)
            self.gelu = nn.GELU()
            self.c_proj = nn.Linear(4 * embd, embd)

        def forward(self, x):
            return self.c_proj(self.gelu(self.c_fc(x)))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(embd)
            self.attn = CausalSelfAttention()
            self.ln_2 = nn.LayerNorm(embd)
            self.mlp = MLP()

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(vocab, embd)
            self.wpe = nn.Embedding(block, embd)
            self.h = nn.ModuleList([Block() for _ in range(layers)])
            self.ln_f = nn.LayerNorm(embd)
            self.lm_head = nn.Linear(embd, vocab, bias=False)

        def forward(self, idx, pos):
            x = self.wte(idx) + self.wpe(pos)
            for block in self.h:
                x = block(x)
            return self.lm_head(self.ln_f(x))

    return GPT()


def copy_weights(torch_model, ember_model) -> None:
    """Load torch's parameters and buffers into the Ember model (strict: same keys)."""
    import ember

    state = {
        k: ember.tensor(v.detach().cpu().numpy().copy())
        for k, v in torch_model.state_dict().items()
    }
    ember_model.load_state_dict(state)


def mlp_data(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((MLP_BATCH, MLP_SIZES[0]), dtype=np.float32)
    y = rng.integers(0, MLP_SIZES[-1], MLP_BATCH)
    return x, y


def cnn_data(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(CNN_INPUT, dtype=np.float32)
    y = rng.integers(0, 10, CNN_INPUT[0])
    return x, y


def gpt_data(seed: int = 0):
    """A batch of (GPT_BATCH, GPT_BLOCK) token windows and their next-token targets: from
    tinyshakespeare when it is on the machine, else uniform random tokens."""
    import os

    rng = np.random.default_rng(seed)
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "..", "..", "shared", "data", "tinyshakespeare", "input.txt")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        chars = sorted(set(text))
        lut = {ch: i for i, ch in enumerate(chars)}
        data = np.array([lut[ch] for ch in text[:200_000]], dtype=np.int64)
        starts = rng.integers(0, len(data) - GPT_BLOCK - 1, GPT_BATCH)
        x = np.stack([data[s : s + GPT_BLOCK] for s in starts])
        y = np.stack([data[s + 1 : s + GPT_BLOCK + 1] for s in starts])
        return x, y
    seq = rng.integers(0, GPT_VOCAB, (GPT_BATCH, GPT_BLOCK + 1))
    return seq[:, :-1].copy(), seq[:, 1:].copy()
