"""Transforms: values against torch's functional forms, batches, randomness, errors."""

from __future__ import annotations

import numpy as np
import pytest

import ember
from ember.data.transforms import (
    Compose,
    Lambda,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
    ToTensor,
)


def img(*shape, seed=0):
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def test_to_tensor_hwc_uint8():
    hwc = np.random.default_rng(0).integers(0, 256, (5, 7, 3)).astype(np.uint8)
    out = ToTensor()(hwc)
    assert isinstance(out, ember.Tensor) and out.shape == (3, 5, 7)
    assert out.dtype == ember.float32 and out.data.flags.c_contiguous
    np.testing.assert_array_equal(out.data, hwc.transpose(2, 0, 1).astype(np.float32) / 255)
    torch = pytest.importorskip("torch")
    ref = torch.tensor(hwc).permute(2, 0, 1).float().div(255)
    np.testing.assert_array_equal(out.data, ref.numpy())  # bit-identical to torch's ToTensor


def test_to_tensor_other_forms():
    hw = np.arange(6, dtype=np.uint8).reshape(2, 3)
    assert ToTensor()(hw).shape == (1, 2, 3)
    nhwc = np.zeros((4, 2, 3, 3), np.uint8)
    assert ToTensor()(nhwc).shape == (4, 3, 2, 3)
    t = ember.rand(3, 4, 4)
    assert ToTensor()(t) is t  # already a float CHW tensor
    assert ToTensor()(ember.tensor(np.full((2, 2, 1), 255, np.uint8))).data.max() == 1.0
    with pytest.raises(TypeError, match="ToTensor: pic should be"):
        ToTensor()([1, 2, 3])


@pytest.mark.parametrize("shape", [(3, 4, 5), (2, 3, 4, 5)])
def test_normalize_matches_torch(shape):
    torch = pytest.importorskip("torch")
    x = img(*shape)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    out = Normalize(mean, std)(ember.tensor(x))
    ref = (torch.tensor(x) - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1)
    assert out.dtype == ember.float32
    np.testing.assert_allclose(out.data, ref.numpy(), rtol=1e-6, atol=1e-7)
    arr_out = Normalize(0.5, 0.5)(x)  # arrays in, arrays out; one value for every channel
    assert isinstance(arr_out, np.ndarray)
    np.testing.assert_allclose(arr_out, (x - 0.5) / 0.5, rtol=1e-6)


def test_normalize_inplace_and_errors():
    t = ember.tensor(img(1, 2, 2))
    before = t.data.copy()
    assert Normalize([1.0], [2.0], inplace=True)(t) is t
    np.testing.assert_allclose(t.data, (before - 1) / 2)
    with pytest.raises(ValueError, match="std evaluated to zero"):
        Normalize([0.0], [0.0])
    with pytest.raises(TypeError, match="should be a float tensor"):
        Normalize([0.0], [1.0])(ember.zeros(1, 2, 2, dtype=ember.uint8))
    with pytest.raises(ValueError, match=r"mean has 2 values for an input with 3 channels"):
        Normalize([0.0, 0.0], [1.0, 1.0])(ember.rand(3, 2, 2))
    with pytest.raises(ValueError, match=r"expected an image \(C, H, W\) or a batch"):
        Normalize([0.0], [1.0])(ember.rand(4))


def _windows(padded, size):
    """Every crop of ``padded`` (C, H, W) of the given size."""
    th, tw = size
    h, w = padded.shape[-2:]
    return [padded[:, i : i + th, j : j + tw] for i in range(h - th + 1) for j in range(w - tw + 1)]


def test_random_crop_single_image_is_a_window_of_the_padded_image():
    x = img(3, 6, 6)
    crop = RandomCrop(6, padding=2)
    padded = np.pad(x, [(0, 0), (2, 2), (2, 2)])
    seen = set()
    for _ in range(40):
        out = crop(ember.tensor(x))
        assert out.shape == (3, 6, 6)
        k = [np.array_equal(out.data, w) for w in _windows(padded, (6, 6))]
        assert sum(k) >= 1
        seen.add(k.index(True))
    assert len(seen) > 5  # really random


