"""autocast's op policy, op by op, against PyTorch's: the output dtype of every op for float32,
low-precision, mixed and float64 inputs.

Ember applies torch's CUDA policy on every device type (ember/amp/autocast.py says why). The
oracle is torch's CUDA autocast itself, run without a GPU on FakeTensors that claim the cuda
device (the autocast dispatch key follows the tensor's device); a few ops that the fake tensors
cannot run are compared with torch's CPU autocast, where both policies agree.
"""

from __future__ import annotations

import numpy as np
import pytest

import ember
import ember.nn.functional as EF

torch = pytest.importorskip("torch")
TF = torch.nn.functional
fake = pytest.importorskip("torch._subclasses.fake_tensor")

LOWS = {"float16": (ember.float16, torch.float16), "bfloat16": (ember.bfloat16, torch.bfloat16)}

# name -> (fn(T, F, *tensors), input specs, oracle). Specs: (shape, kind) with kind in f32,
# low, f64, long (class targets), pos (probabilities in (0, 1), float32 unless "pos-low").
CASES = {
    "matmul": (lambda t, f, a, b: t.matmul(a, b), [((4, 8), "f32"), ((8, 5), "f32")], "cuda"),
    "matmul_mixed": (lambda t, f, a, b: a @ b, [((4, 8), "low"), ((8, 5), "f32")], "cuda"),
    "matmul_f64": (lambda t, f, a, b: a @ b, [((4, 8), "f64"), ((8, 5), "f64")], "cuda"),
    "matmul_batched": (lambda t, f, a, b: a @ b, [((2, 4, 8), "f32"), ((8, 5), "f32")], "cuda"),
    "mm": (lambda t, f, a, b: t.mm(a, b), [((4, 8), "f32"), ((8, 5), "f32")], "cuda"),
    "bmm": (lambda t, f, a, b: t.bmm(a, b), [((2, 4, 8), "f32"), ((2, 8, 3), "f32")], "cuda"),
    # on torch's CUDA list (AT_FORALL_LOWER_PRECISION_FP), not its CPU one; FakeTensors
    # cannot run it, so the expectation is the list's: the autocast dtype
    "mv": (lambda t, f, a, b: t.mv(a, b), [((4, 8), "f32"), ((8,), "f32")], "low"),
    "linear": (
        lambda t, f, x, w, b: f.linear(x, w, b),
        [((3, 8), "f32"), ((5, 8), "f32"), ((5,), "f32")],
        "cuda",
    ),
    "linear_low_input": (
        lambda t, f, x, w: f.linear(x, w),
        [((3, 8), "low"), ((5, 8), "f32")],
        "cuda",
    ),
    "conv1d": (
        lambda t, f, x, w, b: f.conv1d(x, w, b, padding=1),
        [((2, 3, 9), "f32"), ((4, 3, 3), "f32"), ((4,), "f32")],
        "cuda",
    ),
    "conv2d": (
        lambda t, f, x, w: f.conv2d(x, w, stride=2),
        [((2, 3, 8, 8), "f32"), ((4, 3, 3, 3), "f32")],
        "cuda",
    ),
    "conv_transpose2d": (
        lambda t, f, x, w: f.conv_transpose2d(x, w),
        [((2, 3, 5, 5), "f32"), ((3, 4, 3, 3), "f32")],
        "cuda",
    ),
    "sdpa": (
        lambda t, f, q, k, v: f.scaled_dot_product_attention(q, k, v, is_causal=True),
        [((2, 2, 5, 8), "f32"), ((2, 2, 5, 8), "f32"), ((2, 2, 5, 8), "f32")],
        "cpu",
    ),
    "softmax": (lambda t, f, x: f.softmax(x, -1), [((4, 8), "low")], "cuda"),
    "softmax_f32": (lambda t, f, x: f.softmax(x, -1), [((4, 8), "f32")], "cuda"),
    "softmax_f64": (lambda t, f, x: f.softmax(x, -1), [((4, 8), "f64")], "cuda"),
    "log_softmax": (lambda t, f, x: f.log_softmax(x, 1), [((4, 8), "low")], "cuda"),
    "cross_entropy": (
        lambda t, f, x, y: f.cross_entropy(x, y),
        [((4, 8), "low"), ((4,), "long")],
        "cuda",
    ),
    "cross_entropy_smooth": (
        lambda t, f, x, y, w: f.cross_entropy(x, y, weight=w, label_smoothing=0.1),
        [((4, 8), "low"), ((4,), "long"), ((8,), "f32")],
        "cuda",
    ),
    "nll_loss": (lambda t, f, x, y: f.nll_loss(x, y), [((4, 8), "low"), ((4,), "long")], "cuda"),
    "mse_loss": (lambda t, f, a, b: f.mse_loss(a, b), [((4, 8), "low"), ((4, 8), "low")], "cuda"),
    "l1_loss": (lambda t, f, a, b: f.l1_loss(a, b), [((4, 8), "low"), ((4, 8), "f32")], "cuda"),
    "smooth_l1_loss": (
        lambda t, f, a, b: f.smooth_l1_loss(a, b),
        [((4, 8), "low"), ((4, 8), "low")],
        "cuda",
    ),
    "huber_loss": (
        lambda t, f, a, b: f.huber_loss(a, b),
        [((4, 8), "low"), ((4, 8), "low")],
        "cuda",
    ),
    "bce_with_logits": (
        lambda t, f, a, b: f.binary_cross_entropy_with_logits(a, b),
        [((4, 8), "low"), ((4, 8), "pos-low")],
        "cuda",
    ),
    "binary_cross_entropy": (
        lambda t, f, a, b: f.binary_cross_entropy(a, b),
        [((4, 8), "pos-low"), ((4, 8), "pos-low")],
        "cpu",  # torch's CUDA autocast refuses it; float32 (torch's CPU choice) is safe
    ),
    "kl_div": (
        lambda t, f, a, b: f.kl_div(a, b, reduction="batchmean"),
        [((4, 8), "low"), ((4, 8), "pos-low")],
        "cuda",
    ),
    "layer_norm": (
        lambda t, f, x, w, b: f.layer_norm(x, (8,), w, b),
        [((4, 8), "low"), ((8,), "f32"), ((8,), "f32")],
        "cuda",
    ),
    "group_norm": (lambda t, f, x: f.group_norm(x, 2), [((4, 8, 3), "low")], "cuda"),
    "rms_norm": (lambda t, f, x: f.rms_norm(x, (8,)), [((4, 8), "low")], "cuda"),
    "batch_norm": (
        lambda t, f, x, m, v: f.batch_norm(x, m, v, training=True),
        [((4, 8), "low"), ((8,), "f32"), ((8,), "pos")],
        "cpu",  # not on the autocast lists: the output keeps the input's dtype
    ),
    "sum": (lambda t, f, x: x.sum(), [((4, 8), "low")], "cuda"),
    "sum_dim": (lambda t, f, x: t.sum(x, dim=1), [((4, 8), "low")], "cuda"),
    "sum_dtype": (lambda t, f, x: x.sum(dtype=t.float16), [((4, 8), "low")], "cuda"),
    "mean": (lambda t, f, x: x.mean(), [((4, 8), "low")], "cuda"),
    "cumsum": (lambda t, f, x: x.cumsum(0), [((4, 8), "low")], "cuda"),
    "logsumexp": (lambda t, f, x: x.logsumexp(-1), [((4, 8), "low")], "cuda"),
    "exp": (lambda t, f, x: x.exp(), [((4, 8), "low")], "cuda"),
    "log": (lambda t, f, x: t.log(x), [((4, 8), "pos-low")], "cuda"),
    "log1p": (lambda t, f, x: x.log1p(), [((4, 8), "pos-low")], "cuda"),
    "rsqrt": (lambda t, f, x: x.rsqrt(), [((4, 8), "pos-low")], "cuda"),
    "sqrt": (lambda t, f, x: x.sqrt(), [((4, 8), "pos-low")], "cuda"),
    "tanh": (lambda t, f, x: x.tanh(), [((4, 8), "low")], "cuda"),
    "relu": (lambda t, f, x: f.relu(x), [((4, 8), "low")], "cuda"),
    "gelu": (lambda t, f, x: f.gelu(x), [((4, 8), "low")], "cuda"),
    "add_mixed": (lambda t, f, a, b: a + b, [((4, 8), "low"), ((4, 8), "f32")], "cuda"),
    "mul_mixed": (lambda t, f, a, b: a * b, [((4, 8), "low"), ((8,), "f32")], "cuda"),
    "cat_mixed": (lambda t, f, a, b: t.cat([a, b]), [((4, 8), "low"), ((4, 8), "f32")], "cuda"),
    "where_mixed": (
        lambda t, f, a, b: t.where(a > 0, a, b),
        [((4, 8), "low"), ((4, 8), "f32")],
        "cuda",
    ),
    "dot": (lambda t, f, a, b: t.dot(a, b), [((8,), "low"), ((8,), "low")], "cpu"),
    "bilinear": (
        lambda t, f, a, b, w: f.bilinear(a, b, w),
        [((3, 8), "low"), ((3, 8), "f32"), ((2, 8, 8), "f32")],
        "cuda",
    ),
    "pow_scalar": (lambda t, f, x: x**2, [((4, 8), "low")], "cuda"),
    "pow_tensor": (lambda t, f, a, b: t.pow(a, b), [((4, 8), "pos-low"), ((4, 8), "low")], "cuda"),
    "rpow": (lambda t, f, x: 2.0**x, [((4, 8), "low")], "cuda"),
    "softplus": (lambda t, f, x: f.softplus(x), [((4, 8), "low")], "cuda"),
    # one op in torch, composites of float32-listed ops (softplus, expm1) in Ember
    "mish": (lambda t, f, x: f.mish(x), [((4, 8), "low")], "cuda"),
    "logsigmoid": (lambda t, f, x: f.logsigmoid(x), [((4, 8), "low")], "cuda"),
    "elu": (lambda t, f, x: f.elu(x), [((4, 8), "low")], "cuda"),
    "selu": (lambda t, f, x: f.selu(x), [((4, 8), "low")], "cuda"),
    "celu": (lambda t, f, x: f.celu(x, 0.5), [((4, 8), "low")], "cuda"),
    "norm_fro_dim": (lambda t, f, x: t.norm(x, "fro", 1), [((4, 8), "low")], "cuda"),
    "norm_dtype": (lambda t, f, x: x.norm(dtype=x.dtype), [((4, 8), "low")], "cuda"),
    "prod": (lambda t, f, x: x.prod(), [((4, 8), "pos-low")], "cuda"),
    "prod_dim": (lambda t, f, x: t.prod(x, 1), [((4, 8), "pos-low")], "cuda"),
    "prod_dtype": (lambda t, f, x: x.prod(dtype=t.float16), [((4, 8), "pos-low")], "cuda"),
    "cumprod": (lambda t, f, x: x.cumprod(0), [((4, 8), "pos-low")], "cuda"),
    "norm": (lambda t, f, x: x.norm(), [((4, 8), "low")], "cuda"),
    "norm_p1_dim": (lambda t, f, x: t.norm(x, 1, 1), [((4, 8), "low")], "cuda"),
    "expm1": (lambda t, f, x: x.expm1(), [((4, 8), "low")], "cuda"),
    "log2": (lambda t, f, x: x.log2(), [((4, 8), "pos-low")], "cuda"),
    "reciprocal": (lambda t, f, x: x.reciprocal(), [((4, 8), "pos-low")], "cuda"),
    "acos": (lambda t, f, x: x.acos(), [((4, 8), "pos-low")], "cuda"),
    "sinh": (lambda t, f, x: x.sinh(), [((4, 8), "low")], "cuda"),
    "scatter_add_mixed": (
        lambda t, f, x, s: x.scatter_add(0, t.zeros_like(s, dtype=t.int64), s),
        [((4, 8), "low"), ((2, 8), "f32")],
        "cuda",
    ),
    "embedding": (
        lambda t, f, i, w: f.embedding(i, w),
        [((4,), "long"), ((8, 5), "f32")],
        "cuda",
    ),
    # distances: cosine_similarity is on torch's float32 list, pairwise_distance and normalize
    # reach it through norm (then the division promotes)
    "cosine_similarity": (
        lambda t, f, a, b: f.cosine_similarity(a, b),
        [((4, 8), "low"), ((4, 8), "low")],
        "cuda",
    ),
    "cosine_similarity_f32": (
        lambda t, f, a, b: f.cosine_similarity(a, b, 0),
        [((4, 8), "f32"), ((8,), "low")],
        "cuda",
    ),
    "pairwise_distance": (
        lambda t, f, a, b: f.pairwise_distance(a, b),
        [((4, 8), "low"), ((4, 8), "low")],
        "cuda",
    ),
    "normalize": (lambda t, f, x: f.normalize(x), [((4, 8), "low")], "cuda"),
    # the upsample kernels run in float32; 'area' (adaptive pooling) and pixel_shuffle do not
    "interpolate_nearest": (
        lambda t, f, x: f.interpolate(x, scale_factor=2),
        [((1, 2, 4, 4), "low")],
        "cuda",
    ),
    "interpolate_nearest_exact_1d": (
        lambda t, f, x: f.interpolate(x, size=7, mode="nearest-exact"),
        [((1, 2, 4), "low")],
        "cuda",
    ),
    "interpolate_bilinear": (
        lambda t, f, x: f.interpolate(x, size=(3, 7), mode="bilinear", align_corners=True),
        [((1, 2, 4, 4), "low")],
        "cuda",
    ),
    "interpolate_linear": (
        lambda t, f, x: f.interpolate(x, scale_factor=1.5, mode="linear"),
        [((1, 2, 4), "low")],
        "cuda",
    ),
    "interpolate_trilinear": (
        lambda t, f, x: f.interpolate(x, size=3, mode="trilinear"),
        [((1, 2, 2, 2, 2), "low")],
        "cuda",
    ),
    "interpolate_f64": (
        lambda t, f, x: f.interpolate(x, scale_factor=2, mode="bilinear"),
        [((1, 2, 4, 4), "f64")],
        "cuda",
    ),
    "interpolate_area": (
        lambda t, f, x: f.interpolate(x, size=2, mode="area"),
        [((1, 2, 4, 4), "low")],
        "cuda",
    ),
    "pixel_shuffle": (lambda t, f, x: f.pixel_shuffle(x, 2), [((1, 8, 2, 2), "low")], "cuda"),
}


