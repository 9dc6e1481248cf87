"""A character-level GPT (nanoGPT's architecture) and its TrainingModule.

Pre-LayerNorm blocks with causal ``scaled_dot_product_attention`` and a 4x GELU MLP, learned
position embeddings, an untied ``lm_head``; weights start as nanoGPT's (N(0, 0.02), residual
projections scaled by 1/sqrt(2 * n_layer)). ``GPTModule`` keeps the vocabulary (``chars``) in its
hyperparameters, so a checkpoint alone can be sampled from (``ember-generate``).
"""

from __future__ import annotations

import math

import numpy as np

import ember
import ember.nn as nn
import ember.nn.functional as F
from ember.recipes.models.base import RecipeModule


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool) -> None:
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"GPT: n_embd ({n_embd}) must be divisible by n_head ({n_head})")
        self.n_head = n_head
        self.dropout = dropout
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x):
        b, t, c = x.shape
        h = self.n_head
        q, k, v = self.c_attn(x).split(c, dim=2)
        q = q.view(b, t, h, c // h).transpose(1, 2)
        k = k.view(b, t, h, c // h).transpose(1, 2)
        v = v.view(b, t, h, c // h).transpose(1, 2)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(b, t, c)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, n_embd: int, dropout: float, bias: bool) -> None:
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout, bias)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = MLP(n_embd, dropout, bias)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """``GPT(vocab_size, block_size, n_layer, n_head, n_embd)``: ids (B, T) -> logits (B, T, V)."""

    def __init__(
        self,
        vocab_size: int,
        block_size: int,
        n_layer: int = 4,
        n_head: int = 4,
        n_embd: int = 128,
        dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.block_size = block_size
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.drop = nn.Dropout(dropout)
        self.h = nn.ModuleList([Block(n_embd, n_head, dropout, bias) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self._init_weights(n_layer)

    def _init_weights(self, n_layer: int) -> None:
        for name, mod in self.named_modules():
            if isinstance(mod, (nn.Linear, nn.Embedding)):
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith("c_proj") else 0.02
                nn.init.normal_(mod.weight, 0.0, std)
                if getattr(mod, "bias", None) is not None:
                    nn.init.zeros_(mod.bias)

    def forward(self, idx):
        t = idx.shape[1]
        if t > self.block_size:
            raise ValueError(f"GPT: sequence length {t} exceeds block_size {self.block_size}")
        pos = ember.arange(t, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def sample_next(logits: np.ndarray, temperature: float, top_k, rng) -> int:
    """One id from the last position's logits: temperature, then top-k, then softmax."""
    logits = logits.astype(np.float64)
    if temperature <= 0:
        return int(np.argmax(logits))
    logits = logits / temperature
    if top_k is not None and 0 < top_k < logits.size:
        kth = np.partition(logits, -top_k)[-top_k]
        logits = np.where(logits < kth, -np.inf, logits)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    return int(rng.choice(probs.size, p=probs))


class GPTModule(RecipeModule):
    """The GPT trained on next-character prediction; logs ``train_loss`` and ``val_loss``."""

    def __init__(
        self,
        vocab_size: int,
        block_size: int = 64,
        n_layer: int = 4,
        n_head: int = 4,
        n_embd: int = 128,
        dropout: float = 0.0,
        bias: bool = True,
        chars: str | None = None,
        optimizer=None,
        scheduler=None,
    ) -> None:
        super().__init__(optimizer, scheduler)
        if chars is not None and len(chars) != vocab_size:
            raise ValueError(
                f"GPTModule: chars holds {len(chars)} characters but vocab_size is {vocab_size}"
            )
        self.save_hyperparameters(ignore=list(self.FACTORIES), logger=False)
        self.model = GPT(vocab_size, block_size, n_layer, n_head, n_embd, dropout, bias)

    def forward(self, idx):
        return self.model(idx)

    def _loss(self, batch):
        x, y = batch
        logits = self(x)
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), y.view(-1))

    def training_step(self, batch, batch_idx):
        loss = self._loss(batch)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self._loss(batch), prog_bar=True)

    def test_step(self, batch, batch_idx):
        self.log("test_loss", self._loss(batch))

    # ------------------------------------------------------------------ sampling
    def encode(self, text: str) -> list:
        chars = self.hparams.get("chars")
        if chars is None:
            raise ValueError("GPTModule.encode: this model was built without its vocabulary")
        stoi = {c: i for i, c in enumerate(chars)}
        bad = sorted({c for c in text if c not in stoi})
        if bad:
            raise ValueError(
                f"GPTModule: the prompt has characters outside the vocabulary: {bad!r}"
            )
        return [stoi[c] for c in text]

    def decode(self, ids) -> str:
        chars = self.hparams.get("chars")
        if chars is None:
            return " ".join(str(int(i)) for i in ids)
        return "".join(chars[int(i)] for i in ids)

    def generate(self, ids, max_new_tokens: int, temperature: float = 1.0, top_k=None, rng=None):
        """Extend ``ids`` (a list of ints) by ``max_new_tokens`` sampled ids. ``rng``: a NumPy
        Generator (sampling never touches Ember's generators, so training stays
        reproducible)."""
        rng = np.random.default_rng(0) if rng is None else rng
        ids = list(ids) or [0]
        block = self.hparams.block_size
        was_training = self.training
        self.eval()
        try:
            with ember.no_grad():
                for _ in range(max_new_tokens):
                    ctx = ember.tensor(np.asarray([ids[-block:]], dtype=np.int64))
                    ctx = ctx.to(self.device)
                    logits = self(ctx)[0, -1]
                    ids.append(sample_next(np.asarray(logits), temperature, top_k, rng))
        finally:
            self.train(was_training)
        return ids

    def sample_text(self, prompt: str, max_new_tokens: int, temperature=1.0, top_k=None, rng=None):
        """``prompt`` followed by ``max_new_tokens`` sampled characters."""
        return self.decode(
            self.generate(self.encode(prompt), max_new_tokens, temperature, top_k, rng)
        )
