"""Datasets: real MNIST and tinyshakespeare, checksums, the not-found error, CIFAR binary."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pathlib
import shutil
import sys
import tarfile

import numpy as np
import pytest

import ember
from ember.data import DataLoader
from ember.data.datasets import (
    CIFAR10,
    MNIST,
    CharDataset,
    ChecksumError,
    DatasetNotFoundError,
    FashionMNIST,
    PythonSourceCorpus,
    TinyShakespeare,
)
from ember.data.datasets import cifar as cifar_mod
from ember.data.datasets import locate as locate_mod
from ember.data.datasets.mnist import read_idx

MNIST_TEST_LABEL_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network, an empty home cache and an empty $EMBER_DATA_DIR."""
    calls = []

    def fail(url, dest, timeout=60.0):
        calls.append(url)
        raise OSError("network disabled in tests")

    monkeypatch.setattr(locate_mod, "_download", fail)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    env = tmp_path / "env_data"
    env.mkdir()
    monkeypatch.setenv("EMBER_DATA_DIR", str(env))
    return calls


# ------------------------------------------------------------------- MNIST (real files)
def test_mnist_reads_the_real_test_set(data_dir, monkeypatch):
    monkeypatch.setenv("EMBER_DATA_DIR", str(data_dir))
    ds = MNIST(train=False, download=False)
    assert len(ds) == 10000
    image, label = ds[0]
    assert image.shape == (1, 28, 28) and image.dtype == ember.float32
    assert isinstance(label, int) and label == 7  # the first test digit is a 7
    assert float(image.data.min()) == 0.0 and float(image.data.max()) == 1.0
    assert ds.data.shape == (10000, 28, 28) and ds.data.dtype == ember.uint8
    assert ds.targets.dtype == ember.int64
    np.testing.assert_array_equal(np.bincount(ds.targets.data), MNIST_TEST_LABEL_COUNTS)
    np.testing.assert_array_equal(image.data[0], ds.data.data[0].astype(np.float32) / 255)
    # whole batches through the DataLoader's batched path equal the per-sample path
    x, y = next(iter(DataLoader(ds, batch_size=5)))
    assert x.shape == (5, 1, 28, 28) and x.dtype == ember.float32 and y.dtype == ember.int64
    for k in range(5):
        np.testing.assert_array_equal(x.data[k], ds[k][0].data)
        assert y.data[k] == ds[k][1]


def test_mnist_explicit_root_wins_and_raw_files_work(data_dir, tmp_path, offline):
    root = tmp_path / "root"
    root.mkdir()
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):  # decompressed copies
        with gzip.open(data_dir / "mnist" / f"{name}.gz") as f:
            (root / name).write_bytes(f.read())
    ds = MNIST(root=root, train=False, transform=lambda x: x * 2, target_transform=str)
    image, label = ds[0]
    assert label == "7" and float(image.data.max()) == 2.0
    assert offline == []  # nothing was downloaded


def test_corrupted_mnist_copy_fails_its_checksum(data_dir, tmp_path, offline):
    root = tmp_path / "mnist_copy"
    root.mkdir()
    shutil.copy(data_dir / "mnist" / "t10k-images-idx3-ubyte.gz", root)
    raw = gzip.decompress((data_dir / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes())
    bad = raw[:100] + bytes([(raw[100] + 1) % 10]) + raw[101:]
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bad))
    with pytest.raises(
        ChecksumError,
        match=r"MNIST: checksum mismatch for .*mnist_copy"
        r"/t10k-labels-idx1-ubyte\.gz",
    ):
        MNIST(root=root, train=False)


