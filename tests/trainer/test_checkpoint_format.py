"""The checkpoint file: one safetensors file that plain safetensors and PyTorch can read, a JSON
metadata document, checksums that catch damage, no pickle ever, and clear errors."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest

import ember
from ember.callbacks import Callback
from ember.trainer import Trainer
from ember.trainer.checkpoint_io import CheckpointError, read_checkpoint
from tests.trainer.resume_helpers import QUIET, DropoutNet, fit, loaders, weights


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A checkpoint written after two epochs of the small run, and that run's model."""
    root = tmp_path_factory.mktemp("fmt")
    trainer, model = fit(str(root), max_epochs=2)
    path = str(root / "model.ckpt")
    trainer.save_checkpoint(path)
    return path, trainer, model


def _metadata(path):
    from safetensors import safe_open

    with safe_open(path, framework="np") as f:
        return f.metadata(), list(f.keys())


def test_plain_safetensors_reads_it_with_model_keys_unprefixed(saved):
    from safetensors.numpy import load_file

    path, _, model = saved
    tensors = load_file(path)
    state = model.state_dict()
    for key, value in state.items():
        np.testing.assert_array_equal(tensors[key], value.numpy())
    others = [k for k in tensors if k not in state]
    assert others and all("/" in k for k in others)  # namespaced, never a module key
    assert any(k.startswith("optimizer_states/0/state/") for k in others)
    assert {"rng_states/ember", "rng_states/numpy/state", "rng_states/python/state"} <= set(others)


def test_pytorch_loads_the_weights(saved):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    path, _, model = saved

    class TorchNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = torch.nn.Linear(4, 16)
            self.drop = torch.nn.Dropout(0.3)
            self.fc2 = torch.nn.Linear(16, 2)

        def forward(self, x):
            return self.fc2(self.drop(torch.relu(self.fc1(x))))

    net = TorchNet().eval()
    result = net.load_state_dict(load_file(path), strict=False)
    assert result.missing_keys == []
    assert result.unexpected_keys and all("/" in k for k in result.unexpected_keys)
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    model.eval()
    np.testing.assert_allclose(
        net(torch.from_numpy(x)).detach().numpy(),
        model(ember.tensor(x)).detach().numpy(),
        rtol=1e-6,
        atol=1e-6,
    )
    model.train()


def test_metadata_is_one_json_document(saved):
    path, trainer, _ = saved
    meta, keys = _metadata(path)
    assert meta["format"] == "pt"
    doc = json.loads(meta["ember_checkpoint"])
    assert doc["format"] == "ember.checkpoint" and doc["format_version"] == 1
    assert doc["ember_version"] == ember.__version__
    assert (doc["epoch"], doc["global_step"]) == (2, 20)
    assert doc["checksum"] == "sha256" and set(doc["checksums"]) == set(keys)
    assert doc["state_dict"] == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    text = meta["ember_checkpoint"]
    for word in (
        "batches_that_stepped",
        "batches_consumed",
        "base_seed",
        "hyper_parameters",
        "lr_schedulers",
        "step_size",
        "train_loss_epoch",
    ):
        assert word in text, word


def test_checkpoint_dict_round_trip(saved):
    path, trainer, model = saved
    ckpt = read_checkpoint(path)
    assert (ckpt["epoch"], ckpt["global_step"]) == (2, 20)
    assert ckpt["hyper_parameters"] == {"hidden": 16, "lr": 0.1, "p": 0.3}
    loop = ckpt["loops"]["fit_loop"]
    assert loop["progress"] == trainer._progress.state_dict()
    loader = loop["dataloader"]["state"]
    sampler = loader["sampler"]["sampler"]  # as it was when the epoch in progress began
    assert loader["batches_consumed"] == 10 and loop["epoch_complete"]
    assert sampler["epoch"] == 1 and sampler["yielded"] == 0 and sampler["base_seed"] > 0
    assert ckpt["lr_schedulers"][0]["last_epoch"] == 20
    opt = ckpt["optimizer_states"][0]
    assert opt["param_groups"][0]["momentum"] == 0.9 and set(opt["state"]) == {0, 1, 2, 3}
    live = trainer.optimizers[0].state_dict()["state"]
    for i in range(4):
        np.testing.assert_array_equal(
            opt["state"][i]["momentum_buffer"], live[i]["momentum_buffer"].numpy()
        )
    for a, b in zip(ckpt["state_dict"].values(), weights(model)):
        np.testing.assert_array_equal(a.numpy(), b)
    assert ckpt["rng_states"]["ember"].dtype == np.uint8


