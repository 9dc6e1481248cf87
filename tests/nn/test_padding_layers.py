"""Zero/Constant/Reflection/Replication/CircularPad1d/2d/3d against torch's modules: forward
and input gradient for batched and unbatched inputs, int and asymmetric (and, where torch
allows it, negative) paddings, non-contiguous inputs; float64 gradcheck; reprs; errors."""

from __future__ import annotations

import pytest

import ember
import ember.nn as enn
from tests.oracle import check_op, gradcheck_op, rand, torch

tnn = torch.nn

KINDS = ["Zero", "Constant", "Reflection", "Replication", "Circular"]
PADDINGS = {
    1: [1, (2, 0), (0, 3), (1, 2)],
    2: [1, (1, 0, 2, 1), (0, 2, 0, 1), (2, 1, 1, 2)],
    3: [1, (1, 0, 0, 2, 1, 1), (0, 1, 2, 0, 1, 0)],
}


def make(lib, kind: str, nd: int, padding):
    cls = getattr(lib, f"{kind}Pad{nd}d")
    return cls(padding, 1.5) if kind == "Constant" else cls(padding)


def cases():
    for kind in KINDS:
        for nd, pads in PADDINGS.items():
            for padding in pads:
                for batched in (True, False):
                    yield kind, nd, padding, batched


@pytest.mark.parametrize("kind,nd,padding,batched", list(cases()))
def test_padding_layer_matches_torch(kind, nd, padding, batched):
    spatial = (5, 4, 6)[:nd]
    shape = ((2, 3) if batched else (3,)) + spatial
    x = rand(*shape, seed=nd)
    em, tm = make(enn, kind, nd, padding), make(tnn, kind, nd, padding)
    check_op(lambda t: (em if isinstance(t, ember.Tensor) else tm)(t), [x])
    assert repr(em) == repr(tm)
    assert em.padding == tm.padding


@pytest.mark.parametrize("kind", KINDS)
def test_padding_layers_noncontiguous_and_gradcheck(kind):
    em, tm = make(enn, kind, 2, (1, 2, 2, 0)), make(tnn, kind, 2, (1, 2, 2, 0))
    x = rand(3, 4, 5, seed=7)
    check_op(lambda t: (em if isinstance(t, ember.Tensor) else tm)(t), [x], noncontiguous=True)
    gradcheck_op(em, [rand(2, 3, 4, seed=8)])


@pytest.mark.parametrize("kind", ["Zero", "Constant", "Circular"])
def test_negative_padding_crops(kind):
    em, tm = make(enn, kind, 2, (-1, 2, 1, -2)), make(tnn, kind, 2, (-1, 2, 1, -2))
    check_op(lambda t: (em if isinstance(t, ember.Tensor) else tm)(t), [rand(2, 2, 5, 6)])


def test_constant_pad_value_and_reprs():
    for nd in (1, 2, 3):
        for args in ((2, 0.5), ((1,) * (2 * nd), -3)):
            e = getattr(enn, f"ConstantPad{nd}d")(*args)
            t = getattr(tnn, f"ConstantPad{nd}d")(*args)
            assert repr(e) == repr(t)
            assert e.value == t.value
    e, t = enn.ConstantPad1d((1, 2), 3.5), tnn.ConstantPad1d((1, 2), 3.5)
    check_op(lambda x: (e if isinstance(x, ember.Tensor) else t)(x), [rand(2, 4)])
    assert repr(enn.ZeroPad2d(1)) == "ZeroPad2d((1, 1, 1, 1))"
    assert repr(enn.ReflectionPad3d(1)) == repr(tnn.ReflectionPad3d(1))


def test_padding_errors():
    with pytest.raises(ValueError, match=r"CircularPad2d: expected 3D or 4D input \(got 2D"):
        enn.CircularPad2d(1)(ember.randn(3, 3))
    with pytest.raises(ValueError, match=r"CircularPad1d: expected 2D or 3D input \(got 4D"):
        enn.CircularPad1d(1)(ember.randn(1, 3, 3, 3))
    with pytest.raises(NotImplementedError, match="pad: Padding size 4 is not supported"):
        enn.ReflectionPad2d(1)(ember.randn(3, 3))
    with pytest.raises(RuntimeError, match="Padding size should be less than"):
        enn.ReflectionPad1d(3)(ember.randn(2, 3))
    with pytest.raises(NotImplementedError, match="pad: Padding size 2 is not supported"):
        enn.ReplicationPad1d(1)(ember.randn(3))