def test_read_idx_rejects_malformed_files(tmp_path):
    p = tmp_path / "bad-idx"
    p.write_bytes(b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + b"\x01\x02")
    with pytest.raises(ValueError, match="holds 2 bytes of data, but its header"):
        read_idx(p, "MNIST")
    p.write_bytes(b"PK\x03\x04")
    with pytest.raises(ValueError, match="is not an idx file"):
        read_idx(p, "MNIST")
    p.write_bytes(
        b"\x00\x00\x0c\x02"
        + (2).to_bytes(4, "big")
        + (2).to_bytes(4, "big")
        + np.arange(4, dtype=">i4").tobytes()
    )
    np.testing.assert_array_equal(read_idx(p), [[0, 1], [2, 3]])


# ------------------------------------------------------------------- not found anywhere
def test_offline_not_found_error_names_all_four_places(offline, tmp_path):
    root = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError) as info:
        MNIST(root=root, train=True)
    msg = str(info.value)
    assert msg.count("\n  ") == 4  # one line per place
    assert str(root) in msg and str(root / "mnist") in msg
    assert str(tmp_path / "env_data" / "mnist") in msg
    assert str(tmp_path / "home" / ".cache" / "ember" / "mnist") in msg
    assert "download from https://" in msg and "network disabled in tests" in msg
    assert "train-images-idx3-ubyte.gz" in msg
    assert offline  # the (patched) downloader was tried, for every mirror
    assert isinstance(info.value, FileNotFoundError)


