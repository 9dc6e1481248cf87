"""default_collate / default_convert: samples to batches, with torch's rules.

Tensors and NumPy arrays are stacked on a new first dimension (the shapes must match);
Python ints become int64, floats float64 and bools bool tensors; NumPy scalars keep their
dtype; strings and bytes stay lists; dicts, namedtuples and sequences are collated field by
field (a tuple of fields comes back as a list, as in torch).
"""

from __future__ import annotations

import collections.abc
import copy
import re

import numpy as np

from ember.tensor import dtypes
from ember.tensor.backend import get_array_module
from ember.tensor.tensor import Tensor

__all__ = ["default_collate", "default_convert"]

_STR_OBJ = re.compile(r"[SaUO]")  # NumPy dtype codes that are not numbers
_ERR = (
    "default_collate: batch must contain tensors, numpy arrays, numbers, dicts or lists; found {}"
)


def _stack(arrays: list, what: str) -> Tensor:
    first = arrays[0]
    for i, a in enumerate(arrays):
        if a.shape != first.shape:
            raise RuntimeError(
                f"default_collate: stack expects each {what} to be equal size, "
                f"but got {tuple(first.shape)} at entry 0 and {tuple(a.shape)} "
                f"at entry {i}"
            )
    xp = get_array_module(first)
    if any(a.dtype != first.dtype for a in arrays):
        d = dtypes.from_numpy_dtype(first.dtype)
        for a in arrays:
            d = dtypes.promote_types(d, dtypes.from_numpy_dtype(a.dtype))
        arrays = [a.astype(d.np, copy=False) for a in arrays]
    return Tensor(xp.stack(arrays))


def _numpy_scalar_batch(batch: list) -> Tensor:
    arr = np.asarray(batch)
    dtypes.from_numpy_dtype(arr.dtype)  # unsupported dtypes fail here, clearly
    return Tensor(arr)


def default_collate(batch):
    """Turn a list of samples into a batch (see the module docstring for the rules)."""
    elem = batch[0]
    if isinstance(elem, Tensor):
        return _stack([t.data for t in batch], "tensor")
    if isinstance(elem, np.ndarray):
        if _STR_OBJ.search(elem.dtype.str) is not None:
            raise TypeError(_ERR.format(elem.dtype))
        return _stack(list(batch), "array")
    if isinstance(elem, (np.bool_, np.number)):
        return _numpy_scalar_batch(batch)
    if isinstance(elem, int):  # torch.tensor(batch): bool, int64, or the default float dtype
        if all(type(b) is bool for b in batch):
            return Tensor(np.array(batch, dtype=np.bool_))
        if all(isinstance(b, int) for b in batch):
            return Tensor(np.array(batch, dtype=np.int64))
        return Tensor(np.array(batch, dtype=dtypes.get_default_dtype().np))
    if isinstance(elem, float):
        return Tensor(np.array(batch, dtype=np.float64))
    if isinstance(elem, (str, bytes)):
        return batch
    if isinstance(elem, collections.abc.Mapping):
        return _collate_mapping(batch, elem)
    if isinstance(elem, tuple) and hasattr(elem, "_fields"):  # namedtuple
        return type(elem)(*(default_collate(s) for s in zip(*batch)))
    if isinstance(elem, collections.abc.Sequence):
        size = len(elem)
        for i, b in enumerate(batch):
            if len(b) != size:
                raise RuntimeError(
                    f"each element in list of batch should be of equal size "
                    f"(entry 0 has {size} fields, entry {i} has {len(b)})"
                )
        fields = [default_collate(s) for s in zip(*batch)]
        if isinstance(elem, tuple):
            return fields  # torch returns a list for tuples
        try:
            if isinstance(elem, collections.abc.MutableSequence):
                clone = copy.copy(elem)
                for i, f in enumerate(fields):
                    clone[i] = f
                return clone
            return type(elem)(fields)
        except TypeError:
            return fields
    raise TypeError(_ERR.format(type(elem)))


def _collate_mapping(batch: list, elem):
    keys = list(elem)
    for i, d in enumerate(batch):
        if d.keys() != elem.keys():
            raise KeyError(
                f"default_collate: sample {i} has keys {sorted(map(str, d))} but "
                f"sample 0 has keys {sorted(map(str, keys))}"
            )
    out = {k: default_collate([d[k] for d in batch]) for k in keys}
    try:
        if isinstance(elem, collections.abc.MutableMapping):
            clone = copy.copy(elem)
            clone.update(out)
            return clone
        return type(elem)(out)
    except TypeError:
        return out


def default_convert(data):
    """Without batching (batch_size=None): NumPy arrays and scalars become tensors, inside
    containers too; everything else is left alone."""
    if isinstance(data, Tensor):
        return data
    if isinstance(data, np.ndarray):
        if _STR_OBJ.search(data.dtype.str) is not None:
            return data
        return Tensor(data)
    if isinstance(data, (np.bool_, np.number)):
        return Tensor(np.asarray(data))
    if isinstance(data, (str, bytes)):
        return data
    if isinstance(data, collections.abc.Mapping):
        out = {k: default_convert(v) for k, v in data.items()}
        try:
            return type(data)(out)
        except TypeError:
            return out
    if isinstance(data, tuple) and hasattr(data, "_fields"):
        return type(data)(*(default_convert(d) for d in data))
    if isinstance(data, tuple):
        return [default_convert(d) for d in data]  # as torch
    if isinstance(data, collections.abc.Sequence):
        try:
            return type(data)([default_convert(d) for d in data])
        except TypeError:
            return [default_convert(d) for d in data]
    return data
