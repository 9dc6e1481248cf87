import numpy as np
import pytest

import ember
import ember.nn as nn
import ember.nn.functional as F
from tests.nn.test_attention import compare_modules, copy_state, rand
from tests.oracle import torch

D, H, FF = 8, 2, 16


def layer_pair(mode: str, **cfg):
    """A torch and an ember TransformerEncoderLayer with the same weights.

    eval mode keeps torch's default dropout (0.1, inactive); train mode uses dropout=0 so the
    two runs are deterministic."""
    dropout = 0.1 if mode == "eval" else 0.0
    torch.manual_seed(0)
    tl = torch.nn.TransformerEncoderLayer(D, H, FF, dropout=dropout, **cfg)
    el = nn.TransformerEncoderLayer(D, H, FF, dropout=dropout, **cfg)
    assert list(el.state_dict()) == list(tl.state_dict())
    copy_state(el, tl)  # strict=True: torch's state dict loads into ember's layer
    getattr(tl, mode)()
    getattr(el, mode)()
    return el, tl


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_encoder_layer_matches_torch(norm_first, activation, batch_first, mode):
    el, tl = layer_pair(mode, norm_first=norm_first, activation=activation, batch_first=batch_first)
    assert repr(el) == repr(tl)
    x = rand(3, 5, D, seed=1)
    compare_modules(el, tl, [x], lambda m, lib, a: m(a))


@pytest.mark.parametrize("mask", ["causal", "kpm", "both"])
@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_masks(mask, norm_first):
    el, tl = layer_pair("eval", norm_first=norm_first, batch_first=True)
    n, s = 2, 5
    causal = np.triu(np.full((s, s), -np.inf, np.float32), 1)
    kpm = np.zeros((n, s), bool)
    kpm[0, 3:] = True

    def call(m, lib, a):
        kw = {}
        if mask in ("causal", "both"):
            kw.update(src_mask=lib.tensor(causal), is_causal=True)
        if mask in ("kpm", "both"):
            kw["src_key_padding_mask"] = lib.tensor(kpm)
        return m(a, **kw)

    if mask == "both":
        with pytest.warns(UserWarning, match="mismatched src_key_padding_mask and src_mask"):
            compare_modules(el, tl, [rand(n, s, D, seed=2)], call)
    else:
        compare_modules(el, tl, [rand(n, s, D, seed=2)], call)


@pytest.mark.parametrize("activation", ["module", "callable"])
def test_encoder_layer_custom_activation_and_no_bias(activation):
    act_e = nn.GELU(approximate="tanh") if activation == "module" else F.silu
    act_t = (
        torch.nn.GELU(approximate="tanh") if activation == "module" else torch.nn.functional.silu
    )
    torch.manual_seed(0)
    tl = torch.nn.TransformerEncoderLayer(D, H, FF, dropout=0.0, activation=act_t, bias=False)
    el = nn.TransformerEncoderLayer(D, H, FF, dropout=0.0, activation=act_e, bias=False)
    copy_state(el, tl)
    assert el.activation_relu_or_gelu == tl.activation_relu_or_gelu
    assert repr(el) == repr(tl)
    compare_modules(el, tl, [rand(4, 2, D, seed=3)], lambda m, lib, a: m(a))


def test_encoder_layer_unbatched_and_eval_fast_path():
    el, tl = layer_pair("eval", batch_first=True, norm_first=True)
    compare_modules(el, tl, [rand(5, D, seed=4)], lambda m, lib, a: m(a))
    x = rand(2, 5, D, seed=5)
    with torch.no_grad():  # torch takes its fused inference path here
        t = tl(torch.from_numpy(x)).numpy()
    with ember.no_grad():
        e = el(ember.tensor(x)).numpy()
    np.testing.assert_allclose(e, t, atol=1e-5, rtol=1e-4)


def test_encoder_layer_dropout_is_active_in_training():
    ember.manual_seed(0)
    el = nn.TransformerEncoderLayer(D, H, FF, dropout=0.5)
    x = ember.tensor(rand(4, 2, D, seed=6))
    a, b = el(x).detach().numpy(), el(x).detach().numpy()
    assert not np.allclose(a, b)
    el.eval()
    np.testing.assert_array_equal(el(x).detach().numpy(), el(x).detach().numpy())


def test_state_dict_round_trip_to_torch():
    el = nn.TransformerEncoderLayer(D, H, FF, norm_first=True)
    tl = torch.nn.TransformerEncoderLayer(D, H, FF, norm_first=True)
    missing, unexpected = tl.load_state_dict(
        {k: torch.from_numpy(v.numpy().copy()) for k, v in el.state_dict().items()}, strict=True
    )
    assert not missing and not unexpected
    el.eval()
    tl.eval()
    x = rand(3, 2, D, seed=7)
    with torch.no_grad():
        t = tl(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(el(ember.tensor(x)).detach().numpy(), t, atol=1e-5, rtol=1e-4)


def test_bad_activation():
    with pytest.raises(RuntimeError, match="activation should be relu/gelu, not tanh"):
        nn.TransformerEncoderLayer(D, H, activation="tanh")


@pytest.mark.parametrize("with_norm", [False, True])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_transformer_encoder_matches_torch(with_norm, mode):
    el, tl = layer_pair(mode, batch_first=True, norm_first=True)
    torch.manual_seed(1)
    te = torch.nn.TransformerEncoder(
        tl, 2, norm=torch.nn.LayerNorm(D) if with_norm else None, enable_nested_tensor=False
    )
    ee = nn.TransformerEncoder(
        el, 2, norm=nn.LayerNorm(D) if with_norm else None, enable_nested_tensor=False
    )
    assert list(ee.state_dict()) == list(te.state_dict())
    assert repr(ee) == repr(te)
    assert ee.layers[0] is not ee.layers[1] and ee.layers[0] is not el
    copy_state(ee, te)
    getattr(ee, mode)()
    getattr(te, mode)()
    s = 5
    causal = np.triu(np.full((s, s), -np.inf, np.float32), 1)
    compare_modules(
        ee, te, [rand(2, s, D, seed=8)], lambda m, lib, a: m(a, mask=lib.tensor(causal))
    )
    compare_modules(ee, te, [rand(2, s, D, seed=9)], lambda m, lib, a: m(a))
