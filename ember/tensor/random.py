"""Random number generation: ``ember.Generator``, ``manual_seed`` and the random creation ops.

A CPU Generator wraps NumPy's PCG64. A CUDA Generator draws on its device with cuRAND's
counter-based Philox: its whole state is (seed, offset), the offset moving past every draw, so
a resumed run continues the same stream. Either state is a uint8 tensor (as in PyTorch), so
checkpoints store it as an array, with no pickle.
"""

from __future__ import annotations

import numpy as np

from ember.tensor import dtypes
from ember.tensor.backend import cupy_module, get_array_module, to_backend
from ember.tensor.device import CPU, default_or, to_device
from ember.tensor.tensor import Tensor, write_into

_STATE_BYTES = 16 + 16 + 1 + 4 + 8  # PCG64 state, increment, has_uint32, uinteger, seed


class Generator:
    """A seeded source of random numbers; pass it as ``generator=`` to random ops."""

    def __new__(cls, device="cpu"):
        if cls is Generator and to_device(device).type == "cuda":
            return super().__new__(CudaGenerator)
        return super().__new__(cls)

    def __init__(self, device="cpu"):
        self.device = to_device(device)
        self._seed = 67280421310721  # PyTorch's default seed
        self._rng = np.random.Generator(np.random.PCG64(self._seed))

    def manual_seed(self, seed: int) -> Generator:
        seed = _seed_value(seed)
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

    def draw(self, kind: str, shape, np_dtype):
        """``uniform`` [0, 1) or ``normal`` values of a native float dtype, on this device."""
        if kind == "normal":
            return self._rng.standard_normal(shape, dtype=np_dtype)
        return self._rng.random(shape, dtype=np_dtype)

    def __repr__(self) -> str:
        return f"<ember.Generator device={self.device} seed={self._seed}>"


def _seed_value(seed) -> int:
    seed = int(seed)
    return seed & ((1 << 64) - 1) if seed < 0 else seed  # PyTorch takes negative seeds so


class CudaGenerator(Generator):
    """A generator on one CUDA device: cuRAND Philox at an explicit offset.

    Every draw sets the offset first and then moves it past the words the draw may consume,
    so the stream is a pure function of (seed, offset) and ``get_state`` is just those two.
    """

    def __init__(self, device="cuda"):
        dev = to_device(device)
        self.device = to_device(f"cuda:{dev.index or 0}")
        self._seed = default_generator.initial_seed()
        self._offset = 0
        self._rs = None

    def manual_seed(self, seed: int) -> CudaGenerator:
        self._seed, self._offset, self._rs = _seed_value(seed), 0, None
        return self

    def get_state(self) -> Tensor:
        raw = self._seed.to_bytes(8, "little") + self._offset.to_bytes(8, "little")
        return Tensor(np.frombuffer(raw, dtype=np.uint8).copy())

    def set_state(self, new_state) -> CudaGenerator:
        arr = new_state.data if isinstance(new_state, Tensor) else new_state
        arr = np.asarray(to_backend(arr, CPU))
        if arr.dtype != np.uint8 or arr.size != 16:
            raise RuntimeError(
                "Generator.set_state: expected a uint8 tensor of 16 bytes for a CUDA generator, "
                f"got {arr.dtype} with {arr.size} elements"
            )
        raw = arr.tobytes()
        self._seed = int.from_bytes(raw[:8], "little")
        self._offset = int.from_bytes(raw[8:], "little")
        self._rs = None
        return self

    @property
    def numpy_rng(self):
        raise RuntimeError(
            f"{self!r} draws on its device; it has no NumPy generator (pass a CPU generator)"
        )

    def draw(self, kind: str, shape, np_dtype):
        cp = cupy_module()
        with cp.cuda.Device(self.device.index):
            if self._rs is None:
                method = cp.cuda.curand.CURAND_RNG_PSEUDO_PHILOX4_32_10
                self._rs = cp.random.RandomState(self._seed, method=method)
            cp.cuda.curand.setGeneratorOffset(self._rs._generator, self._offset)
            n = int(np.prod(shape, dtype=np.int64))
            # 64-bit values take two words, normals come in pairs: 4 words each is an upper bound
            self._offset += 4 * (n + 4)
            if kind == "normal":
                return self._rs.standard_normal(shape, dtype=np_dtype)
            return self._rs.random_sample(shape, dtype=np_dtype)


