"""default_collate / default_convert, compared with torch's for every supported type."""

from __future__ import annotations

import collections

import numpy as np
import pytest

import ember
from ember.data import default_collate, default_convert

torch = pytest.importorskip("torch")
torch_collate = torch.utils.data.default_collate
Point = collections.namedtuple("Point", "x y")


def _same(mine, ref):
    """Structure, dtype and values of an ember batch equal torch's."""
    if isinstance(ref, torch.Tensor):
        assert isinstance(mine, ember.Tensor), type(mine)
        assert tuple(mine.shape) == tuple(ref.shape)
        assert str(mine.dtype).split(".")[-1] == str(ref.dtype).split(".")[-1]
        np.testing.assert_array_equal(mine.data, ref.numpy())
    elif isinstance(ref, dict):
        assert type(mine) is type(ref) and mine.keys() == ref.keys()
        for k in ref:
            _same(mine[k], ref[k])
    elif isinstance(ref, (list, tuple)):
        assert type(mine) is type(ref) and len(mine) == len(ref)
        for m, r in zip(mine, ref):
            _same(m, r)
    else:
        assert mine == ref


def _both(samples_fn):
    """The same samples built with ember tensors and with torch tensors."""
    return samples_fn(ember.tensor), samples_fn(torch.tensor)


CASES = {
    "float tensors": lambda t: [t(np.float32([1, 2])), t(np.float32([3, 4]))],
    "int tensors 2d": lambda t: [t(np.arange(6).reshape(2, 3)), t(np.arange(6, 12).reshape(2, 3))],
    "0-d tensors": lambda t: [t(1.5), t(2.5), t(3.5)],
    "bool tensors": lambda t: [t([True, False]), t([False, False])],
    "ints": lambda t: [1, 2, 3],
    "floats": lambda t: [1.5, 2.0, -3.25],
    "bools": lambda t: [True, False],
    "ints and floats": lambda t: [1, 2.5],
    "strings": lambda t: ["a", "bc"],
    "tuples": lambda t: [(t(np.float32([1])), 0, "a"), (t(np.float32([2])), 1, "b")],
    "lists": lambda t: [[1, 2.0], [3, 4.0]],
    "dicts": lambda t: [
        {"x": t(np.float32([1, 2])), "y": 1, "name": "p"},
        {"x": t(np.float32([3, 4])), "y": 0, "name": "q"},
    ],
    "ordered dicts": lambda t: [
        collections.OrderedDict(a=1, b=2.0),
        collections.OrderedDict(a=3, b=4.0),
    ],
    "namedtuples": lambda t: [Point(t(np.float32([1])), 2), Point(t(np.float32([3])), 4)],
    "nested": lambda t: [
        {"p": [(1, 2.0)], "q": {"r": t(np.int32([1]))}},
        {"p": [(3, 4.0)], "q": {"r": t(np.int32([2]))}},
    ],
    "numpy arrays": lambda t: [np.float32([1, 2]), np.float32([3, 4])],
    "numpy uint8 arrays": lambda t: [np.uint8([[1]]), np.uint8([[2]])],
    "numpy scalars": lambda t: [np.float32(1.5), np.float32(2.5)],
    "numpy int scalars": lambda t: [np.int16(1), np.int16(2)],
}


@pytest.mark.parametrize("name", list(CASES))
def test_default_collate_matches_torch(name):
    mine_in, ref_in = _both(CASES[name])
    _same(default_collate(mine_in), torch_collate(ref_in))


def test_collate_of_a_float_tensor_keeps_float32_and_stacks():
    out = default_collate([ember.ones(2, 3), ember.zeros(2, 3)])
    assert out.shape == (2, 2, 3) and out.dtype == ember.float32


def test_collate_mismatched_shapes_names_them():
    with pytest.raises(
        RuntimeError,
        match=r"stack expects each tensor to be equal size, but got "
        r"\(3,\) at entry 0 and \(4,\) at entry 1",
    ):
        default_collate([ember.zeros(3), ember.zeros(4)])
    with pytest.raises(RuntimeError, match=r"\(2, 2\) at entry 0 and \(2, 3\) at entry 2"):
        default_collate([np.zeros((2, 2)), np.zeros((2, 2)), np.zeros((2, 3))])


def test_collate_errors():
    with pytest.raises(RuntimeError, match="each element in list of batch should be of equal size"):
        default_collate([[1, 2], [3]])
    with pytest.raises(
        TypeError,
        match="default_collate: batch must contain tensors, numpy "
        "arrays, numbers, dicts or lists; found",
    ):
        default_collate([object(), object()])
    with pytest.raises(TypeError, match="found <U1"):
        default_collate([np.array(["a"]), np.array(["b"])])
    with pytest.raises(KeyError, match="sample 1 has keys"):
        default_collate([{"a": 1}, {"b": 2}])


def test_collate_mixed_dtypes_promote_like_torch():
    out = default_collate([ember.tensor([1, 2]), ember.tensor([1.5, 2.5])])
    ref = torch_collate([torch.tensor([1, 2]), torch.tensor([1.5, 2.5])])
    _same(out, ref)


@pytest.mark.parametrize(
    "value",
    [
        np.float32([1, 2]),
        np.int64(3),
        5,
        "s",
        (np.float32([1]), 2),
        {"a": np.float64([1.0])},
        [np.int32([1]), "x"],
        Point(np.float32([1]), 3),
    ],
)
def test_default_convert_matches_torch(value):
    _same(default_convert(value), torch.utils.data.default_convert(value))


def test_default_convert_keeps_string_arrays():
    a = np.array(["x", "y"])
    assert default_convert(a) is a
