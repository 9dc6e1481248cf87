"""Random number generation: ``ember.Generator``, ``manual_seed`` and the random creation ops.

A Generator wraps NumPy's PCG64. Its state is a uint8 tensor (as in PyTorch), so checkpoints
store it as an array, with no pickle.
"""

from __future__ import annotations

import numpy as np

from ember.tensor import dtypes
from ember.tensor.backend import to_backend
from ember.tensor.device import to_device
from ember.tensor.tensor import Tensor, write_into

_STATE_BYTES = 16 + 16 + 1 + 4 + 8  # PCG64 state, increment, has_uint32, uinteger, seed


class Generator:
    """A seeded source of random numbers; pass it as ``generator=`` to random ops."""

    def __init__(self, device="cpu"):
        self.device = to_device(device)
        self._seed = 67280421310721  # PyTorch's default seed
        self._rng = np.random.Generator(np.random.PCG64(self._seed))

    def manual_seed(self, seed: int) -> Generator:
        seed = int(seed)
        if seed < 0:
            seed &= (1 << 64) - 1  # PyTorch accepts negative seeds the same way
        self._seed = seed
        self._rng = np.random.Generator(np.random.PCG64(seed))
        return self

    def seed(self) -> int:
        """Reseed from the operating system's entropy and return the new seed."""
        new = int(np.random.SeedSequence().entropy) & ((1 << 63) - 1)
        self.manual_seed(new)
        return new

    def initial_seed(self) -> int:
        return self._seed

    def get_state(self) -> Tensor:
        st = self._rng.bit_generator.state
        words = [
            st["state"]["state"].to_bytes(16, "little"),
            st["state"]["inc"].to_bytes(16, "little"),
            bytes([st["has_uint32"]]),
            int(st["uinteger"]).to_bytes(4, "little"),
            self._seed.to_bytes(8, "little"),
        ]
        return Tensor(np.frombuffer(b"".join(words), dtype=np.uint8).copy())

    def set_state(self, new_state) -> Generator:
        arr = new_state.data if isinstance(new_state, Tensor) else np.asarray(new_state)
        arr = np.asarray(to_backend(arr, to_device("cpu")))
        if arr.dtype != np.uint8 or arr.size != _STATE_BYTES:
            raise RuntimeError(
                f"Generator.set_state: expected a uint8 tensor of {_STATE_BYTES} bytes, got "
                f"{arr.dtype} with {arr.size} elements"
            )
        raw = arr.tobytes()
        bitgen = np.random.PCG64()
        bitgen.state = {
            "bit_generator": "PCG64",
            "state": {
                "state": int.from_bytes(raw[0:16], "little"),
                "inc": int.from_bytes(raw[16:32], "little"),
            },
            "has_uint32": raw[32],
            "uinteger": int.from_bytes(raw[33:37], "little"),
        }
        self._rng = np.random.Generator(bitgen)
        self._seed = int.from_bytes(raw[37:45], "little")
        return self

    @property
    def numpy_rng(self) -> np.random.Generator:
        """The NumPy generator behind this one (ops draw from it)."""
        return self._rng

    def __repr__(self) -> str:
        return f"<ember.Generator device={self.device} seed={self._seed}>"


default_generator = Generator()


def manual_seed(seed: int) -> Generator:
    """Seed every generator Ember owns (the default CPU generator, and CUDA's when loaded)."""
    default_generator.manual_seed(seed)
    for hook in _seed_hooks:
        hook(int(seed))
    return default_generator


_seed_hooks: list = []  # the CUDA backend registers its generator's reseeding here


def seed() -> int:
    return default_generator.seed()


def initial_seed() -> int:
    return default_generator.initial_seed()


def get_rng_state() -> Tensor:
    return default_generator.get_state()


def set_rng_state(new_state) -> None:
    default_generator.set_state(new_state)


def rng_of(generator: Generator | None) -> np.random.Generator:
    return (generator or default_generator).numpy_rng


def _float_dtype(dtype) -> dtypes.dtype:
    d = dtypes.get_default_dtype() if dtype is None else dtypes.to_dtype(dtype)
    if not d.is_floating_point:
        raise RuntimeError(f"expected a floating-point dtype, got {d}")
    return d


def _draw_float(kind: str, shape, d: dtypes.dtype, rng) -> np.ndarray:
    native = d.np if d in (dtypes.float32, dtypes.float64) else np.float32
    if kind == "normal":
        arr = rng.standard_normal(shape, dtype=native)
    else:
        arr = rng.random(shape, dtype=native)
        if d is dtypes.float16 or d is dtypes.bfloat16:  # rounding must not reach 1: [0, 1)
            arr = np.minimum(arr, np.float32(1 - 2.0 ** -(11 if d is dtypes.float16 else 8)))
    return arr if arr.dtype == d.np else arr.astype(d.np)


def _finish(arr, device, requires_grad: bool) -> Tensor:
    from ember.tensor.creation import finish

    return finish(arr, device, requires_grad)


def _shape(size) -> tuple:
    from ember.tensor.creation import size_args

    return size_args(size)


def rand(*size, generator=None, dtype=None, device=None, requires_grad=False) -> Tensor:
    d = _float_dtype(dtype)
    return _finish(
        _draw_float("uniform", _shape(size), d, rng_of(generator)), device, requires_grad
    )