default_generator = Generator()
_device_generators: dict = {}  # cuda index -> CudaGenerator, created on first use


def cuda_generator(device="cuda") -> CudaGenerator:
    """The default generator of one CUDA device (``torch.cuda.default_generators[i]``)."""
    index = to_device(device).index or 0
    gen = _device_generators.get(index)
    if gen is None:
        gen = _device_generators[index] = CudaGenerator(f"cuda:{index}")
    return gen


def get_cuda_rng_states() -> dict:
    """{device index: uint8 state} of every CUDA generator used so far (for checkpoints)."""
    return {i: g.get_state() for i, g in sorted(_device_generators.items())}


def set_cuda_rng_states(states: dict) -> None:
    for index, state in states.items():
        cuda_generator(f"cuda:{int(index)}").set_state(state)


def manual_seed(seed: int) -> Generator:
    """Seed every generator Ember owns: the CPU default, and every CUDA device's (a device
    generator created later starts from this seed too)."""
    default_generator.manual_seed(seed)
    for gen in _device_generators.values():
        gen.manual_seed(seed)
    return default_generator


def generator_for(device, generator: Generator | None) -> Generator:
    """The generator a draw for ``device`` uses: the one given, else the device's default."""
    if generator is not None:
        return generator
    dev = to_device(device)
    return default_generator if dev.type == "cpu" else cuda_generator(dev)


def draw_uniform(shape, np_dtype, device=None, generator: Generator | None = None):
    """U[0, 1) values (float32 or float64) as an array on ``device``, from its generator."""
    return _draw_on(generator_for(device, generator), "uniform", shape, np_dtype, device)


def draw_normal(shape, np_dtype, device=None, generator: Generator | None = None):
    return _draw_on(generator_for(device, generator), "normal", shape, np_dtype, device)


def seed() -> int:
    """Reseed every generator from the OS's entropy (one new seed for all) and return it."""
    new = default_generator.seed()
    for gen in _device_generators.values():
        gen.manual_seed(new)
    return new


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


def _draw_float(kind: str, shape, d: dtypes.dtype, gen: Generator, device=None):
    """Values of dtype ``d`` on ``device``: drawn in float32/float64 by the device's generator
    (the CPU default draws exactly as it always has), then cast."""
    native = d.np if d in (dtypes.float32, dtypes.float64) else np.float32
    arr = _draw_on(gen, kind, shape, native, device)
    if kind != "normal" and (d is dtypes.float16 or d is dtypes.bfloat16):
        xp = get_array_module(arr)  # rounding must not reach 1: [0, 1)
        arr = xp.minimum(arr, np.float32(1 - 2.0 ** -(11 if d is dtypes.float16 else 8)))
    return arr if arr.dtype == d.np else arr.astype(d.np)


def _draw_on(gen: Generator, kind: str, shape, np_dtype, device):
    arr = gen.draw(kind, tuple(shape), np_dtype)
    dev = to_device(device)
    same = gen.device.type == dev.type and (gen.device.index or 0) == (dev.index or 0)
    return arr if same else to_backend(arr, dev)


def _finish(arr, device, requires_grad: bool) -> Tensor:
    from ember.tensor.creation import finish

    return finish(arr, device, requires_grad)


def _shape(size) -> tuple:
    from ember.tensor.creation import size_args

    return size_args(size)


def rand(*size, generator=None, dtype=None, device=None, requires_grad=False) -> Tensor:
    device = default_or(device)
    d = _float_dtype(dtype)
    arr = _draw_float("uniform", _shape(size), d, generator_for(device, generator), device)
    return _finish(arr, device, requires_grad)


def randn(*size, generator=None, dtype=None, device=None, requires_grad=False) -> Tensor:
    device = default_or(device)
    d = _float_dtype(dtype)
    arr = _draw_float("normal", _shape(size), d, generator_for(device, generator), device)
    return _finish(arr, device, requires_grad)


def _integers(gen: Generator, low: int, high: int, shape, device):
    """Uniform integers in [low, high) on ``device`` (int64)."""
    if gen.device.type == "cpu":
        arr = gen.numpy_rng.integers(low, high, size=tuple(shape), dtype=np.int64)
        return to_backend(arr, to_device(device))
    u = _draw_on(gen, "uniform", shape, np.float64, device)
    xp = get_array_module(u)
    span = high - low
    return xp.minimum(xp.floor(u * span), span - 1).astype(np.int64) + np.int64(low)


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
    device = default_or(device)
    d = dtypes.int64 if dtype is None else dtypes.to_dtype(dtype)
    arr = _integers(generator_for(device, generator), low, high, tuple(size), device)
    return _finish(arr.astype(d.np, copy=False), device, requires_grad)


