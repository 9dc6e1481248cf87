"""CI without a GPU: ember.cuda and every launcher import with CuPy absent, import nothing of
CuPy, and a launcher called without CuPy raises ember.tensor.backend's clear RuntimeError.
Plus the host-side helpers (dtype mapping, bf16 bit casts, launch geometry, source inlining)."""

from __future__ import annotations

import importlib
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest

from ember.cuda import FAMILIES
from ember.cuda import compile as C

_NO_CUPY = """
import sys
sys.modules["cupy"] = None  # any `import cupy` now raises ImportError
import importlib
import numpy as np
from ember.cuda import FAMILIES
mods = {f: importlib.import_module("ember.cuda." + f) for f in FAMILIES}
x = np.ones((2, 8), np.float32)
g = np.ones(8, np.float32)
calls = {
    "softmax": lambda m: m.softmax_forward(x),
    "cross_entropy": lambda m: m.cross_entropy_forward(x, np.zeros(2, np.int64)),
    "layernorm": lambda m: m.layer_norm_forward(x, None, None, 1e-5),
    "gelu": lambda m: m.gelu_forward(x),
    "embedding": lambda m: m.embedding_backward(np.zeros(2, np.int64), x, 4),
    "multi_tensor": lambda m: m.unscale_and_check_([g], 0.5),
    "conv": lambda m: m.im2col2d(np.ones((1, 1, 4, 4), np.float32), (2, 2), (1, 1), (0, 0),
                                  (1, 1), (3, 3)),
    "pooling": lambda m: m.max_pool2d_forward(np.ones((1, 4, 4), np.float32), (2, 2), (2, 2),
                                              (0, 0), (1, 1), (2, 2)),
    "attention": lambda m: m.causal_softmax_forward(np.ones((3, 3), np.float32), 1.0),
    "flash_attention": lambda m: m.flash_attention_forward(x, x, x, 1.0),
}
assert set(calls) == set(FAMILIES)
for fam, call in calls.items():
    try:
        call(mods[fam])
    except RuntimeError as exc:
        assert "CUDA is not available" in str(exc), (fam, exc)
    else:
        raise AssertionError(fam + ": launched without CuPy")
m = mods["multi_tensor"]
try:
    m.adam_step_(g, g, g.copy(), g.copy(), step=1, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8)
except RuntimeError as exc:
    assert "CUDA is not available" in str(exc)
else:
    raise AssertionError("adam_step_ launched without CuPy")
print("ok")
"""


def _run(code: str) -> str:
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_launchers_import_and_fail_clearly_without_cupy():
    assert _run(_NO_CUPY).strip() == "ok"


def test_importing_the_launchers_does_not_import_cupy():
    code = (
        "import sys, importlib\nfrom ember.cuda import FAMILIES\n"
        "[importlib.import_module('ember.cuda.' + f) for f in FAMILIES]\n"
        "import ember.nn, ember.optim\nprint('cupy' in sys.modules)"
    )
    assert _run(code).strip() == "False"


def test_every_family_module_lists_its_kernels():
    for fam in FAMILIES:
        mod = importlib.import_module(f"ember.cuda.{fam}")
        assert (C.KERNEL_DIR / mod.SOURCE).is_file()
        assert len(set(mod.NAMES)) == len(mod.NAMES) > 0


def test_kernels_enabled_follows_the_environment(monkeypatch):
    monkeypatch.delenv("EMBER_CUDA_KERNELS", raising=False)
    assert C.kernels_enabled()
    monkeypatch.setenv("EMBER_CUDA_KERNELS", "0")
    assert not C.kernels_enabled()
    monkeypatch.setenv("EMBER_CUDA_KERNELS", "1")
    assert C.kernels_enabled()


def test_ctype_mapping():
    assert C.ctype(np.float32) == "float"
    assert C.ctype(np.float16) == "__half"
    assert C.ctype(ml_dtypes.bfloat16) == "__nv_bfloat16"
    assert C.ctype(np.uint16) == "__nv_bfloat16"
    assert C.ctype(np.float64) is None and C.ctype(np.int64) is None


def test_bf16_bit_casts_round_to_nearest_even():
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [
            rng.standard_normal(1000).astype(np.float32) * 100,
            np.array([0.0, -0.0, 1.0, 1.00390625, 1.01171875, 3.4e38, np.inf, -np.inf], np.float32),
        ]
    )
    bits = C.from_f32(x, np.uint16)
    assert bits.dtype == np.uint16
    np.testing.assert_array_equal(bits, x.astype(ml_dtypes.bfloat16).view(np.uint16))
    back = C.to_f32(bits)
    np.testing.assert_array_equal(back, x.astype(ml_dtypes.bfloat16).astype(np.float32))
    np.testing.assert_array_equal(C.to_f32(np.float16([1.5])), np.float32([1.5]))
    assert C.from_f32(x[::2], np.float16).dtype == np.float16  # non-contiguous input


def test_launch_geometry():
    assert C.blocks_for(0, 256) == 1
    assert C.blocks_for(257, 256) == 2
    assert C.blocks_for(10**12, 256) == 65535 * 8
    assert C.row_threads(1) == 32
    assert C.row_threads(1000, 4) == 256
    assert C.row_threads(10**6, 4) == 1024
    assert C.row_threads(10**6, 4, 512) == 512
    assert all(C.row_threads(n) % 32 == 0 for n in range(1, 5000, 37))


def test_source_inlines_the_common_header():
    text = C.source("softmax.cu")
    assert '#include "_common.cu"' not in text
    assert "__device__ __forceinline__ float warp_sum" in text
    assert "#pragma once" not in text


def test_function_rejects_an_uninstantiated_name():
    with pytest.raises(KeyError, match="not among the instantiated kernels"):
        C.function("softmax.cu", ("softmax_forward<float, false>",), "softmax_forward<double>")


def test_cast_goes_through_fp32_for_bf16_bits():
    x = np.array([1.5, -2.25, 3.0], np.float32)
    bits = C.cast(x, np.uint16)
    np.testing.assert_array_equal(bits, x.astype(ml_dtypes.bfloat16).view(np.uint16))
    np.testing.assert_array_equal(C.cast(bits, np.float32), x)
    assert C.cast(x, np.float32) is x
    assert C.cast(x, np.float16).dtype == np.float16