def test_random_crop_batch_gives_each_image_its_own_window():
    torch = pytest.importorskip("torch")
    x = img(16, 2, 5, 5)
    crop = RandomCrop(
        (3, 4), padding=(1, 2), padding_mode="reflect", generator=ember.Generator().manual_seed(0)
    )
    out = crop(ember.tensor(x))
    assert out.shape == (16, 2, 3, 4)
    padded = torch.nn.functional.pad(torch.tensor(x), (1, 1, 2, 2), mode="reflect").numpy()
    positions = []
    for n in range(16):
        wins = _windows(padded[n], (3, 4))
        matches = [i for i, w in enumerate(wins) if np.array_equal(out.data[n], w)]
        assert matches, n
        positions.append(matches[0])
    assert len(set(positions)) > 3
    again = RandomCrop(
        (3, 4), padding=(1, 2), padding_mode="reflect", generator=ember.Generator().manual_seed(0)
    )(ember.tensor(x))
    np.testing.assert_array_equal(again.data, out.data)  # seeded


@pytest.mark.parametrize("mode", ["constant", "edge", "reflect", "symmetric"])
def test_random_crop_padding_modes_match_torch_pad(mode):
    torch = pytest.importorskip("torch")
    x = img(1, 2, 4, 4)
    out = RandomCrop(8, padding=2, padding_mode=mode, fill=0.5)(x)  # whole padded image
    torch_mode = {"edge": "replicate", "symmetric": None}.get(mode, mode)
    if torch_mode is None:
        ref = np.pad(x, [(0, 0), (0, 0), (2, 2), (2, 2)], mode="symmetric")
    elif torch_mode == "constant":
        ref = torch.nn.functional.pad(torch.tensor(x), (2, 2, 2, 2), value=0.5).numpy()
    else:
        ref = torch.nn.functional.pad(torch.tensor(x), (2, 2, 2, 2), mode=torch_mode).numpy()
    np.testing.assert_array_equal(out, ref)


def test_random_crop_options_and_errors():
    x = ember.rand(1, 3, 3)
    assert RandomCrop(5, pad_if_needed=True)(x).shape == (1, 5, 5)
    assert RandomCrop(3, padding=[1, 2, 3, 4])(x).shape == (1, 3, 3)
    with pytest.raises(
        ValueError,
        match=r"required crop size \(4, 4\) is larger than the "
        r"\(padded\) input image size \(3, 3\)",
    ):
        RandomCrop(4)(x)
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        RandomCrop(2, padding_mode="wrap")
    with pytest.raises(ValueError, match="padding must be an int or a 1, 2 or 4"):
        RandomCrop(2, padding=(1, 2, 3))


def test_random_horizontal_flip():
    x = img(64, 1, 2, 3)
    out = RandomHorizontalFlip(p=0.5, generator=ember.Generator().manual_seed(1))(ember.tensor(x))
    flipped = [np.array_equal(out.data[n], x[n, :, :, ::-1]) for n in range(64)]
    kept = [np.array_equal(out.data[n], x[n]) for n in range(64)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 15 < sum(flipped) < 49
    assert np.array_equal(RandomHorizontalFlip(p=1.0)(ember.tensor(x)).data, x[..., ::-1])
    single = ember.tensor(x[0])
    assert RandomHorizontalFlip(p=0.0)(single) is single
    np.testing.assert_array_equal(RandomHorizontalFlip(p=1.0)(single).data, x[0][..., ::-1])


def test_random_transforms_follow_manual_seed():
    x = ember.tensor(img(8, 3, 6, 6))
    t = Compose([RandomCrop(4, padding=1), RandomHorizontalFlip()])
    ember.manual_seed(3)
    a = t(x)
    ember.manual_seed(3)
    b = t(x)
    ember.manual_seed(4)
    c = t(x)
    np.testing.assert_array_equal(a.data, b.data)
    assert not np.array_equal(a.data, c.data)


def test_compose_pipeline_on_a_batch():
    nhwc = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3)).astype(np.uint8)
    pipe = Compose(
        [
            ToTensor(),
            RandomCrop(8, padding=0),
            Normalize([0.5] * 3, [0.5] * 3),
            Lambda(lambda t: t * 1),
        ]
    )
    out = pipe(nhwc)
    assert out.shape == (4, 3, 8, 8) and out.dtype == ember.float32
    np.testing.assert_allclose(
        out.data, (nhwc.transpose(0, 3, 1, 2) / 255 - 0.5) / 0.5, rtol=1e-5, atol=1e-6
    )
    assert "RandomCrop" in repr(pipe)
    with pytest.raises(TypeError, match="Lambda: argument should be callable"):
        Lambda(3)