def _array(shape, kind, rng):
    if kind == "long":
        return rng.integers(0, 4, size=shape).astype(np.int64)
    if kind.startswith("pos"):
        return rng.uniform(0.1, 0.9, size=shape).astype(np.float32)
    return rng.standard_normal(shape).astype(np.float32)


def _np_dtype(kind, low):
    return {"f32": "float32", "f64": "float64", "long": "int64", "pos": "float32"}.get(kind, low)


def _ember_inputs(specs, low_name, rng):
    out = []
    for shape, kind in specs:
        arr = _array(shape, kind, rng)
        t = ember.tensor(arr)
        out.append(t.to(getattr(ember, _np_dtype(kind, low_name))))
    return out


def _torch_cpu(fn, specs, low_name, rng):
    args = []
    for shape, kind in specs:
        arr = _array(shape, kind, rng)
        args.append(torch.from_numpy(arr).to(getattr(torch, _np_dtype(kind, low_name))))
    with torch.autocast("cpu", dtype=LOWS[low_name][1]):
        return fn(torch, TF, *args).dtype


def _torch_cuda(fn, specs, low_name):
    """torch's CUDA autocast on FakeTensors: only dtypes and shapes are computed."""
    with fake.FakeTensorMode():
        args = []
        for shape, kind in specs:
            dt = getattr(torch, _np_dtype(kind, low_name))
            make = torch.zeros if kind == "long" else torch.empty
            args.append(make(shape, dtype=dt, device="cuda"))
        was_on = torch.is_autocast_enabled("cuda")
        before = torch.get_autocast_dtype("cuda")
        torch.set_autocast_enabled("cuda", True)
        torch.set_autocast_dtype("cuda", LOWS[low_name][1])
        try:
            return fn(torch, TF, *args).dtype
        finally:
            torch.set_autocast_enabled("cuda", was_on)
            torch.set_autocast_dtype("cuda", before)


