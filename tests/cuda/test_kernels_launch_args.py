"""CI without a GPU: every launcher, run with NumPy standing in for CuPy and a recorder in
place of each compiled kernel, passes exactly the arguments the kernel's C signature takes.

CuPy packs kernel arguments by their Python/NumPy type (an np.int64 where the kernel expects
``int`` shifts every later argument), so a launcher / kernel mismatch would corrupt memory
silently on a GPU. Here each call is checked against the signature parsed from the .cu file:
the argument count, scalar types (int -> np.int32, long long -> np.int64, float ->
np.float32), and for pointers a C-contiguous array of the pointee's dtype (``T`` resolved from
the name expression) or the null pointer; plus the launch shape (block a multiple of 32 and at
most 1024 threads, a grid within CUDA's limits, shared memory under 48 KiB)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from ember.cuda import FAMILIES
from ember.cuda import compile as C
from ember.tensor import backend

_SCALARS = {"int": np.int32, "long long": np.int64, "float": np.float32}
_POINTEES = {
    "float": ("float32",),
    "__half": ("float16",),
    "__nv_bfloat16": ("uint16", "bfloat16"),
    "long long": ("int64",),
    "int": ("int32",),
    "unsigned long long": ("uint64",),
}


def _signatures(source: str) -> dict:
    """kernel name -> (template parameter names, [(type, is_pointer)] per argument)."""
    text = re.sub(r"//[^\n]*", "", (C.KERNEL_DIR / source).read_text())
    macros = {
        m.group(1): " ".join(m.group(2).replace("\\\n", " ").split())
        for m in re.finditer(r"#define\s+(\w+)\s+((?:[^\n]*\\\n)*[^\n]*)", text)
    }
    out = {}
    pattern = r"template\s*<([^>]*)>\s*__global__\s+void\s+(\w+)\s*\(([^)]*)\)"
    for m in re.finditer(pattern, text):
        tparams = [p.split()[-1] for p in m.group(1).split(",")]
        params = m.group(3)
        for name, body in macros.items():
            params = re.sub(rf"\b{name}\b", body, params)
        args = []
        for p in params.split(","):
            words = p.replace("__restrict__", " ").replace("const", " ").replace("*", " * ")
            words = words.split()[:-1]  # drop the parameter name
            pointer = "*" in words
            args.append((" ".join(w for w in words if w != "*"), pointer))
        out[m.group(2)] = (tparams, args)
    return out


class _Recorder:
    def __init__(self, source: str, name: str, calls: list):
        base, targs = re.match(r"(\w+)<(.*)>$", name).groups()
        tparams, self.args = _signatures(source)[base]
        self.bind = dict(zip(tparams, (t.strip() for t in targs.split(","))))
        self.name, self.calls = name, calls

    def __call__(self, grid, block, args, shared_mem=0):
        assert len(args) == len(self.args), (self.name, len(args), len(self.args))
        for i, (arg, (ctype, pointer)) in enumerate(zip(args, self.args)):
            ctype = self.bind.get(ctype, ctype)
            where = f"{self.name} argument {i} ({ctype}{'*' if pointer else ''})"
            if pointer:
                if isinstance(arg, np.uint64):
                    assert arg == 0, where  # the null pointer
                    continue
                assert isinstance(arg, np.ndarray), (where, type(arg))
                assert arg.flags.c_contiguous, where
                assert arg.dtype.name in _POINTEES[ctype], (where, arg.dtype)
            else:
                assert type(arg) is _SCALARS[ctype], (where, type(arg))
        assert len(grid) in (1, 2) and len(block) == 1, self.name
        assert 1 <= grid[0] < 2**31 and all(1 <= g <= 65535 for g in grid[1:]), (self.name, grid)
        assert 32 <= block[0] <= 1024 and block[0] % 32 == 0, (self.name, block)
        assert 0 <= shared_mem <= 48 * 1024, (self.name, shared_mem)
        self.calls.append(self.name)


class _NumpyAsCupy:
    """NumPy under CuPy's name: the launchers' allocations and index work run on the host."""

    ndarray = np.ndarray

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def concatenate(arrays, *args, **kwargs):
        """CuPy's rule: only device arrays (a list or a scalar raises TypeError)."""
        if not all(isinstance(a, np.ndarray) for a in arrays):
            raise TypeError("Only cupy arrays can be concatenated")
        return np.concatenate(arrays, *args, **kwargs)


class _Dev(np.ndarray):
    """A NumPy array with CuPy's ``.data.ptr`` (the unscale launcher builds a pointer table)."""

    @property
    def data(self):
        return type("Mem", (), {"ptr": self.__array_interface__["data"][0]})()


@pytest.fixture
def calls(monkeypatch):
    recorded: list = []
    monkeypatch.setattr(backend, "_cupy", _NumpyAsCupy())
    monkeypatch.setattr(backend, "_cupy_error", None)
    monkeypatch.setattr(C, "function", lambda src, names, name: _Recorder(src, name, recorded))
    from ember.cuda import multi_tensor

    monkeypatch.setattr(multi_tensor, "_TABLES", {})  # keep host "device tables" out of it
    return recorded