def randn(*size, generator=None, dtype=None, device=None, requires_grad=False) -> Tensor:
    d = _float_dtype(dtype)
    return _finish(_draw_float("normal", _shape(size), d, rng_of(generator)), device, requires_grad)


def randint(
    low, high=None, size=None, *, generator=None, dtype=None, device=None, requires_grad=False
) -> Tensor:
    if size is None and isinstance(high, (tuple, list)):
        low, high, size = 0, low, high  # randint(high, size), as in torch
    if high is None:
        low, high = 0, low
    if size is None:
        raise TypeError("randint: missing the required argument 'size'")
    if low >= high:
        raise RuntimeError(f"randint: expected low < high, got low={low}, high={high}")
    d = dtypes.int64 if dtype is None else dtypes.to_dtype(dtype)
    arr = rng_of(generator).integers(low, high, size=tuple(size), dtype=np.int64)
    return _finish(arr.astype(d.np, copy=False), device, requires_grad)


def randperm(n: int, *, generator=None, dtype=None, device=None, requires_grad=False) -> Tensor:
    d = dtypes.int64 if dtype is None else dtypes.to_dtype(dtype)
    arr = rng_of(generator).permutation(int(n)).astype(d.np)
    return _finish(arr, device, requires_grad)


def rand_like(t: Tensor, *, dtype=None, device=None, requires_grad=False, generator=None):
    return rand(
        t.data.shape,
        generator=generator,
        dtype=dtype or t.dtype,
        device=device or t.device,
        requires_grad=requires_grad,
    )


def randn_like(t: Tensor, *, dtype=None, device=None, requires_grad=False, generator=None):
    return randn(
        t.data.shape,
        generator=generator,
        dtype=dtype or t.dtype,
        device=device or t.device,
        requires_grad=requires_grad,
    )


def randint_like(t: Tensor, low, high=None, *, dtype=None, device=None, generator=None):
    return randint(
        low,
        high,
        t.data.shape,
        generator=generator,
        dtype=dtype or t.dtype,
        device=device or t.device,
    )


def bernoulli(input: Tensor, p=None, *, generator=None) -> Tensor:
    probs = input.data if p is None else np.full(input.data.shape, p)
    draw = rng_of(generator).random(input.data.shape)
    arr = (draw < np.asarray(to_backend(probs, to_device("cpu")))).astype(input.data.dtype)
    return _finish(arr, input.device, False)


def multinomial(
    input: Tensor, num_samples: int, replacement: bool = False, *, generator=None
) -> Tensor:
    """Sample category indices from each row of (unnormalised) probabilities."""
    probs = np.asarray(to_backend(input.data, to_device("cpu")), dtype=np.float64)
    rows = probs.reshape(-1, probs.shape[-1])
    if (rows < 0).any() or not np.isfinite(rows).all():
        raise RuntimeError(
            "multinomial: probability tensor contains either inf, nan or element < 0"
        )
    rng = rng_of(generator)
    out = np.empty((rows.shape[0], num_samples), dtype=np.int64)
    for i, row in enumerate(rows):
        total = row.sum()
        if total <= 0:
            raise RuntimeError(
                "multinomial: invalid multinomial distribution (sum of probabilities <= 0)"
            )
        if not replacement and num_samples > np.count_nonzero(row):
            raise RuntimeError(
                "multinomial: cannot sample n_sample > prob_dist.size(-1) "
                "samples without replacement"
            )
        out[i] = rng.choice(row.size, size=num_samples, replace=replacement, p=row / total)
    shape = probs.shape[:-1] + (num_samples,)
    return _finish(out.reshape(shape), input.device, False)


def normal_(t: Tensor, mean: float = 0.0, std: float = 1.0, *, generator=None) -> Tensor:
    """Fill ``t`` in place from N(mean, std^2)."""
    d = dtypes.from_numpy_dtype(t.data.dtype)
    arr = _draw_float("normal", t.data.shape, _float_dtype(d), rng_of(generator))
    arr = arr * np.asarray(std, arr.dtype) + np.asarray(mean, arr.dtype)
    write_into(t, to_backend(arr, t.device), "normal_")
    return t


def uniform_(t: Tensor, a: float = 0.0, b: float = 1.0, *, generator=None) -> Tensor:
    """Fill ``t`` in place from U(a, b)."""
    d = dtypes.from_numpy_dtype(t.data.dtype)
    arr = _draw_float("uniform", t.data.shape, _float_dtype(d), rng_of(generator))
    arr = arr * np.asarray(b - a, arr.dtype) + np.asarray(a, arr.dtype)
    write_into(t, to_backend(arr, t.device), "uniform_")
    return t


def random_(t: Tensor, low: int = 0, high: int | None = None, *, generator=None) -> Tensor:
    if high is None:
        low, high = 0, low if low else 2**24
    arr = rng_of(generator).integers(low, high, size=t.data.shape).astype(t.data.dtype)
    write_into(t, to_backend(arr, t.device), "random_")
    return t


def bernoulli_(t: Tensor, p: float = 0.5, *, generator=None) -> Tensor:
    arr = (rng_of(generator).random(t.data.shape) < p).astype(t.data.dtype)
    write_into(t, to_backend(arr, t.device), "bernoulli_")
    return t


def exponential_(t: Tensor, lambd: float = 1.0, *, generator=None) -> Tensor:
    arr = rng_of(generator).exponential(1.0 / lambd, size=t.data.shape).astype(t.data.dtype)
    write_into(t, to_backend(arr, t.device), "exponential_")
    return t
