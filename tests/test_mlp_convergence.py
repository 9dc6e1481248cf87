"""A small MLP written against the tensor API only (no nn, no optim) learns two interleaved
spirals with plain gradient descent: in-place updates under no_grad, grads zeroed in place."""

import numpy as np

import ember


def spirals(n: int, noise: float, seed: int):
    """Two interleaved 1.5-turn spirals in the plane; labels are -1 and +1."""
    rng = np.random.default_rng(seed)
    t = np.sqrt(rng.uniform(0.05, 1.0, n)) * 3 * np.pi
    cls = rng.integers(0, 2, n)
    angle = t + np.pi * cls
    radius = t / (3 * np.pi)
    x = np.stack([radius * np.cos(angle), radius * np.sin(angle)], 1)
    x += rng.normal(0.0, noise, (n, 2))
    return x.astype(np.float32), (2.0 * cls - 1.0).astype(np.float32)


def init_layer(fan_in: int, fan_out: int):
    w = (ember.randn(fan_in, fan_out) * (2.0 / fan_in) ** 0.5).requires_grad_()
    b = ember.zeros(fan_out, requires_grad=True)
    return [w, b]


def mlp(params, x):
    w1, b1, w2, b2, w3, b3 = params
    h = ember.relu(x @ w1 + b1)
    h = ember.relu(h @ w2 + b2)
    return h @ w3 + b3


def accuracy(params, x, y) -> float:
    with ember.no_grad():
        pred = mlp(params, x).numpy()[:, 0] > 0
    return float((pred == (y > 0)).mean())


def test_mlp_learns_two_spirals():
    ember.manual_seed(0)
    xs, ys = spirals(128, 0.02, seed=0)
    x, y = ember.tensor(xs), ember.tensor(ys).reshape(-1, 1)
    params = init_layer(2, 32) + init_layer(32, 32) + init_layer(32, 1)
    lr, losses = 0.05, []
    for _ in range(1500):
        loss = ((mlp(params, x) - y) ** 2).mean()
        loss.backward()
        with ember.no_grad():
            for p in params:
                p.sub_(lr * p.grad)
                p.grad.zero_()
        losses.append(loss.item())

    assert all(p.is_leaf and p.requires_grad and p.dtype is ember.float32 for p in params)
    assert np.isfinite(losses).all()
    assert losses[-1] < losses[0] / 20, (losses[0], losses[-1])
    assert accuracy(params, x, ys) > 0.95
    xt, yt = spirals(256, 0.02, seed=1)
    assert accuracy(params, ember.tensor(xt), yt) > 0.85  # it learned the shape, not the points
