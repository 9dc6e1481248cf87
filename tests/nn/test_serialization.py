"""ember.save / ember.load: one safetensors file (tensors) + JSON metadata, no pickle; state
dicts move between Ember and torch through safetensors in both directions."""

from __future__ import annotations

import json
import os
import pickle

import ml_dtypes
import numpy as np
import pytest

import ember
import ember.nn as enn

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")
from safetensors import safe_open  # noqa: E402

ALL_DTYPES = [
    ember.float32,
    ember.float64,
    ember.float16,
    ember.bfloat16,
    ember.int64,
    ember.int32,
    ember.int16,
    ember.int8,
    ember.uint8,
    ember.bool,
]


def _arr(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    vals = rng.standard_normal(shape) * 10
    if dtype is ember.bool:
        return vals > 0
    return vals.astype(dtype.np)


def same(a: ember.Tensor, b: ember.Tensor) -> bool:
    return (
        a.dtype == b.dtype
        and tuple(a.shape) == tuple(b.shape)
        and np.array_equal(
            a.numpy(force=True).astype(np.float64),
            b.numpy(force=True).astype(np.float64),
            equal_nan=True,
        )
    )


# ------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("shape", [(3, 4), (), (0,), (2, 0, 3), (2, 3, 4, 5)])
def test_tensor_round_trip_every_dtype_and_shape(tmp_path, dtype, shape):
    t = ember.tensor(_arr(shape, dtype))
    ember.save({"t": t}, tmp_path / "x.safetensors")
    back = ember.load(tmp_path / "x.safetensors")["t"]
    assert type(back) is ember.Tensor and same(back, t) and back.device == t.device
    assert back.data.flags.owndata  # a copy, not a view of the file's buffer
    assert getattr(back.data.flags, "writeable", True)  # (CuPy arrays are always writable)


def test_nested_object_round_trip(tmp_path):
    base = ember.tensor(np.arange(12, dtype=np.float32).reshape(3, 4))
    obj = {
        "model": {"layers.0.weight": base.T, "layers.0.bias": ember.zeros(4)},  # non-contig
        "optimizer": {
            "state": {
                0: {"step": ember.tensor(3.0), "exp_avg": ember.ones(3, 4)},
                1: {"step": ember.tensor(3.0), "exp_avg": ember.zeros(4)},
            },
            "param_groups": [
                {
                    "lr": 1e-3,
                    "betas": (0.9, 0.999),
                    "eps": 1e-8,
                    "weight_decay": 0,
                    "amsgrad": False,
                    "params": [0, 1],
                    "name": None,
                }
            ],
        },
        "epoch": 7,
        "best": float("inf"),
        "worst": float("-inf"),
        "unknown": float("nan"),
        "tags": ["a", "b/c", "~d"],
        "pair": (1, ember.tensor([True, False])),
        "empty": {},
        "nothing": [],
        "big": 2**70,
        "mixed": {None: 1, 2.5: "x", True: [None]},
        "np": np.arange(3, dtype=np.int16),
        "np_scalar": np.float32(1.5),
    }
    path = tmp_path / "ckpt.safetensors"
    ember.save(obj, path)
    back = ember.load(str(path))
    assert list(back) == list(obj)
    assert same(back["model"]["layers.0.weight"], base.T)
    assert back["model"]["layers.0.weight"].data.flags.c_contiguous
    st = back["optimizer"]["state"]
    assert list(st) == [0, 1] and same(st[1]["exp_avg"], ember.zeros(4))
    assert back["optimizer"]["param_groups"] == [
        {
            "lr": 1e-3,
            "betas": (0.9, 0.999),
            "eps": 1e-8,
            "weight_decay": 0,
            "amsgrad": False,
            "params": [0, 1],
            "name": None,
        }
    ]
    assert type(back["optimizer"]["param_groups"][0]["weight_decay"]) is int
    assert back["epoch"] == 7 and back["best"] == float("inf") and back["worst"] < 0
    assert np.isnan(back["unknown"]) and back["tags"] == ["a", "b/c", "~d"]
    assert isinstance(back["pair"], tuple) and back["pair"][0] == 1
    assert same(back["pair"][1], ember.tensor([True, False]))
    assert back["empty"] == {} and back["nothing"] == [] and back["big"] == 2**70
    assert back["mixed"] == {None: 1, 2.5: "x", True: [None]}
    assert isinstance(back["np"], np.ndarray) and back["np"].dtype == np.int16
    assert back["np_scalar"] == 1.5


def test_top_level_tensor_list_and_requires_grad(tmp_path):
    p = tmp_path / "t.safetensors"
    t = ember.randn(2, 3, requires_grad=True)
    ember.save(t, p)
    back = ember.load(p)
    assert same(back, t.detach()) and back.requires_grad and back.is_leaf
    ember.save([1, "two", None, True], p)
    assert ember.load(p) == [1, "two", None, True]
    ember.save(3.5, p)
    assert ember.load(p) == 3.5


def test_tensor_names_are_the_flat_keys_and_nested_keys_are_escaped(tmp_path):
    p = tmp_path / "n.safetensors"
    obj = {
        "a.b": ember.ones(1),
        "x/y": ember.ones(1),
        "t~": ember.ones(1),
        "__metadata__": ember.ones(1),
        "nest": {"k": [ember.ones(1), {"z/": ember.ones(1)}]},
        "ints": {0: ember.ones(1), "0": ember.ones(2)},
    }
    ember.save(obj, p)
    with safe_open(str(p), framework="pt") as f:
        keys = set(f.keys())
        meta = f.metadata()
    assert keys == {
        "a.b",
        "x~1y",
        "t~0",
        "__metadata__~2",
        "nest/k/0",
        "nest/k/1/z~1",
        "ints/0",
        "ints/0~2",
    }
    assert meta["format"] == "pt" and json.loads(meta["ember"])["version"] == 1
    back = ember.load(p)
    assert same(back["ints"]["0"], ember.ones(2)) and same(back["ints"][0], ember.ones(1))
    assert same(back["nest"]["k"][1]["z/"], ember.ones(1))
    assert same(back["__metadata__"], ember.ones(1))


def test_plain_safetensors_file_loads_as_a_flat_dict(tmp_path):
    p = tmp_path / "plain.safetensors"
    safetensors_torch.save_file(
        {"w": torch.ones(2, 2, dtype=torch.bfloat16), "n": torch.tensor(5)}, str(p)
    )
    back = ember.load(p)
    assert set(back) == {"w", "n"}
    assert back["w"].dtype == ember.bfloat16 and back["w"].data.dtype == ml_dtypes.bfloat16
    assert int(back["n"]) == 5 and back["n"].dtype == ember.int64


def test_numpy_arrays_keep_their_dtype_including_unsigned_rng_states(tmp_path):
    p = tmp_path / "rng.safetensors"
    mt = np.random.RandomState(3).get_state()  # ('MT19937', uint32 keys, pos, gauss...)
    pcg = np.random.default_rng(4).bit_generator.state  # big Python ints
    ember.save({"mt": mt, "pcg": pcg, "u64": np.arange(3, dtype=np.uint64)}, p)
    back = ember.load(p)
    assert back["pcg"] == pcg and back["u64"].dtype == np.uint64
    restored = np.random.RandomState()
    restored.set_state(back["mt"])
    assert back["mt"][1].dtype == np.uint32
    assert (
        restored.randint(0, 1000, 5).tolist()
        == np.random.RandomState(3).randint(0, 1000, 5).tolist()
    )
    with pytest.raises(TypeError, match=r"array of dtype complex64 at \['z'\]"):
        ember.save({"z": np.zeros(2, np.complex64)}, p)
    import safetensors.numpy

    safetensors.numpy.save_file({"u": np.zeros(2, np.uint32)}, str(p))
    with pytest.raises(RuntimeError, match="tensor 'u' has dtype uint32, which Ember tensors"):
        ember.load(p)


def test_map_location(tmp_path):
    p = tmp_path / "m.safetensors"
    ember.save({"w": ember.ones(2)}, p)
    assert ember.load(p, map_location="cpu")["w"].device == ember.device("cpu")
    assert ember.load(p, map_location={"cuda:0": "cpu"})["w"].device.type == "cpu"
    with pytest.raises(TypeError, match="map_location must be"):
        ember.load(p, map_location=lambda s, loc: s)


# ----------------------------------------------------------------------- safety and errors
def test_pickle_and_torch_files_are_refused_by_name(tmp_path):
    pk = tmp_path / "evil.pkl"
    pk.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(RuntimeError, match=r"'.*evil\.pkl' is not a safetensors file.*pickle"):
        ember.load(pk)
    tz = tmp_path / "model.pt"
    torch.save({"w": torch.ones(2)}, str(tz))
    with pytest.raises(RuntimeError, match=r"model\.pt' is not a safetensors file.*zip"):
        ember.load(tz)
    for name, data in [
        ("short.bin", b"abc"),
        ("json.bin", (5).to_bytes(8, "little") + b"[1,2]"),
        ("garbage.bin", (4).to_bytes(8, "little") + b"\xff\xfe\x00\x01"),
    ]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(RuntimeError, match=f"{name}' is not a safetensors file"):
            ember.load(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="no such file"):
        ember.load(tmp_path / "missing.safetensors")


def _write_raw(path, header: dict, data: bytes):
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data)


