"""Datasets with a known home: found under an explicit root, $EMBER_DATA_DIR or
~/.cache/ember, or downloaded and checked against a pinned sha256 (the ``locate`` module;
its function is ``ember.data.datasets.locate.locate``)."""

from ember.data.datasets.cifar import CIFAR10
from ember.data.datasets.locate import ChecksumError, DatasetNotFoundError, Resource
from ember.data.datasets.mnist import MNIST, FashionMNIST
from ember.data.datasets.text import CharDataset, PythonSourceCorpus, TinyShakespeare

__all__ = [
    "MNIST",
    "FashionMNIST",
    "CIFAR10",
    "CharDataset",
    "TinyShakespeare",
    "PythonSourceCorpus",
    "Resource",
    "ChecksumError",
    "DatasetNotFoundError",
]
