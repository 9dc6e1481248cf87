"""The recipes' DataModules: character corpora, MNIST, CIFAR-10 and a synthetic task.

Each exposes ``model_kwargs()``: what the model must know about the data (a character model's
vocabulary), which the recipe passes when it builds the model, and ``tokens_per_sample`` for
the throughput report. Datasets load in ``setup`` except where the model needs them earlier.
"""

from __future__ import annotations

import numpy as np

import ember
from ember.data import DataLoader, Subset, TensorDataset
from ember.trainer import DataModule


def _evenly_spaced(n: int, stride: int, cap: int | None) -> list:
    """Start indices ``0, stride, 2 * stride...`` below ``n``; at most ``cap`` of them, spread
    over the whole range."""
    starts = np.arange(0, n, max(int(stride), 1))
    if cap is not None and len(starts) > cap:
        starts = starts[np.linspace(0, len(starts) - 1, int(cap)).round().astype(np.int64)]
    return starts.tolist()


class CharDataModule(DataModule):
    """Next-character windows of ``block_size`` over a corpus.

    ``source``: "pysource" (the running Python's standard library: offline), "shakespeare"
    (tinyshakespeare, found under ``root``/$EMBER_DATA_DIR/~/.cache/ember or downloaded) or a
    path to a UTF-8 text file. Training draws windows at random positions; validation uses
    non-overlapping windows (stride ``block_size``) spread over the whole val split, at most
    ``val_windows`` of them, so its loss estimates the whole split in the same way every time.
    """

    def __init__(
        self,
        source: str = "pysource",
        block_size: int = 64,
        batch_size: int = 32,
        val_fraction: float = 0.1,
        val_windows: int | None = None,
        max_chars: int = 1_000_000,
        root=None,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.source, self.root = source, root
        self.block_size, self.batch_size = int(block_size), int(batch_size)
        self.val_fraction, self.val_windows = val_fraction, val_windows
        self.max_chars, self.num_workers = max_chars, num_workers
        self.tokens_per_sample = self.block_size
        self._splits: dict = {}

    def _dataset(self, split: str):
        if split not in self._splits:
            from ember.data.datasets import CharDataset, PythonSourceCorpus, TinyShakespeare

            args = (self.block_size, split, self.val_fraction)
            if self.source == "pysource":
                ds = PythonSourceCorpus(*args, max_chars=self.max_chars)
            elif self.source == "shakespeare":
                ds = TinyShakespeare(*args, root=self.root)
            else:
                ds = CharDataset(self.source, *args)
            self._splits[split] = ds
        return self._splits[split]

    def model_kwargs(self) -> dict:
        ds = self._dataset("train")
        return {"vocab_size": ds.vocab_size, "chars": "".join(ds.chars)}

    def setup(self, stage: str | None = None) -> None:
        self._dataset("train")
        self._dataset("val")

    def train_dataloader(self):
        return DataLoader(
            self._dataset("train"),
            batch_size=self.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=self.num_workers,
        )

    def val_dataloader(self):
        ds = self._dataset("val")
        starts = _evenly_spaced(len(ds), self.block_size, self.val_windows)
        return DataLoader(Subset(ds, starts), batch_size=self.batch_size * 2)

    def test_dataloader(self):
        return self.val_dataloader()


class _ClassificationData(DataModule):
    """Labelled samples: ``_build`` makes the (train, val) datasets once, at the first setup;
    shuffled training batches of ``batch_size``, larger validation batches, test = val."""

    tokens_per_sample = 1
    drop_last = False

    def __init__(self, batch_size: int, num_workers: int = 0) -> None:
        super().__init__()
        self.batch_size, self.num_workers = int(batch_size), num_workers
        self.train_set = self.val_set = None

    def _build(self) -> tuple:
        raise NotImplementedError

    def _val_batch_size(self) -> int:
        return 500

    def model_kwargs(self) -> dict:
        return {}

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set, self.val_set = self._build()

    def train_dataloader(self):
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            shuffle=True,
            drop_last=self.drop_last,
            num_workers=self.num_workers,
        )

    def val_dataloader(self):
        return DataLoader(
            self.val_set, batch_size=self._val_batch_size(), num_workers=self.num_workers
        )

    def test_dataloader(self):
        return self.val_dataloader()


class MNISTDataModule(_ClassificationData):
    """MNIST. ``split="standard"``: the 60k training images, validated on the 10k test images.
    ``split="holdout"``: only the 10k test file (all that some machines have), split at random
    (``split_seed``) into ``holdout_train`` training and ``holdout_val`` validation images."""

    def __init__(
        self,
        root=None,
        batch_size: int = 64,
        split: str = "holdout",
        holdout_train: int = 8000,
        holdout_val: int = 2000,
        split_seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers)
        if split not in ("holdout", "standard"):
            raise ValueError(
                f"MNISTDataModule: split must be 'holdout' or 'standard', got {split!r}"
            )
        self.root, self.split = root, split
        self.holdout = (int(holdout_train), int(holdout_val))
        self.split_seed = split_seed

    def _build(self) -> tuple:
        from ember.data import random_split
        from ember.data.datasets import MNIST

        if self.split == "standard":
            return MNIST(self.root, train=True), MNIST(self.root, train=False)
        test = MNIST(self.root, train=False)
        n_train, n_val = self.holdout
        if n_train + n_val > len(test):
            raise ValueError(
                f"MNISTDataModule: holdout_train + holdout_val = {n_train + n_val} exceeds the "
                f"{len(test)} images of the test file"
            )
        rest = len(test) - n_train - n_val
        gen = ember.Generator().manual_seed(int(self.split_seed))
        parts = random_split(test, [n_train, n_val, rest], generator=gen)
        return parts[0], parts[1]


class CIFAR10DataModule(_ClassificationData):
    """CIFAR-10 (50k train / 10k test); ``augment``: random crop (padding 4) and horizontal
    flip on the training images."""

    drop_last = True

    def __init__(
        self, root=None, batch_size: int = 128, augment: bool = True, num_workers: int = 0
    ) -> None:
        super().__init__(batch_size, num_workers)
        self.root, self.augment = root, augment

    def _build(self) -> tuple:
        from ember.data import transforms as T
        from ember.data.datasets import CIFAR10

        aug = None
        if self.augment:
            aug = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()])
        return CIFAR10(self.root, train=True, transform=aug), CIFAR10(self.root, train=False)


class SyntheticDataModule(_ClassificationData):
    """A learnable random classification task (no files): Gaussian inputs of ``shape``, labels
    from a fixed random linear teacher. For smoke runs and the MLP recipe."""

    def __init__(
        self,
        num_samples: int = 2048,
        shape=(1, 28, 28),
        num_classes: int = 10,
        batch_size: int = 64,
        val_fraction: float = 0.25,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size)
        self.num_samples, self.shape = int(num_samples), tuple(int(s) for s in shape)
        self.num_classes = int(num_classes)
        self.val_fraction, self.seed = val_fraction, seed

    def _val_batch_size(self) -> int:
        return self.batch_size * 4

    def _build(self) -> tuple:
        rng = np.random.default_rng(self.seed)
        x = rng.standard_normal((self.num_samples, *self.shape), dtype=np.float32)
        teacher = rng.standard_normal((int(np.prod(self.shape)), self.num_classes))
        y = (x.reshape(self.num_samples, -1) @ teacher).argmax(1).astype(np.int64)
        n_val = max(1, int(self.num_samples * self.val_fraction))
        xt, yt = ember.tensor(x), ember.tensor(y)
        return TensorDataset(xt[n_val:], yt[n_val:]), TensorDataset(xt[:n_val], yt[:n_val])
