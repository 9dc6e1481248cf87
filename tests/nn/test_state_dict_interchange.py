"""State dicts move both ways between Ember and PyTorch through safetensors files, for a model
with Linear, Conv2d, BatchNorm2d, LayerNorm and Embedding layers (issue 3)."""

from __future__ import annotations

import numpy as np
import pytest

import ember
import ember.nn as enn

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")
tnn = torch.nn


def _model(nn, framework):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 8, padding_idx=0)
            self.conv = nn.Conv2d(3, 4, kernel_size=3, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(4)
            self.layers = nn.Sequential(nn.Linear(4 * 4 * 4 + 8, 16), nn.ReLU(), nn.Linear(16, 5))
            self.norm = nn.LayerNorm(5)

        def forward(self, img, tok):
            h = framework.relu(self.bn(self.conv(img))).flatten(1)
            h = framework.cat([h, self.emb(tok).mean(1)], 1)
            return self.norm(self.layers(h))

    return Net()


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    img = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    tok = rng.integers(0, 10, (2, 3))
    return img, tok


def _train_a_little(model, framework, steps=2):
    """Run training-mode forwards so BatchNorm's running stats and counter move."""
    img, tok = _inputs(1)
    with framework.no_grad():
        for _ in range(steps):
            model(framework.tensor(img), framework.tensor(tok))


def _compare_outputs(e_model, t_model):
    e_model.eval()
    t_model.eval()
    img, tok = _inputs(2)
    with ember.no_grad():
        out_e = e_model(ember.tensor(img), ember.tensor(tok)).numpy()
    with torch.no_grad():
        out_t = t_model(torch.tensor(img), torch.tensor(tok)).numpy()
    np.testing.assert_allclose(out_e, out_t, rtol=1e-5, atol=1e-5)


def test_keys_and_shapes_are_torchs():
    e_sd = _model(enn, ember).state_dict()
    t_sd = _model(tnn, torch).state_dict()
    assert list(e_sd) == list(t_sd)
    for k in t_sd:
        assert tuple(e_sd[k].shape) == tuple(t_sd[k].shape), k
        assert e_sd[k].dtype.name == str(t_sd[k].dtype).removeprefix("torch."), k


def test_ember_file_loads_into_torch(tmp_path):
    e_model = _model(enn, ember)
    _train_a_little(e_model, ember)
    path = tmp_path / "ember.safetensors"
    ember.save(e_model.state_dict(), path)
    t_model = _model(tnn, torch)
    missing, unexpected = t_model.load_state_dict(safetensors_torch.load_file(path), strict=True)
    assert not missing and not unexpected
    assert int(t_model.bn.num_batches_tracked) == 2
    _compare_outputs(e_model, t_model)


def test_torch_file_loads_into_ember(tmp_path):
    t_model = _model(tnn, torch)
    _train_a_little(t_model, torch)
    path = tmp_path / "torch.safetensors"
    safetensors_torch.save_file(t_model.state_dict(), path)
    e_model = _model(enn, ember)
    result = e_model.load_state_dict(ember.load(path), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert int(e_model.bn.num_batches_tracked.item()) == 2
    _compare_outputs(e_model, t_model)


def test_ember_round_trip_through_a_file(tmp_path):
    a = _model(enn, ember)
    _train_a_little(a, ember)
    ember.save(a.state_dict(), tmp_path / "a.safetensors")
    b = _model(enn, ember)
    b.load_state_dict(ember.load(tmp_path / "a.safetensors"))
    for (k, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        np.testing.assert_array_equal(va.numpy(), vb.numpy(), err_msg=k)


def test_shape_mismatch_names_the_key_and_both_shapes():
    sd = _model(enn, ember).state_dict()
    sd["layers.0.weight"] = ember.zeros(3, 3)
    with pytest.raises(
        RuntimeError,
        match=r"layers\.0\.weight.*\(3, 3\).*\(16, 72\)|"
        r"layers\.0\.weight.*\[3, 3\].*\[16, 72\]",
    ):
        _model(enn, ember).load_state_dict(sd)
