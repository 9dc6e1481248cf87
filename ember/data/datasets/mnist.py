"""MNIST and Fashion-MNIST from their idx files (gzipped or raw).

Images come out as float32 tensors of shape (1, 28, 28) in [0, 1] (uint8 / 255, as torch's
ToTensor), labels as int64. Normalisation is a transform. The uint8 images stay in memory
(47 MB for the 60,000 training images); conversion happens per sample, or per batch on the
DataLoader's batched path when no transform is set.
"""

from __future__ import annotations

import gzip

import numpy as np

from ember.data.dataset import Dataset
from ember.data.datasets.locate import Resource, locate
from ember.tensor.tensor import Tensor

__all__ = ["MNIST", "FashionMNIST", "read_idx"]

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path, who: str = "read_idx") -> np.ndarray:
    """An idx file (``.gz`` or raw) as an array; a malformed file is a clear ValueError."""
    path = str(path)
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            with open(path, "rb") as f:
                raw = f.read()
    except (OSError, EOFError) as exc:
        raise ValueError(f"{who}: cannot read {path}: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(f"{who}: {path} is not an idx file (magic bytes {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{who}: {path} is truncated inside its header")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{who}: {path} holds {len(raw) - header} bytes of data, but its "
            f"header {dims} needs {expected}: the file is truncated or corrupted"
        )
    arr = np.frombuffer(raw, dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=False) if dtype.byteorder == ">" else arr


class MNIST(Dataset):
    """The MNIST digits (``train=True``: 60,000 images, else the 10,000 test images)."""

    name = "MNIST"
    subdir = "mnist"
    mirrors = (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    )
    # (file, sha256 of the .gz as distributed, sha256 of its decompressed bytes)
    files = {
        "train": (
            (
                "train-images-idx3-ubyte.gz",
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            ),
            (
                "train-labels-idx1-ubyte.gz",
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            ),
        ),
        "test": (
            (
                "t10k-images-idx3-ubyte.gz",
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            ),
            (
                "t10k-labels-idx1-ubyte.gz",
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            ),
        ),
    }
    classes = [
        "0 - zero",
        "1 - one",
        "2 - two",
        "3 - three",
        "4 - four",
        "5 - five",
        "6 - six",
        "7 - seven",
        "8 - eight",
        "9 - nine",
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
        split = "train" if train else "test"
        resources = [
            Resource(
                name,
                tuple(m + name for m in self.mirrors),
                (gz_sha,) if gz_sha else (),
                content_sha,
                (name.removesuffix(".gz"),),
            )
            for name, gz_sha, content_sha in self.files[split]
        ]
        img_path, lbl_path = locate(self.name, self.subdir, resources, root, download)
        images = read_idx(img_path, self.name)
        labels = read_idx(lbl_path, self.name)
        if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
            raise ValueError(
                f"{self.name}: {img_path} holds {images.dtype} data of shape "
                f"{images.shape}, expected uint8 images of shape (N, 28, 28)"
            )
        if labels.shape != (images.shape[0],):
            raise ValueError(
                f"{self.name}: {lbl_path} holds labels of shape {labels.shape} "
                f"for {images.shape[0]} images"
            )
        self._images = images
        self._labels = labels.astype(np.int64)

    @property
    def data(self) -> Tensor:
        """The raw uint8 images, (N, 28, 28), as torchvision's ``.data``."""
        return Tensor(self._images)

    @property
    def targets(self) -> Tensor:
        return Tensor(self._labels)

    def __len__(self) -> int:
        return self._images.shape[0]

    def __getitem__(self, index):
        image = Tensor(self._images[index][None].astype(np.float32) / np.float32(255))
        target = int(self._labels[index])
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target

    @property
    def _batched_getitems(self):
        """Whole batches in one indexing call (only without per-sample transforms)."""
        if self.transform is not None or self.target_transform is not None:
            return None

        def batched(indices):
            idx = np.asarray(indices, dtype=np.int64)
            images = self._images[idx][:, None].astype(np.float32) / np.float32(255)
            return [Tensor(images), Tensor(self._labels[idx])]

        return batched

    def __repr__(self) -> str:
        split = "Train" if self.train else "Test"
        return f"Dataset {self.name}\n    Number of datapoints: {len(self)}\n    Split: {split}"


class FashionMNIST(MNIST):
    """Zalando's Fashion-MNIST: the same layout as MNIST, ten kinds of clothing."""

    name = "FashionMNIST"
    subdir = "fashion-mnist"
    mirrors = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
    files = {  # only the .gz files are pinned (their decompressed digests are not published)
        "train": (
            (
                "train-images-idx3-ubyte.gz",
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                None,
            ),
            (
                "train-labels-idx1-ubyte.gz",
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                None,
            ),
        ),
        "test": (
            (
                "t10k-images-idx3-ubyte.gz",
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                None,
            ),
            (
                "t10k-labels-idx1-ubyte.gz",
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                None,
            ),
        ),
    }
    classes = [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ]
