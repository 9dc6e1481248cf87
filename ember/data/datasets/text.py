"""Character-level language modelling: CharDataset, TinyShakespeare, PythonSourceCorpus.

The vocabulary is the sorted set of characters of the whole text (both splits), so ids do
not depend on the split. The first ``1 - val_fraction`` of the text is the train split, the
rest the val split; sample ``i`` is ``(x, y) = (text[i : i + block], text[i + 1 : i + block +
1])`` as int64 ids.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import sysconfig

import numpy as np

from ember.data.dataset import Dataset
from ember.data.datasets.locate import Resource, locate
from ember.tensor.tensor import Tensor

__all__ = ["CharDataset", "TinyShakespeare", "PythonSourceCorpus"]


def _read_source(source) -> str:
    if isinstance(source, os.PathLike) or (
        isinstance(source, str)
        and "\n" not in source
        and len(source) < 4096
        and os.path.isfile(source)
    ):
        with open(source, encoding="utf-8", newline="") as f:  # keep the bytes' newlines
            return f.read()
    if isinstance(source, str):
        return source
    raise TypeError(f"CharDataset: expected a path or a str of text, got {type(source).__name__}")


class CharDataset(Dataset):
    """Windows of ``block_size`` character ids over a text file (a path) or a string."""

    def __init__(
        self, source, block_size: int, split: str = "train", val_fraction: float = 0.1
    ) -> None:
        self._setup(_read_source(source), block_size, split, val_fraction)

    def _setup(self, text: str, block_size: int, split: str, val_fraction: float) -> None:
        who = type(self).__name__
        if split not in ("train", "val"):
            raise ValueError(f"{who}: split must be 'train' or 'val', got {split!r}")
        if not 0 <= val_fraction < 1:
            raise ValueError(f"{who}: val_fraction must be in [0, 1), got {val_fraction}")
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"{who}: block_size must be a positive int, got {block_size}")
        if not text:
            raise ValueError(f"{who}: the text is empty")
        self.block_size = block_size
        self.split = split
        self.val_fraction = val_fraction
        self.num_chars = len(text)
        self.chars = sorted(set(text))
        self.vocab_size = len(self.chars)
        self.stoi = {c: i for i, c in enumerate(self.chars)}
        self.itos = dict(enumerate(self.chars))
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        ids = np.searchsorted(np.array([ord(c) for c in self.chars], np.uint32), codes)
        n_train = int(len(ids) * (1 - val_fraction))
        self.data = ids[:n_train] if split == "train" else ids[n_train:]
        if len(self.data) < block_size + 1:
            raise ValueError(
                f"{who}: the {split!r} split has {len(self.data)} characters; "
                f"it needs at least block_size + 1 = {block_size + 1}"
            )
        self._offsets = np.arange(block_size + 1)

    def encode(self, text: str) -> list:
        try:
            return [self.stoi[c] for c in text]
        except KeyError as exc:
            raise KeyError(
                f"{type(self).__name__}.encode: character {exc.args[0]!r} is not in the vocabulary"
            ) from None

    def decode(self, ids) -> str:
        if isinstance(ids, Tensor):
            ids = ids.data
        if isinstance(ids, np.ndarray):
            ids = ids.reshape(-1).tolist()
        return "".join(self.itos[int(i)] for i in ids)

    def __len__(self) -> int:
        return len(self.data) - self.block_size

    def __getitem__(self, index):
        n = len(self)
        i = int(index) + (n if index < 0 else 0)
        if not 0 <= i < n:
            raise IndexError(
                f"{type(self).__name__}: index {index} is out of range for {n} windows"
            )
        chunk = self.data[i : i + self.block_size + 1]
        return Tensor(chunk[:-1].copy()), Tensor(chunk[1:].copy())

    def _batched_getitems(self, indices) -> list:
        starts = np.asarray(indices, dtype=np.int64)
        windows = self.data[starts[:, None] + self._offsets]
        return [
            Tensor(np.ascontiguousarray(windows[:, :-1])),
            Tensor(np.ascontiguousarray(windows[:, 1:])),
        ]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(split={self.split!r}, block_size={self.block_size}, "
            f"vocab_size={self.vocab_size}, windows={len(self)})"
        )


class TinyShakespeare(CharDataset):
    """Karpathy's tinyshakespeare (1,115,394 characters, 65 distinct), found or downloaded."""

    RESOURCE = Resource(
        "input.txt",
        (
            "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/"
            "input.txt",
        ),
        ("86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",),
    )

    def __init__(
        self,
        block_size: int,
        split: str = "train",
        val_fraction: float = 0.1,
        root=None,
        download: bool = True,
    ) -> None:
        (path,) = locate("TinyShakespeare", "tinyshakespeare", [self.RESOURCE], root, download)
        self.path = path
        self._setup(_read_source(path), block_size, split, val_fraction)


_SKIP_DIRS = {
    "site-packages",
    "dist-packages",
    "test",
    "tests",
    "idle_test",
    "__pycache__",
    "idlelib",
    "lib2to3",
    "turtledemo",
    "ensurepip",
    "tkinter",
    "pydoc_data",
}


def stdlib_sources(max_chars: int) -> tuple:
    """(text, relative paths): ASCII ``.py`` files of the running Python's standard library,
    in sorted path order, each taken whole if it still fits within ``max_chars``."""
    root = pathlib.Path(sysconfig.get_paths()["stdlib"])
    paths = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("config-")]
        paths += [pathlib.Path(dirpath, f) for f in filenames if f.endswith(".py")]
    paths.sort(key=lambda p: p.relative_to(root).as_posix())
    texts, names, total = [], [], 0
    for p in paths:
        try:
            text = p.read_bytes().decode("ascii")
        except (OSError, UnicodeDecodeError):
            continue  # keep the vocabulary ASCII
        if total + len(text) + 1 > max_chars:
            continue  # too big for what is left: smaller files later in the order may fit
        texts.append(text)
        names.append(p.relative_to(root).as_posix())
        total += len(text) + 1
    if not texts:
        raise FileNotFoundError(
            f"PythonSourceCorpus: no readable .py sources under {root} "
            f"(this Python ships without its standard-library sources)"
        )
    return "\n".join(texts) + "\n", names


class PythonSourceCorpus(CharDataset):
    """An offline corpus: the running Python's standard-library sources (no download).

    A fixed, sorted subset capped at ``max_chars``, so it is the same for a given Python
    version; ``files`` lists the files and ``fingerprint`` is the text's sha256.
    """

    def __init__(
        self,
        block_size: int,
        split: str = "train",
        val_fraction: float = 0.1,
        max_chars: int = 1_000_000,
    ) -> None:
        text, self.files = stdlib_sources(max_chars)
        self.fingerprint = hashlib.sha256(text.encode()).hexdigest()
        self._setup(text, block_size, split, val_fraction)