def test_pickle_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(CheckpointError, match=f"not an Ember checkpoint: {path}.*pickle"):
        Trainer(**QUIET, logger=False).fit(DropoutNet(), loaders()[0], ckpt_path=path)
    with pytest.raises(CheckpointError, match="not an Ember checkpoint"):
        DropoutNet.load_from_checkpoint(path)
    assert not marker.exists()


def test_other_files_are_not_checkpoints(tmp_path):
    from safetensors.numpy import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"w": np.ones(3, np.float32)}, str(plain))
    with pytest.raises(CheckpointError, match=f"not an Ember checkpoint: {plain}.*without Ember"):
        read_checkpoint(plain)
    zipped = tmp_path / "torch.ckpt"
    zipped.write_bytes(b"PK\x03\x04" + b"\0" * 64)
    with pytest.raises(CheckpointError, match="zip archive"):
        read_checkpoint(zipped)
    with pytest.raises(CheckpointError, match="it is a directory"):
        read_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        read_checkpoint(tmp_path / "missing.ckpt")


def test_truncated_files_are_caught(saved, tmp_path):
    path, _, _ = saved
    raw = open(path, "rb").read()
    bad = tmp_path / "cut.ckpt"
    for size in (0, 5, 8, 100, len(raw) // 2, len(raw) - 1):
        bad.write_bytes(raw[:size])
        with pytest.raises(CheckpointError, match=f"{bad}"):
            read_checkpoint(bad)


def test_every_sampled_bit_flip_is_caught(saved, tmp_path):
    """Flips in the length prefix, the header (tensor entries, metadata JSON, padding) and
    the data: each one is an error that names the file."""
    path, _, _ = saved
    raw = bytearray(open(path, "rb").read())
    header_end = 8 + int.from_bytes(raw[:8], "little")
    rng = np.random.default_rng(0)
    positions = (
        list(range(8))
        + list(rng.integers(8, header_end, 150))
        + list(rng.integers(header_end, len(raw), 100))
    )
    bad = tmp_path / "flipped.ckpt"
    for pos in positions:
        data = bytearray(raw)
        data[pos] ^= 1 << int(rng.integers(0, 8))
        bad.write_bytes(bytes(data))
        with pytest.raises((CheckpointError, FileNotFoundError), match=str(bad)):
            read_checkpoint(bad)


def test_other_shapes_and_keys_are_listed(saved):
    path, _, _ = saved

    class Wider(DropoutNet):
        def __init__(self):
            super().__init__(hidden=8)
            self.extra = ember.nn.Linear(2, 2)

    with pytest.raises(RuntimeError) as info:
        Trainer(**QUIET, logger=False, max_epochs=3).fit(Wider(), loaders()[0], ckpt_path=path)
    text = str(info.value)
    assert str(path) in text and "Wider" in text
    assert 'Missing key(s) in state_dict: "extra.weight", "extra.bias"' in text
    assert "size mismatch for fc1.weight" in text and "size mismatch for fc2.weight" in text
    with pytest.raises(RuntimeError, match="size mismatch for fc1.weight"):
        DropoutNet.load_from_checkpoint(path, hidden=8)  # an override that does not fit
    model = DropoutNet.load_from_checkpoint(path, p=0.5)
    assert model.fc1.weight.shape == (16, 4) and model.drop.p == 0.5


def test_weights_only(saved, tmp_path):
    _, trainer, model = saved
    path = tmp_path / "w.ckpt"
    trainer.save_checkpoint(path, weights_only=True)
    ckpt = read_checkpoint(path)
    assert set(ckpt) == {
        "epoch",
        "global_step",
        "ember_version",
        "state_dict",
        "hparams_name",
        "hyper_parameters",
    }
    again = DropoutNet.load_from_checkpoint(path)
    for a, b in zip(weights(again), weights(model)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="weights_only=True"):
        Trainer(**QUIET, logger=False).fit(DropoutNet(), loaders()[0], ckpt_path=path)


def test_hooks_add_json_and_arrays_and_callback_state_travels(tmp_path):
    seen = {}

    class Counter(Callback):
        def __init__(self, name):
            self.name, self.count = name, 0

        @property
        def state_key(self):
            return self._generate_state_key(name=self.name)

        def on_train_batch_end(self, *args):
            self.count += 1

        def state_dict(self):
            return {"count": self.count, "best": float("inf")}

        def load_state_dict(self, state):
            seen[self.name] = state

        def on_save_checkpoint(self, trainer, pl_module, checkpoint):
            checkpoint.setdefault("from_callbacks", []).append(self.name)

        def on_load_checkpoint(self, trainer, pl_module, checkpoint):
            seen[self.name + "_hook"] = checkpoint["from_callbacks"]

    class WithExtras(DropoutNet):
        def on_save_checkpoint(self, checkpoint):
            checkpoint["extras"] = {"ids": (1, 2), "scale": np.arange(3.0), "none": None}

        def on_load_checkpoint(self, checkpoint):
            seen["module"] = checkpoint["extras"]

    path = tmp_path / "x.ckpt"
    trainer = Trainer(**QUIET, logger=False, max_steps=3, callbacks=[Counter("a"), Counter("b")])
    trainer.fit(WithExtras(), loaders()[0])
    trainer.callbacks[0].count = 5
    trainer.save_checkpoint(path)
    Trainer(**QUIET, logger=False, max_steps=4, callbacks=[Counter("a"), Counter("b")]).fit(
        WithExtras(), loaders()[0], ckpt_path=path
    )
    assert seen["a"] == {"count": 5, "best": float("inf")} and seen["b"]["count"] == 3
    assert seen["a_hook"] == ["a", "b"]
    assert seen["module"]["ids"] == (1, 2) and seen["module"]["none"] is None
    np.testing.assert_array_equal(seen["module"]["scale"], np.arange(3.0))


def test_unsavable_values_are_named(tmp_path):
    class Bad(DropoutNet):
        def on_save_checkpoint(self, checkpoint):
            checkpoint["thing"] = object()

    trainer = Trainer(**QUIET, logger=False, max_steps=1)
    trainer.fit(Bad(), loaders()[0])
    with pytest.raises(
        TypeError,
        match=r"Trainer.save_checkpoint: cannot store a "
        r"builtins.object at \['thing'\]",
    ):
        trainer.save_checkpoint(tmp_path / "x.ckpt")
    assert not os.listdir(tmp_path)


def test_datamodule_state_and_saving_outside_fit(tmp_path):
    from ember.trainer import DataModule

    class Stream(DataModule):
        def __init__(self, position: int = 0):
            super().__init__()
            self.save_hyperparameters()
            self.position = position

        def train_dataloader(self):
            return loaders()[0]

        def val_dataloader(self):
            return loaders()[1]

        def state_dict(self):
            return {"position": self.position}

        def load_state_dict(self, state):
            self.position = state["position"]

    trainer = Trainer(**QUIET, logger=False, max_steps=2)
    trainer.fit(DropoutNet(), datamodule=Stream(7))
    trainer.save_checkpoint(tmp_path / "x.ckpt")
    ckpt = read_checkpoint(tmp_path / "x.ckpt")
    assert ckpt[Stream.__qualname__] == {"position": 7}  # Lightning's key
    assert ckpt["datamodule_hyper_parameters"] == {"position": 7}
    dm = Stream()
    Trainer(**QUIET, logger=False, max_steps=3).fit(
        DropoutNet(), datamodule=dm, ckpt_path=tmp_path / "x.ckpt"
    )
    assert dm.position == 7

    evaluator = Trainer(**QUIET, logger=False)  # after validate only: no optimizer, no loop
    evaluator.validate(DropoutNet(), loaders()[1], verbose=False)
    evaluator.save_checkpoint(tmp_path / "eval.ckpt")
    assert read_checkpoint(tmp_path / "eval.ckpt")["optimizer_states"] == []