def test_not_found_without_root_or_env_and_without_download(monkeypatch, tmp_path):
    monkeypatch.setattr(locate_mod, "_download", lambda *a, **k: pytest.fail("downloaded"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("EMBER_DATA_DIR", raising=False)
    with pytest.raises(DatasetNotFoundError) as info:
        FashionMNIST(download=False)
    msg = str(info.value)
    assert "1. the explicit root: not given" in msg
    assert "2. $EMBER_DATA_DIR: not set" in msg
    assert f"3. the user cache: {tmp_path / '.cache' / 'ember' / 'fashion-mnist'}" in msg
    assert "4. a download from http" in msg and "not tried (download=False)" in msg


def test_download_is_verified_then_cached(monkeypatch, tmp_path, data_dir):
    text = (data_dir / "tinyshakespeare" / "input.txt").read_bytes()

    def fake(url, dest, timeout=60.0):
        dest.write_bytes(text)

    monkeypatch.setattr(locate_mod, "_download", fake)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("EMBER_DATA_DIR", raising=False)
    ds = TinyShakespeare(block_size=8)
    cached = tmp_path / ".cache" / "ember" / "tinyshakespeare" / "input.txt"
    assert ds.path == cached and cached.read_bytes() == text

    def corrupt(url, dest, timeout=60.0):
        dest.write_bytes(text[:-1])

    monkeypatch.setattr(locate_mod, "_download", corrupt)
    monkeypatch.setenv("HOME", str(tmp_path / "other_home"))
    with pytest.raises(DatasetNotFoundError, match="ChecksumError"):
        TinyShakespeare(block_size=8, root=tmp_path / "fresh")
    assert not list((tmp_path / "fresh" / "tinyshakespeare").iterdir())  # no partial file


# ------------------------------------------------------------------- text
def test_tinyshakespeare_vocab_and_round_trip(data_dir, monkeypatch):
    monkeypatch.setenv("EMBER_DATA_DIR", str(data_dir))
    train = TinyShakespeare(block_size=32, download=False)
    val = TinyShakespeare(block_size=32, split="val", download=False)
    assert train.vocab_size == 65 and train.num_chars == 1_115_394
    assert train.chars == val.chars == sorted(train.chars)
    assert len(train.data) == 1_003_854 and len(val.data) == 1_115_394 - 1_003_854
    assert len(train) == 1_003_854 - 32
    text = (data_dir / "tinyshakespeare" / "input.txt").read_text()
    assert train.decode(train.data[:200]) == text[:200]
    assert val.decode(val.data[:50]) == text[1_003_854:1_003_904]
    snippet = "First Citizen:\nBefore we proceed any further, hear me speak."
    assert train.decode(train.encode(snippet)) == snippet
    x, y = train[10]
    assert x.shape == (32,) and x.dtype == ember.int64
    np.testing.assert_array_equal(x.data[1:], y.data[:-1])
    assert train.decode(x) == text[10:42] and train.decode(y) == text[11:43]
    xb, yb = next(iter(DataLoader(train, batch_size=4)))
    assert xb.shape == (4, 32) and yb.dtype == ember.int64
    for k in range(4):
        np.testing.assert_array_equal(xb.data[k], train[k][0].data)
        np.testing.assert_array_equal(yb.data[k], train[k][1].data)


def test_corrupted_tinyshakespeare_copy_fails_its_checksum(data_dir, tmp_path, offline):
    copy = tmp_path / "tinyshakespeare" / "input.txt"
    copy.parent.mkdir()
    raw = bytearray((data_dir / "tinyshakespeare" / "input.txt").read_bytes())
    raw[1000] ^= 0x20
    copy.write_bytes(bytes(raw))
    with pytest.raises(
        ChecksumError,
        match=r"TinyShakespeare: checksum mismatch for "
        r".*tinyshakespeare/input\.txt: its sha256 is",
    ):
        TinyShakespeare(block_size=8, root=tmp_path)


def test_char_dataset_over_text_and_files(tmp_path):
    ds = CharDataset("hello world, hello ember\n" * 4, block_size=5, val_fraction=0.25)
    assert ds.chars == sorted(set("hello world, hello ember\n"))
    assert ds.vocab_size == len(ds.chars)
    assert ds.decode(ds.encode("hello")) == "hello"
    assert ds[0][0].data.tolist() == ds.encode("hello")
    assert ds[-1][1].data.tolist() == ds.data[-5:].tolist()
    with pytest.raises(IndexError):
        ds[len(ds)]
    with pytest.raises(KeyError, match="character 'Z' is not in the vocabulary"):
        ds.encode("Z")
    p = tmp_path / "t.txt"
    p.write_bytes(b"ab\r\ncd\n" * 10)
    f1, f2 = CharDataset(p, 3), CharDataset(str(p), 3)
    assert "\r" in f1.chars and f1.chars == f2.chars  # bytes kept as they are
    val = CharDataset(p, 3, split="val")
    assert len(val.data) == 70 - int(70 * 0.9)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(split="test"), "split must be 'train' or 'val'"),
        (dict(val_fraction=1.0), r"val_fraction must be in \[0, 1\)"),
        (dict(block_size=0), "block_size must be a positive int"),
        (
            dict(block_size=50, split="val"),
            r"the 'val' split has 4 characters; it needs at least "
            r"block_size \+ 1 = 51",
        ),
    ],
)
def test_char_dataset_errors(kwargs, match):
    kwargs = {"block_size": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        CharDataset("abcdefghij" * 4, **kwargs)


def test_python_source_corpus_is_deterministic_and_offline(monkeypatch):
    monkeypatch.setattr(locate_mod, "_download", lambda *a, **k: pytest.fail("downloaded"))
    a = PythonSourceCorpus(block_size=16, max_chars=200_000)
    b = PythonSourceCorpus(block_size=16, max_chars=200_000)
    assert a.files == b.files == sorted(a.files) and a.fingerprint == b.fingerprint
    assert 190_000 < a.num_chars <= 200_000
    assert all(f.endswith(".py") and not f.startswith(("test/", "site-packages/")) for f in a.files)
    assert all(c.isascii() for c in a.chars)
    stdlib = pathlib.Path(os.__file__).parent
    first = (stdlib / a.files[0]).read_text()
    assert a.decode(a.data[: len(first)]) == first
    bigger = PythonSourceCorpus(block_size=16, max_chars=400_000)
    assert 390_000 < bigger.num_chars <= 400_000
    val = PythonSourceCorpus(block_size=16, split="val", max_chars=200_000)
    assert val.chars == a.chars and len(val.data) < len(a.data)
    assert sys.version_info >= (3, 10)


# ------------------------------------------------------------------- CIFAR-10 (synthetic)
def _records(n, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 256, (n, 3072)).astype(np.uint8)
    return labels, images, np.concatenate([labels[:, None], images], axis=1).tobytes()


def _cifar_archive(path: pathlib.Path, per_file=3):
    members, truth = {}, {}
    for k, name in enumerate(cifar_mod.TRAIN_FILES + cifar_mod.TEST_FILES):
        labels, images, raw = _records(per_file + k % 2, k)
        members[name], truth[name] = raw, (labels, images)
    with tarfile.open(path, "w:gz") as tar:
        for name in ("batches.meta.txt",) + tuple(members):
            data = members.get(name, b"airplane\nautomobile\n")
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return members, truth


def test_cifar_binary_parsing_of_a_synthetic_archive(tmp_path, monkeypatch, offline):
    archive = tmp_path / "cifar10" / "cifar-10-binary.tar.gz"
    archive.parent.mkdir()
    members, truth = _cifar_archive(archive)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    monkeypatch.setattr(
        cifar_mod,
        "ARCHIVE",
        locate_mod.Resource(archive.name, (), (digest,), alt_names=(cifar_mod.FOLDER,)),
    )
    train = CIFAR10(root=tmp_path, train=True)
    test = CIFAR10(root=tmp_path, train=False)
    labels = np.concatenate([truth[n][0] for n in cifar_mod.TRAIN_FILES])
    images = np.concatenate([truth[n][1] for n in cifar_mod.TRAIN_FILES])
    assert len(train) == len(labels) == 17 and len(test) == 4
    np.testing.assert_array_equal(train.targets, labels)
    for i in (0, 5, 16):
        image, label = train[i]
        assert image.shape == (3, 32, 32) and image.dtype == ember.float32 and label == labels[i]
        np.testing.assert_array_equal(
            image.data, images[i].reshape(3, 32, 32).astype(np.float32) / 255
        )
    # red plane first, row-major: pixel (row 1, col 2) of the green plane is byte 1024+32+2
    assert train.data.shape == (17, 32, 32, 3)
    assert train.data[0, 1, 2, 1] == images[0][1024 + 32 + 2]
    np.testing.assert_array_equal(test.targets, truth["test_batch.bin"][0])
    x, y = next(iter(DataLoader(train, batch_size=4)))
    assert x.shape == (4, 3, 32, 32) and y.data.tolist() == labels[:4].tolist()

    # the same archive with a byte flipped fails the archive checksum
    raw = bytearray(archive.read_bytes())
    raw[len(raw) // 2] ^= 1
    archive.write_bytes(bytes(raw))
    with pytest.raises(ChecksumError, match="CIFAR10: checksum mismatch for .*cifar-10-binary"):
        CIFAR10(root=tmp_path)


def test_cifar_extracted_folder_and_member_checksums(tmp_path, monkeypatch, offline):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    members, truth = _cifar_archive(tmp_path / "unused.tar.gz")
    for name, raw in members.items():
        (folder / name).write_bytes(raw)
    pins = {n: hashlib.sha256(r).hexdigest() for n, r in members.items()}
    monkeypatch.setattr(cifar_mod, "MEMBER_SHA256", pins)
    test = CIFAR10(root=tmp_path, train=False)
    np.testing.assert_array_equal(test.targets, truth["test_batch.bin"][0])
    (folder / "test_batch.bin").write_bytes(members["test_batch.bin"][:-1] + b"\x00")
    with pytest.raises(ChecksumError, match="test_batch.bin"):
        CIFAR10(root=tmp_path, train=False)


def test_cifar_rejects_a_truncated_member(tmp_path):
    _, _, raw = _records(2, 0)
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    (folder / "test_batch.bin").write_bytes(raw[:-10])
    with pytest.raises(ValueError, match="not a whole number of 3073-byte records"):
        cifar_mod.read_cifar_binary(tmp_path, ("test_batch.bin",))
