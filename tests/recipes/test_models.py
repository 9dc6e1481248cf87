"""The recipe models and data modules: the GPT against PyTorch, sampling, optimizer wiring,
and the data splits."""

from __future__ import annotations

import functools

import numpy as np
import pytest

import ember
import ember.nn.functional as F
from ember.recipes.data import CharDataModule, MNISTDataModule, _evenly_spaced
from ember.recipes.models import CNNMNIST, GPT, MLP, GPTModule, ResNetCIFAR
from ember.recipes.models.gpt import sample_next


def test_gpt_matches_the_pytorch_reference_forward_and_gradients():
    torch = pytest.importorskip("torch")
    from benchmarks import models

    torch.manual_seed(0)
    ref = models.gpt(torch.nn, torch.nn.functional)
    ours = GPT(
        models.GPT_VOCAB, models.GPT_BLOCK, models.GPT_LAYERS, models.GPT_HEADS, models.GPT_EMBD
    )
    models.copy_weights(ref, ours)  # same state-dict keys: a faithful port
    rng = np.random.default_rng(0)
    idx = rng.integers(0, models.GPT_VOCAB, (2, 24))
    tgt = rng.integers(0, models.GPT_VOCAB, (2, 24))
    t_logits = ref(torch.tensor(idx), torch.arange(24))
    t_loss = torch.nn.functional.cross_entropy(
        t_logits.reshape(-1, 65), torch.tensor(tgt).reshape(-1)
    )
    t_loss.backward()
    logits = ours(ember.tensor(idx))
    loss = F.cross_entropy(logits.view(-1, 65), ember.tensor(tgt).view(-1))
    loss.backward()
    np.testing.assert_allclose(
        logits.detach().numpy(), t_logits.detach().numpy(), rtol=1e-4, atol=1e-5
    )
    grads = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(
            p.grad.numpy(), grads[name].grad.numpy(), rtol=1e-3, atol=1e-5, err_msg=name
        )


def test_gpt_init_and_errors():
    model = GPT(10, 8, n_layer=2, n_head=2, n_embd=16)
    std = model.h[0].attn.c_proj.weight.detach().numpy().std()
    assert 0.005 < std < 0.015  # 0.02 / sqrt(2 * n_layer) = 0.01
    assert np.all(model.h[0].mlp.c_fc.bias.detach().numpy() == 0)
    with pytest.raises(ValueError, match="sequence length 9 exceeds block_size 8"):
        model(ember.zeros(1, 9, dtype=ember.int64))
    with pytest.raises(ValueError, match=r"n_embd \(16\) must be divisible by n_head \(3\)"):
        GPT(10, 8, n_head=3, n_embd=16)


def test_sample_next_temperature_and_top_k():
    logits = np.array([0.0, 3.0, 2.9, -1.0], np.float32)
    rng = np.random.default_rng(0)
    assert sample_next(logits, 0.0, None, rng) == 1
    assert sample_next(logits, 1.0, 1, rng) == 1
    draws = [sample_next(logits, 1.0, 2, rng) for _ in range(400)]
    assert set(draws) == {1, 2}
    draws = np.array([sample_next(logits, 1.0, None, rng) for _ in range(4000)])
    p = np.exp(logits - logits.max())
    p /= p.sum()
    np.testing.assert_allclose(np.bincount(draws, minlength=4) / 4000, p, atol=0.03)


def test_gpt_module_vocabulary_and_generation():
    chars = "\nabc "
    module = GPTModule(len(chars), block_size=8, n_layer=1, n_head=2, n_embd=16, chars=chars)
    assert module.decode(module.encode("ab c")) == "ab c"
    with pytest.raises(ValueError, match=r"outside the vocabulary: \['z'\]"):
        module.encode("az")
    with pytest.raises(ValueError, match="chars holds 5 characters but vocab_size is 4"):
        GPTModule(4, chars=chars)
    state = ember.get_rng_state()
    a = module.sample_text("ab", 20, 0.8, 3, np.random.default_rng(1))
    b = module.sample_text("ab", 20, 0.8, 3, np.random.default_rng(1))
    assert a == b and a.startswith("ab") and len(a) == 22  # contexts longer than block: cropped
    assert np.array_equal(ember.get_rng_state().numpy(), state.numpy())  # training RNG untouched
    assert module.training


def test_recipe_module_optimizer_and_scheduler_wiring():
    with pytest.raises(ValueError, match="no optimizer"):
        MLP(input_dim=4, hidden=[3]).configure_optimizers()
    opt_factory = functools.partial(ember.optim.AdamW, lr=1e-2, weight_decay=0.5)
    model = MLP(input_dim=4, hidden=[3], optimizer=opt_factory)
    opt = model.configure_optimizers()
    decay, no_decay = opt.param_groups
    assert [p.dim() for p in decay["params"]] == [2, 2] and decay["weight_decay"] == 0.5
    assert [p.dim() for p in no_decay["params"]] == [1, 1] and no_decay["weight_decay"] == 0.0
    assert "optimizer" not in model.hparams and model.hparams.hidden == [3]


def test_classifier_shapes():
    x = ember.randn(2, 1, 28, 28)
    assert CNNMNIST(channels=[4, 8], hidden=16)(x).shape == (2, 10)
    assert MLP()(x).shape == (2, 10)
    net = ResNetCIFAR(num_blocks=[1, 1], width=4)
    assert net(ember.randn(2, 3, 32, 32)).shape == (2, 10)
    assert sum(p.numel() for p in ResNetCIFAR().parameters()) == 11_173_962  # ResNet-18's count


def test_validation_windows_are_spread_and_do_not_overlap():
    assert _evenly_spaced(100, 16, None) == [0, 16, 32, 48, 64, 80, 96]
    assert _evenly_spaced(100, 16, 3) == [0, 48, 96]
    dm = CharDataModule("abcdefghij" * 50, block_size=8, batch_size=4, val_windows=None)
    dm.setup("fit")
    assert dm.model_kwargs() == {"vocab_size": 10, "chars": "abcdefghij"}
    val = dm._dataset("val").data  # 50 characters: 42 windows, starting every 8th -> 6
    (x, y) = next(iter(dm.val_dataloader()))
    assert x.shape == (6, 8)
    np.testing.assert_array_equal(x.numpy(), [val[s : s + 8] for s in range(0, 42, 8)])
    np.testing.assert_array_equal(y.numpy(), [val[s + 1 : s + 9] for s in range(0, 42, 8)])


def test_mnist_holdout_split(data_dir):
    dm = MNISTDataModule(root=data_dir)
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set)) == (8000, 2000)
    assert not set(dm.train_set.indices) & set(dm.val_set.indices)
    with pytest.raises(ValueError, match="exceeds the 10000 images"):
        bad = MNISTDataModule(root=data_dir, holdout_train=9000, holdout_val=2000)
        bad.setup("fit")