def test_every_kernel_signature_parses():
    for fam in FAMILIES:
        import importlib

        mod = importlib.import_module(f"ember.cuda.{fam}")
        sigs = _signatures(mod.SOURCE)
        for name in mod.NAMES:
            base = name.split("<")[0]
            assert base in sigs, (mod.SOURCE, base)
            assert all(t for t, _ in sigs[base][1]), (base, sigs[base])


def _arr(shape, dtype, seed=0):
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return x.astype(np.uint16) if dtype == "uint16" else x.astype(dtype)


DT = ["float32", "float16", "uint16"]  # uint16: bf16 bit patterns, as CuPy holds them


@pytest.mark.parametrize("dt", DT)
def test_row_kernels_pass_their_signatures(calls, dt):
    from ember.cuda import attention, cross_entropy, gelu, layernorm, softmax

    x = _arr((5, 37), dt)
    y = softmax.softmax_forward(x, log=True)
    softmax.softmax_backward(y, _arr((5, 37), dt), log=False)
    t = np.arange(5, dtype=np.int64)
    loss, lse = cross_entropy.cross_entropy_forward(x, t, np.ones(5, np.float32), 0.1)
    cross_entropy.cross_entropy_forward(x, t)
    cross_entropy.cross_entropy_backward(x, t, lse, np.float32(0.2))
    cross_entropy.cross_entropy_backward(x, t, lse, np.ones(5, np.float32), np.ones(5), 0.1)
    w, b = _arr(37, dt, 1), _arr(37, dt, 2)
    _, mean, rstd = layernorm.layer_norm_forward(x, w, b, 1e-5)
    layernorm.layer_norm_forward(x, None, None, 1e-5)
    layernorm.residual_layer_norm_forward(x, x, w, None, 1e-5)
    layernorm.layer_norm_backward(x, x, w, mean, rstd)
    layernorm.layer_norm_backward(x, x, None, mean, rstd, need_b=False)
    gelu.gelu_forward(x)
    gelu.gelu_forward(x, w)
    gelu.gelu_backward(x, x, w)
    attention.causal_softmax_backward(attention.causal_softmax_forward(x, 0.5), x, 0.5)
    assert len(calls) == 16


def test_layer_norm_wide_rows_skip_the_shared_sums(calls):
    from ember.cuda import layernorm

    x = _arr((3, 7001), "float32")
    mean, rstd = np.zeros(3, np.float32), np.ones(3, np.float32)
    dx, dw, db = layernorm.layer_norm_backward(x, x, _arr(7001, "float32"), mean, rstd)
    assert dw.shape == db.shape == (7001,) and calls == ["layernorm_backward<float>"]


@pytest.mark.parametrize("cols", [6128, 6129, 6144])
def test_layer_norm_param_sums_fit_shared_memory_beside_the_static_scratch(
    calls, monkeypatch, cols
):
    """48 KiB per block (no opt-in) holds the dynamic 2 * cols floats AND the kernel's static
    ``__shared__ float scratch[32]``: 6144 columns (exactly 48 KiB dynamic) would not launch."""
    from ember.cuda import layernorm

    smem = []

    def function(src, names, name):
        rec = _Recorder(src, name, calls)

        def launch(grid, block, args, shared_mem=0):
            smem.append(shared_mem)
            rec(grid, block, args, shared_mem)

        return launch

    monkeypatch.setattr(C, "function", function)
    x = _arr((3, cols), "float32")
    mean, rstd = np.zeros(3, np.float32), np.ones(3, np.float32)
    dx, dw, db = layernorm.layer_norm_backward(x, x, _arr(cols, "float32"), mean, rstd)
    assert dw.shape == db.shape == (cols,)
    assert smem and all(s + 32 * 4 <= 48 * 1024 for s in smem), smem
    assert (smem[0] > 0) == (cols <= layernorm.MAX_COLS_PARAM_GRAD)


@pytest.mark.parametrize("dt", DT)
def test_spatial_kernels_pass_their_signatures(calls, dt):
    from ember.cuda import conv, embedding, pooling

    x = _arr((2, 3, 7, 9), dt)
    cols = conv.im2col2d(x, (3, 3), (2, 1), (1, 0), (1, 2), (4, 5))
    assert cols.shape == (27, 40)
    conv.col2im2d(cols, (2, 3, 7, 9), (3, 3), (2, 1), (1, 0), (1, 2), (4, 5))
    y, idx = pooling.max_pool2d_forward(x, (3, 2), (2, 2), (1, 0), (1, 1), (4, 4))
    assert idx.dtype == np.int32 and y.shape == (2, 3, 4, 4)
    pooling.max_pool2d_backward(y, idx.astype(np.uint8), (7, 9), (3, 2), (2, 2), (1, 0), (1, 1))
    pooling.avg_pool2d_forward(x, (2, 2), (2, 2), (0, 0), (3, 4), False)
    pooling.avg_pool2d_backward(y, (7, 9), (3, 2), (2, 2), (1, 0), True, 5)
    idx = np.array([[1, 4, 1], [0, 0, 2]], np.int64)
    out = embedding.embedding_backward(idx, _arr((2, 3, 5), dt), 6)
    assert out.shape == (6, 5) and out.dtype.name == dt
    embedding.embedding_backward(idx, _arr((2, 3, 5), dt), 6, deterministic=True)
    assert len(calls) == 8


