"""Ember's offline demo: train a small MLP on a synthetic two-spirals task and print the loss.

It uses only the tensor + autograd layer (the nn/optim layers build on the same calls):
weights are leaf tensors, the loss is a softmax cross-entropy written with ember ops, and
plain gradient descent updates the weights in place under ``no_grad``.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

import ember


def two_spirals(n: int, rng: np.random.Generator):
    t = np.sqrt(rng.uniform(0.05, 1.0, n)) * 3 * math.pi
    label = rng.integers(0, 2, n)
    sign = np.where(label == 0, 1.0, -1.0)
    x = np.stack([sign * t * np.cos(t), sign * t * np.sin(t)], axis=1) / (3 * math.pi)
    x += rng.normal(0, 0.02, x.shape)
    return ember.tensor(x.astype(np.float32)), ember.tensor(label)


def init_layer(n_in: int, n_out: int):
    bound = 1 / math.sqrt(n_in)
    w = ember.empty(n_in, n_out).uniform_(-bound, bound).requires_grad_()
    b = ember.empty(n_out).uniform_(-bound, bound).requires_grad_()
    return w, b


def forward(params, x):
    h = x
    for i, (w, b) in enumerate(params):
        h = h @ w + b
        if i < len(params) - 1:
            h = ember.tanh(h)
    return h


def cross_entropy(logits, target):
    logp = ember.log_softmax(logits, dim=1)
    return -logp.gather(1, target.unsqueeze(1)).mean()


def main(argv=None) -> float:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--lr", type=float, default=0.3)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    ember.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    x, y = two_spirals(2048, rng)
    params = [
        init_layer(2, args.hidden),
        init_layer(args.hidden, args.hidden),
        init_layer(args.hidden, 2),
    ]
    flat = [p for layer in params for p in layer]
    start = time.perf_counter()
    for step in range(args.steps + 1):
        loss = cross_entropy(forward(params, x), y)
        for p in flat:
            p.grad = None
        loss.backward()
        with ember.no_grad():
            for p in flat:
                p.sub_(p.grad * args.lr)
        if step % 100 == 0:
            with ember.no_grad():
                acc = (forward(params, x).argmax(dim=1) == y).float().mean().item()
            print(f"step {step:5d}  loss {loss.item():.4f}  accuracy {acc:.3f}")
    print(f"done in {time.perf_counter() - start:.1f}s")
    return loss.item()


if __name__ == "__main__":
    main()