@pytest.mark.parametrize("low_name", sorted(LOWS))
@pytest.mark.parametrize("case", sorted(CASES))
def test_output_dtype_matches_torch_autocast(case, low_name):
    fn, specs, oracle = CASES[case]
    rng = np.random.default_rng(0)
    inputs = _ember_inputs(specs, low_name, rng)
    with ember.autocast("cpu", dtype=LOWS[low_name][0]):
        got = fn(ember, EF, *inputs).dtype
    if oracle == "cuda":
        want = _torch_cuda(fn, specs, low_name)
    elif oracle == "low":
        want = LOWS[low_name][1]
    else:
        want = _torch_cpu(fn, specs, low_name, np.random.default_rng(0))
    assert str(got).split(".")[-1] == str(want).split(".")[-1], (case, got, want)


def test_the_low_precision_ops_agree_with_torch_cpu_autocast_too():
    """Where torch's CPU and CUDA policies agree (matmul-like ops, losses, promotion), Ember
    matches torch's CPU autocast as well; the CPU policy differs only on softmax, log_softmax,
    layer/group/rms norm, sum, cumsum, cumprod, logsumexp, norm, pow, softplus and the fp32
    unary ops, which torch's CPU autocast leaves in the low dtype."""
    differ = {"softmax", "log_softmax", "layer_norm", "group_norm", "rms_norm", "sum"}
    differ |= {"sum_dim", "cumsum", "logsumexp", "exp", "log", "log1p", "rsqrt"}
    differ |= {"pow_scalar", "pow_tensor", "rpow", "softplus", "cumprod", "norm", "norm_p1_dim"}
    differ |= {"norm_fro_dim"}
    differ |= {"expm1", "log2", "reciprocal", "acos", "sinh"}
    differ |= {"mv", "bilinear"}  # torch CPU: mv stays float32, bilinear refuses mixed inputs
    differ |= {"scatter_add_mixed"}  # torch CPU refuses mixed dtypes; CUDA promotes
    differ |= {"cosine_similarity", "pairwise_distance", "normalize"}
    differ |= {"interpolate_nearest", "interpolate_nearest_exact_1d", "interpolate_bilinear"}
    differ |= {"interpolate_linear", "interpolate_trilinear"}  # torch CPU: the low dtype
    for case, (fn, specs, _) in CASES.items():
        if case in differ:
            continue
        for low_name, (low, _) in LOWS.items():
            rng = np.random.default_rng(0)
            inputs = _ember_inputs(specs, low_name, rng)
            with ember.autocast("cpu", dtype=low):
                got = fn(ember, EF, *inputs).dtype
            want = _torch_cpu(fn, specs, low_name, np.random.default_rng(0))
            assert str(got).split(".")[-1] == str(want).split(".")[-1], (case, got, want)