@pytest.mark.parametrize("p,g,m", [
    ("float32", "float32", None), ("float32", "float16", "float16"),
    ("float32", "uint16", "uint16"), ("float32", "float32", "uint16"),
    ("float16", "float16", None), ("uint16", "uint16", None),
])  # fmt: skip
def test_optimizer_kernels_pass_their_signatures(calls, p, g, m):
    from ember.cuda import multi_tensor as mt

    n = 1001
    param, grad = _arr(n, p), _arr(n, g)
    model = None if m is None else _arr(n, m)
    st = [_arr(n, p) for _ in range(3)]
    mt.adam_step_(param, grad, st[0], st[1], step=3, lr=1e-3, beta1=0.9, beta2=0.99, eps=1e-8,
                  max_exp_avg_sq=st[2], model=model, inv_scale=0.5)  # fmt: skip
    mt.adam_step_(param, grad, st[0], st[1], step=1, lr=1e-3, beta1=0.9, beta2=0.99, eps=1e-8)
    mt.sgd_step_(param, grad, st[0], lr=0.1, momentum=0.9, model=model, first=True)
    mt.sgd_step_(param, grad, lr=0.1)
    assert len(calls) == 4


def test_optimizer_launchers_reject_unknown_combinations(calls):
    from ember.cuda import multi_tensor as mt

    p, g = _arr(8, "float16"), _arr(8, "float32")
    with pytest.raises(TypeError, match="no kernel for param float16, grad float32"):
        mt.sgd_step_(p, g, lr=0.1)
    with pytest.raises(ValueError, match="contiguous with 8 elements"):
        mt.sgd_step_(_arr(8, "float32"), _arr(9, "float32"), lr=0.1)


@pytest.mark.parametrize("dt", DT)
def test_unscale_launcher_passes_its_signature(calls, dt):
    from ember.cuda import multi_tensor as mt

    grads = [_arr(n, dt, n).view(_Dev) for n in (3, 1000, 1)]
    found = mt.unscale_and_check_(grads + [None, _arr(0, dt).view(_Dev)], 0.25)
    assert found.shape == () and found.dtype == np.float32
    assert calls == [f"unscale_and_check<{C.ctype(np.dtype(dt))}>"]
    mixed = [_arr(5, "float32").view(_Dev), _arr(5, "float16").view(_Dev)]
    mt.unscale_and_check_(mixed, np.float32(0.5))
    assert len(calls) == 3  # one launch per dtype present


@pytest.mark.parametrize("dt", DT)
@pytest.mark.parametrize("t,s,d", [(1, 1, 1), (17, 17, 64), (40, 9, 128), (5, 70, 33)])
def test_flash_attention_kernels_pass_their_signatures(calls, dt, t, s, d):
    from ember.cuda import flash_attention as fa

    q, k, v = _arr((2, 3, t, d), dt), _arr((2, 3, s, d), dt, 1), _arr((2, 3, s, d), dt, 2)
    assert fa.supports(q, k, v)
    out, lse = fa.flash_attention_forward(q, k, v, 0.125)
    assert out.shape == q.shape and lse.shape == (2, 3, t) and lse.dtype == np.float32
    dq, dk, dv = fa.flash_attention_backward(q, k, v, out, lse, _arr(q.shape, dt, 3), 0.125)
    assert dq.shape == q.shape and dk.shape == dv.shape == k.shape
    assert [c.split("<")[0] for c in calls] == [
        "flash_attn_forward", "flash_attn_backward_prep", "flash_attn_backward_dq",
        "flash_attn_backward_dkdv",
    ]  # fmt: skip


def test_flash_attention_supports():
    from ember.cuda import flash_attention as fa

    q = np.zeros((2, 4, 8), np.float32)
    assert fa.supports(q, q, q)
    assert not fa.supports(q, q[:1], q[:1])  # batch dims differ
    assert not fa.supports(np.zeros((2, 4, 129), np.float32), *[np.zeros((2, 4, 129))] * 2)
    assert not fa.supports(q.astype(np.float64), q, q)
    assert not fa.supports(q, q.astype(np.float16), q)
    assert not fa.supports(q[:, :0], q, q)


def test_row_kernels_leave_more_than_int32_rows_to_the_composite():
    """rows travel as a C ``int``: np.int32(rows) would raise past 2**31 - 1 (a shape stub:
    the supports() checks read only ndim, size, shape and dtype)."""
    from types import SimpleNamespace

    from ember.cuda import layernorm, softmax

    def stub(rows, cols):
        return SimpleNamespace(
            ndim=2, size=rows * cols, shape=(rows, cols), dtype=np.dtype(np.float32)
        )

    assert softmax.supports(stub(2**31 - 1, 2), 1)
    assert not softmax.supports(stub(2**31, 2), 1)
    assert layernorm.supports(stub(2**31 - 1, 2), None, None)
    assert not layernorm.supports(stub(2**31, 2), None, None)
