"""CIFAR-10 from the official *binary* archive (cifar-10-binary.tar.gz), never the pickled one.

Each record is 1 label byte followed by 3072 image bytes (1024 red, 1024 green, 1024 blue,
row-major 32x32), so a file is one ``frombuffer`` + ``reshape``. The archive is read in
place (members are streamed out of the tar.gz, nothing is extracted to disk); an extracted
``cifar-10-batches-bin`` folder works too, its files checked against their own pins.
"""

from __future__ import annotations

import hashlib
import pathlib
import tarfile

import numpy as np

from ember.data.dataset import Dataset
from ember.data.datasets.locate import ChecksumError, Resource, locate
from ember.tensor.tensor import Tensor

__all__ = ["CIFAR10", "read_cifar_binary"]

RECORD = 1 + 3 * 32 * 32
FOLDER = "cifar-10-batches-bin"
ARCHIVE = Resource(
    "cifar-10-binary.tar.gz",
    ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",),
    ("c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",),
    alt_names=(FOLDER,),
)
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILES = ("test_batch.bin",)
# sha256 of each member file (checked when reading an extracted folder)
MEMBER_SHA256 = {
    "data_batch_1.bin": "cee916563c9f80d84e3cc88e17fdc0941787f1244f00a67874d45b261883ada5",
    "data_batch_2.bin": "a591ca11fa1708a91ee40f54b3da4784ccd871ecf2137de63f51ada8b3fa57ed",
    "data_batch_3.bin": "bbe8596564c0f86427f876058170b84dac6670ddf06d79402899d93ceea26f67",
    "data_batch_4.bin": "014e562d6e23c72197cc727519169a60359f5eccd8945ad5a09d710285ff4e48",
    "data_batch_5.bin": "755304fc0b379caeae8c14f0dac912fbc7d6cd469eb67a1029a08a39453a9add",
    "test_batch.bin": "8e2eb146ae340b09e24670f29cabc6326dba54da8789dab6768acf480273f65b",
}


def _parse(raw: bytes, where: str) -> tuple:
    if len(raw) == 0 or len(raw) % RECORD:
        raise ValueError(
            f"CIFAR10: {where} has {len(raw)} bytes, not a whole number of "
            f"{RECORD}-byte records (1 label byte + 3072 image bytes)"
        )
    rec = np.frombuffer(raw, np.uint8).reshape(-1, RECORD)
    labels = rec[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise ValueError(f"CIFAR10: {where} has a label {labels.max()} > 9: not CIFAR-10 binary")
    return rec[:, 1:].reshape(-1, 3, 32, 32), labels


def read_cifar_binary(path, files, member_sha256: dict | None = None) -> tuple:
    """(uint8 images (N, 3, 32, 32), int64 labels (N,)) from ``files`` of the archive (or
    extracted folder) at ``path``, in the order given."""
    path = pathlib.Path(path)
    raws = {}
    if path.is_dir():
        folder = path if (path / files[0]).exists() else path / FOLDER
        for name in files:
            f = folder / name
            if not f.is_file():
                raise FileNotFoundError(f"CIFAR10: {f} is missing from the extracted folder")
            raw = f.read_bytes()
            pin = (member_sha256 or {}).get(name)
            if pin is not None and hashlib.sha256(raw).hexdigest() != pin:
                raise ChecksumError(
                    f"CIFAR10: checksum mismatch for {f}: its sha256 is "
                    f"{hashlib.sha256(raw).hexdigest()}, expected {pin}"
                )
            raws[name] = raw
    else:
        try:
            with tarfile.open(path, "r:*") as tar:
                for member in tar:  # one pass over the stream; nothing written to disk
                    base = member.name.rsplit("/", 1)[-1]
                    if member.isfile() and base in files and base not in raws:
                        raws[base] = tar.extractfile(member).read()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise ValueError(f"CIFAR10: cannot read the archive {path}: {exc}") from None
        missing = [f for f in files if f not in raws]
        if missing:
            raise ValueError(f"CIFAR10: the archive {path} lacks {', '.join(missing)}")
    parts = [_parse(raws[name], f"{path}:{name}") for name in files]
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


class CIFAR10(Dataset):
    """CIFAR-10: 50,000 training or 10,000 test images, float32 (3, 32, 32) in [0, 1]."""

    name = "CIFAR10"
    subdir = "cifar10"
    classes = [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ]

    def __init__(
        self,
        root=None,
        train: bool = True,
        transform=None,
        target_transform=None,
        download: bool = True,
    ) -> None:
        self.root = root
        self.train = train
        self.transform = transform
        self.target_transform = target_transform
        (path,) = locate(self.name, self.subdir, [ARCHIVE], root, download)
        self._images, self._labels = read_cifar_binary(
            path, TRAIN_FILES if train else TEST_FILES, MEMBER_SHA256
        )

    @property
    def data(self) -> np.ndarray:
        """The raw images as torchvision's ``.data``: uint8, (N, 32, 32, 3)."""
        return self._images.transpose(0, 2, 3, 1)

    @property
    def targets(self) -> list:
        return self._labels.tolist()

    def __len__(self) -> int:
        return self._images.shape[0]

    def __getitem__(self, index):
        image = Tensor(self._images[index].astype(np.float32) / np.float32(255))
        target = int(self._labels[index])
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target

    @property
    def _batched_getitems(self):
        if self.transform is not None or self.target_transform is not None:
            return None

        def batched(indices):
            idx = np.asarray(indices, dtype=np.int64)
            images = self._images[idx].astype(np.float32) / np.float32(255)
            return [Tensor(images), Tensor(self._labels[idx])]

        return batched