def test_corrupt_headers_and_metadata_give_clear_errors(tmp_path):
    p = tmp_path / "c.safetensors"
    _write_raw(p, {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8)
    with pytest.raises(RuntimeError, match="inconsistent shape"):
        ember.load(p)
    _write_raw(p, {"w": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 8)
    with pytest.raises(RuntimeError, match="dtype 'C64', which Ember does not support"):
        ember.load(p)
    _write_raw(p, {"w": [1, 2]}, b"")
    with pytest.raises(RuntimeError, match="malformed header entry for 'w'"):
        ember.load(p)
    _write_raw(p, {"__metadata__": {"ember": '{"version": 1, "tree": {"x": 1}}'}}, b"")
    with pytest.raises(RuntimeError, match="corrupt Ember metadata: unknown tag 'x'"):
        ember.load(p)
    _write_raw(p, {"__metadata__": {"ember": '{"version": 1, "tree": {"t": "nope"}}'}}, b"")
    with pytest.raises(RuntimeError, match="corrupt Ember metadata"):
        ember.load(p)
    _write_raw(p, {"__metadata__": {"ember": '{"version": 99, "tree": 1}'}}, b"")
    with pytest.raises(RuntimeError, match="unknown format version 99"):
        ember.load(p)


def test_unsupported_objects_are_refused_with_their_place(tmp_path):
    p = tmp_path / "u.safetensors"
    with pytest.raises(TypeError, match=r"cannot store a builtins\.set at \['a'\]\[0\]"):
        ember.save({"a": [{1, 2}]}, p)
    with pytest.raises(TypeError, match="dict keys must be"):
        ember.save({(1, 2): 3}, p)
    loop = []
    loop.append(loop)
    with pytest.raises(ValueError, match="contains itself"):
        ember.save(loop, p)
    with pytest.raises(TypeError, match="expected a file path"):
        ember.save({}, object())
    assert not p.exists() and os.listdir(tmp_path) == []


def test_writes_are_atomic_and_leave_no_temp_files(tmp_path):
    p = tmp_path / "ckpt.safetensors"
    ember.save({"w": ember.ones(3)}, p)
    mode = p.stat().st_mode & 0o777
    ember.save({"w": ember.zeros(3)}, p)  # overwrite
    assert same(ember.load(p)["w"], ember.zeros(3))
    assert os.listdir(tmp_path) == ["ckpt.safetensors"] and p.stat().st_mode & 0o777 == mode
    with pytest.raises(TypeError):
        ember.save({"w": ember.ones(3), "bad": object()}, p)
    assert same(ember.load(p)["w"], ember.zeros(3))  # the old file is intact
    assert os.listdir(tmp_path) == ["ckpt.safetensors"]


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    p = tmp_path / "ckpt.safetensors"
    ember.save({"w": ember.ones(3)}, p)

    def crash(src, dst):
        assert os.path.getsize(src) > 0 and os.path.dirname(src) == str(tmp_path)
        raise OSError("disk on fire")

    with monkeypatch.context() as m, pytest.raises(OSError, match="disk on fire"):
        m.setattr(os, "replace", crash)  # (undone alone: the fake-cuda setup stays in place)
        ember.save({"w": ember.zeros(3)}, p)
    assert same(ember.load(p)["w"], ember.ones(3))
    assert os.listdir(tmp_path) == ["ckpt.safetensors"]


# ------------------------------------------------------------------ interchange with torch
def make_layer(nn, lib):
    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(lib.zeros(4, 3))
            self.bias = nn.Parameter(lib.zeros(4))
            self.register_buffer("running_mean", lib.zeros(4))
            self.register_buffer("num_batches_tracked", lib.tensor(0))
            self.register_buffer("cache", lib.zeros(2), persistent=False)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.first = Layer()
            self.blocks = nn.Sequential(Layer(), Layer())
            self.low = nn.Parameter(lib.zeros(2, dtype=lib.bfloat16))

    return Model


def _fill_ember(model):
    rng = np.random.default_rng(1)
    for _, t in model.state_dict().items():
        t.data[...] = rng.standard_normal(t.shape) * 5 if t.is_floating_point() else 11


def test_ember_state_dict_loads_into_torch(tmp_path):
    em = make_layer(enn, ember)()
    _fill_ember(em)
    path = str(tmp_path / "ember.safetensors")
    ember.save(em.state_dict(), path)
    tm = make_layer(torch.nn, torch)()
    sd = safetensors_torch.load_file(path)
    result = tm.load_state_dict(sd)  # strict: every key matches
    assert not result.missing_keys and not result.unexpected_keys
    for (k, e), (k2, t) in zip(em.state_dict().items(), tm.state_dict().items()):
        assert k == k2 and str(t.dtype).split(".")[1] == e.dtype.name
        np.testing.assert_array_equal(t.float().numpy(), e.float().numpy(), err_msg=k)
    assert tm.blocks[1].num_batches_tracked.dtype == torch.int64


def test_torch_state_dict_loads_into_ember(tmp_path):
    tm = make_layer(torch.nn, torch)()
    with torch.no_grad():
        for t in tm.state_dict().values():
            t.copy_(torch.randn(t.shape) * 3 if t.is_floating_point() else torch.tensor(9))
    path = str(tmp_path / "torch.safetensors")
    safetensors_torch.save_file(tm.state_dict(), path)
    em = make_layer(enn, ember)()
    w = em.first.weight
    result = em.load_state_dict(ember.load(path))
    assert not result.missing_keys and not result.unexpected_keys
    assert em.first.weight is w  # copied in place
    for (k, t), (k2, e) in zip(tm.state_dict().items(), em.state_dict().items()):
        assert k == k2
        np.testing.assert_array_equal(t.float().numpy(), e.float().numpy(), err_msg=k)
    assert int(em.blocks[0].num_batches_tracked) == 9
    assert em.low.dtype == ember.bfloat16


def test_ember_to_file_to_ember(tmp_path):
    a, b = make_layer(enn, ember)(), make_layer(enn, ember)()
    _fill_ember(a)
    ember.save(a.state_dict(), tmp_path / "a.safetensors")
    b.load_state_dict(ember.load(tmp_path / "a.safetensors"))
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert same(x, y), k