def randperm(n: int, *, generator=None, dtype=None, device=None, requires_grad=False) -> Tensor:
    device = default_or(device)
    d = dtypes.int64 if dtype is None else dtypes.to_dtype(dtype)
    gen = generator_for(device, generator)
    if gen.device.type == "cpu":
        arr = gen.numpy_rng.permutation(int(n)).astype(d.np)
    else:  # a permutation on the device: the order of n uniform keys
        keys = _draw_on(gen, "uniform", (int(n),), np.float64, device)
        arr = get_array_module(keys).argsort(keys).astype(d.np)
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


def _uniform_for(t: Tensor, generator, np_dtype=np.float64):
    """U[0, 1) of ``t``'s shape on ``t``'s device (float64 on the CPU, as it always was)."""
    return _draw_on(generator_for(t.device, generator), "uniform", t.data.shape, np_dtype, t.device)


def bernoulli(input: Tensor, p=None, *, generator=None) -> Tensor:
    xp = get_array_module(input.data)
    draw = _uniform_for(input, generator)
    probs = input.data if p is None else xp.asarray(p, dtype=np.float64)
    return _finish((draw < probs).astype(input.data.dtype), input.device, False)


def multinomial(
    input: Tensor, num_samples: int, replacement: bool = False, *, generator=None
) -> Tensor:
    """Sample category indices from each row of (unnormalised) probabilities.

    The draw runs on the host from the CPU generator (sampling is a small, per-row loop: for
    a CUDA input only the probabilities travel), and the indices go back to the input's device.
    """
    probs = np.asarray(to_backend(input.data, to_device("cpu")), dtype=np.float64)
    rows = probs.reshape(-1, probs.shape[-1])
    if (rows < 0).any() or not np.isfinite(rows).all():
        raise RuntimeError(
            "multinomial: probability tensor contains either inf, nan or element < 0"
        )
    gen = generator if generator is not None and generator.device.type == "cpu" else None
    rng = rng_of(gen)
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


def _fill_float(t: Tensor, kind: str, scale: float, shift: float, generator, op: str) -> Tensor:
    d = _float_dtype(dtypes.from_numpy_dtype(t.data.dtype))
    arr = _draw_float(kind, t.data.shape, d, generator_for(t.device, generator), t.device)
    arr = arr * arr.dtype.type(scale) + arr.dtype.type(
        shift
    )  # scalars: CuPy refuses 0-d host arrays
    write_into(t, arr, op)
    return t


def normal_(t: Tensor, mean: float = 0.0, std: float = 1.0, *, generator=None) -> Tensor:
    """Fill ``t`` in place from N(mean, std^2)."""
    return _fill_float(t, "normal", std, mean, generator, "normal_")


def uniform_(t: Tensor, a: float = 0.0, b: float = 1.0, *, generator=None) -> Tensor:
    """Fill ``t`` in place from U(a, b)."""
    return _fill_float(t, "uniform", b - a, a, generator, "uniform_")


def random_(t: Tensor, low: int = 0, high: int | None = None, *, generator=None) -> Tensor:
    if high is None:
        low, high = 0, low if low else 2**24
    arr = _integers(generator_for(t.device, generator), low, high, t.data.shape, t.device)
    write_into(t, arr.astype(t.data.dtype), "random_")
    return t


def bernoulli_(t: Tensor, p: float = 0.5, *, generator=None) -> Tensor:
    write_into(t, (_uniform_for(t, generator) < p).astype(t.data.dtype), "bernoulli_")
    return t


def exponential_(t: Tensor, lambd: float = 1.0, *, generator=None) -> Tensor:
    gen = generator_for(t.device, generator)
    if gen.device.type == "cpu":
        arr = gen.numpy_rng.exponential(1.0 / lambd, size=t.data.shape)
        arr = to_backend(arr, t.device)
    else:  # inverse CDF on the device
        u = _uniform_for(t, generator)
        arr = -get_array_module(u).log1p(-u) / lambd
    write_into(t, arr.astype(t.data.dtype), "exponential_")
    return t
