"""The containers (Sequential, ModuleList, ModuleDict, ParameterList, ParameterDict) and
Flatten, Unflatten and Identity, checked against torch.nn."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

import ember
import ember.nn as enn

torch = pytest.importorskip("torch")
tnn = torch.nn


def names(it):
    return [n for n, _ in it]


# ------------------------------------------------------------------------------ containers
def test_sequential_indexing_slicing_and_editing():
    a, b, c = enn.Identity(), enn.Flatten(), enn.Identity()
    s = enn.Sequential(a, b, c)
    assert s[0] is a and s[-1] is c and len(s) == 3 and list(s) == [a, b, c]
    sl = s[1:]
    assert isinstance(sl, enn.Sequential) and list(sl) == [b, c]
    assert list(sl._modules) == ["1", "2"]  # slices keep the keys, as torch does
    with pytest.raises(IndexError, match="index 3 is out of range"):
        s[3]
    d = enn.Identity()
    s.append(d)
    s.insert(0, enn.Flatten())
    s.insert(-1, enn.Identity())
    assert [type(m).__name__ for m in s] == [
        "Flatten",
        "Identity",
        "Flatten",
        "Identity",
        "Identity",
        "Identity",
    ]
    s.extend([enn.Flatten()])
    assert len(s) == 7
    del s[0]
    assert list(s._modules) == [str(i) for i in range(6)] and s[0] is a
    assert s.pop(1) is b and len(s) == 5
    s[0] = b
    assert s[0] is b
    both = enn.Sequential(a) + enn.Sequential(b)
    assert list(both) == [a, b]
    with pytest.raises(ValueError, match="supports only objects of Sequential class"):
        s + [a]
    named = enn.Sequential(OrderedDict([("first", a), ("second", b)]))
    assert list(named._modules) == ["first", "second"] and named[1] is b


def test_sequential_forward_chains():
    s = enn.Sequential(enn.Flatten(), enn.Unflatten(1, (3, 4)), enn.Flatten(0, 1))
    x = ember.randn(2, 3, 4)
    out = s(x)
    ref = tnn.Sequential(tnn.Flatten(), tnn.Unflatten(1, (3, 4)), tnn.Flatten(0, 1))(
        torch.from_numpy(x.numpy().copy())
    )
    assert tuple(out.shape) == tuple(ref.shape) == (6, 4)
    np.testing.assert_array_equal(out.numpy(), ref.numpy())


def test_flatten_unflatten_identity_match_torch():
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    for em, tm in [
        (enn.Flatten(), tnn.Flatten()),
        (enn.Flatten(0, 2), tnn.Flatten(0, 2)),
        (enn.Flatten(-3, -2), tnn.Flatten(-3, -2)),
        (enn.Unflatten(2, (2, 2)), tnn.Unflatten(2, (2, 2))),
        (enn.Unflatten(-1, [5, 1]), tnn.Unflatten(-1, [5, 1])),
        (enn.Identity(3, k=1), tnn.Identity(3, k=1)),
    ]:
        xe = ember.tensor(x, requires_grad=True)
        xt = torch.tensor(x, requires_grad=True)
        oe, ot = em(xe), tm(xt)
        np.testing.assert_array_equal(oe.detach().numpy(), ot.detach().numpy())
        assert repr(em) == repr(tm)
        (oe * oe).sum().backward()
        (ot * ot).sum().backward()
        np.testing.assert_allclose(xe.grad.numpy(), xt.grad.numpy())
    with pytest.raises(TypeError, match="unflattened_size must be a tuple of ints"):
        enn.Unflatten(1, 4)
    with pytest.raises(TypeError, match="element of type float at pos 1"):
        enn.Unflatten(1, (2, 2.0))


def test_module_list_and_dict():
    mods = [enn.Identity() for _ in range(4)]
    ml = enn.ModuleList(mods[:2])
    ml.append(mods[2])
    ml += [mods[3]]
    assert list(ml) == mods and ml[-1] is mods[3] and len(ml) == 4
    assert isinstance(ml[1:3], enn.ModuleList) and list(ml[1:3]) == mods[1:3]
    ml.insert(1, enn.Flatten())
    assert isinstance(ml[1], enn.Flatten) and ml[2] is mods[1]
    del ml[1]
    assert list(ml) == mods and list(ml._modules) == ["0", "1", "2", "3"]
    assert ml.pop(0) is mods[0] and len(ml) == 3
    assert list(ml + enn.ModuleList([mods[0]]))[-1] is mods[0]
    with pytest.raises(IndexError, match="index 5 is out of range"):
        ml[5]
    with pytest.raises(TypeError, match="ModuleList.extend should be called with an iterable"):
        ml.extend(3)

    md = enn.ModuleDict({"b": mods[0]})
    md.update([("a", mods[1])])
    md["c"] = mods[2]
    assert list(md) == ["b", "a", "c"] and "a" in md and md["c"] is mods[2]
    assert list(md.keys()) == ["b", "a", "c"] and list(md.values())[0] is mods[0]
    assert md.pop("b") is mods[0] and len(md) == 2
    assert names(md.named_children()) == ["a", "c"]
    with pytest.raises(ValueError, match="element #0 has length 3; 2 is required"):
        md.update([("x", mods[0], 1)])
    with pytest.raises(TypeError, match="ModuleDict.update should be called with an iterable"):
        md.update(3)
    md.clear()
    assert len(md) == 0


def test_parameter_list_and_dict_register_parameters():
    pl = enn.ParameterList([ember.zeros(1), enn.Parameter(ember.ones(2))])
    pl.append(ember.ones(3))
    assert all(isinstance(p, enn.Parameter) for p in pl) and len(pl) == 3
    assert names(pl.named_parameters()) == ["0", "1", "2"]
    assert pl[-1].shape == (3,) and [p.shape for p in pl[1:]] == [(2,), (3,)]
    pl[0] = ember.full((1,), 5.0)
    assert float(pl[0]) == 5.0 and isinstance(pl[0], enn.Parameter)
    with pytest.raises(TypeError, match="ParameterList.extend should be called"):
        pl.extend(ember.ones(2))
    with pytest.raises(RuntimeError, match="ParameterList should not be called"):
        pl(1)

    pd = enn.ParameterDict({"z": ember.zeros(1), "a": ember.ones(2)})
    tpd = tnn.ParameterDict({"z": torch.zeros(1), "a": torch.ones(2)})
    assert names(pd.named_parameters()) == names(tpd.named_parameters())  # sorted, as torch
    pd2 = enn.ParameterDict(OrderedDict([("z", ember.zeros(1)), ("a", ember.ones(2))]))
    assert list(pd2) == ["z", "a"]
    pd["m"] = ember.ones(1)
    assert isinstance(pd["m"], enn.Parameter) and "m" in pd and len(pd) == 3
    assert list(pd.keys()) == ["a", "z", "m"] and pd.get("nope", 1) == 1
    assert pd.pop("m").shape == (1,) and len(pd) == 2
    merged = pd | enn.ParameterDict({"q": ember.ones(1)})
    assert list(merged) == ["a", "z", "q"]
    with pytest.raises(TypeError, match="not a string"):
        pd[1] = ember.ones(1)
    with pytest.raises(RuntimeError, match="ParameterDict should not be called"):
        pd(1)
