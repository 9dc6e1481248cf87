"""``ember.save`` / ``ember.load``: checkpoints as ONE safetensors file, never pickle.

Every tensor (and NumPy array) in the object becomes a safetensors tensor; the rest of the
object (dict / list / tuple nesting, ints, floats, bools, strings, None) is JSON stored in the
header's ``__metadata__["ember"]``. Loading parses that JSON and copies bytes into fresh arrays:
nothing in a file can run code.

Tensor names are the object's key paths: a flat state dict keeps its keys exactly (so
safetensors' torch loader reads it as a torch state dict), nested keys are joined with
"/", and inside a key "~" is written "~0" and "/" is written "~1" (as in JSON Pointer), so the
join is unambiguous. Writes go to a temporary file in the same directory, are fsynced, and are
renamed over the target, so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import sys
from collections.abc import Mapping

import numpy as np

from ember.tensor import dtypes
from ember.tensor.backend import to_backend
from ember.tensor.device import CPU, device, to_device
from ember.tensor.tensor import Tensor

# Ember's dtypes, plus the unsigned ints NumPy arrays may hold (RNG states are uint32/uint64).
_CODES = {
    np.dtype(t): code
    for t, code in [
        (np.bool_, "BOOL"),
        (np.uint8, "U8"),
        (np.int8, "I8"),
        (np.int16, "I16"),
        (np.int32, "I32"),
        (np.int64, "I64"),
        (np.uint16, "U16"),
        (np.uint32, "U32"),
        (np.uint64, "U64"),
        (np.float16, "F16"),
        (dtypes.bfloat16.np, "BF16"),
        (np.float32, "F32"),
        (np.float64, "F64"),
    ]
}
_FROM_CODE = {code: dt for dt, code in _CODES.items()}
_META_KEY = "ember"
_FORMAT_VERSION = 1
_MAX_HEADER = 100_000_000  # safetensors' own limit
_LITTLE = sys.byteorder == "little"


# ------------------------------------------------------------------------------------ save
def save(obj, f) -> None:
    """Write ``obj`` (a tensor, or dicts / lists / tuples of tensors, numbers, strings, bools,
    None and NumPy arrays) to the path ``f`` as a safetensors file."""
    path = _as_path(f, "save")
    enc = _Encoder()
    tree = enc.encode(obj, [])
    meta = json.dumps(
        {"version": _FORMAT_VERSION, "tree": tree}, allow_nan=False, separators=(",", ":")
    )
    _write_atomic(path, enc.tensors, {"format": "pt", _META_KEY: meta})


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


class _Encoder:
    """Turns an object into a JSON tree, collecting its arrays under unique names."""

    def __init__(self, reserved=()):
        self.tensors: list[tuple[str, np.ndarray]] = []
        self._names = {"__metadata__", *reserved}  # names taken by tensors stored elsewhere
        self._active: set[int] = set()

    def _name(self, path: list) -> str:
        base = "/".join(_escape(str(p)) for p in path)
        name, k = base, 2
        while name in self._names:  # "~<digit>" never comes out of _escape: always fresh
            name, k = f"{base}~{k}", k + 1
        self._names.add(name)
        return name

    def _array(self, arr, path: list) -> str:
        arr = host_array(arr, _where(path))
        name = self._name(path)
        self.tensors.append((name, arr))
        return name

    def encode(self, value, path: list):
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float):
            return float(value) if math.isfinite(value) else {"f": repr(float(value))}
        if isinstance(value, Tensor):
            node = {"t": self._array(value.data, path)}
            if value.device.type != "cpu":
                node["dev"] = str(value.device)
            if value.requires_grad:
                node["rg"] = True
            return node
        if isinstance(value, np.ndarray):
            return {"a": self._array(value, path)}
        if isinstance(value, np.generic) and value.dtype.kind in "biuf":
            return self.encode(value.item(), path)
        if isinstance(value, (Mapping, list, tuple)):
            if id(value) in self._active:
                raise ValueError(f"ember.save: the object contains itself at {_where(path)}")
            self._active.add(id(value))
            try:
                return self._container(value, path)
            finally:
                self._active.discard(id(value))
        raise TypeError(
            f"ember.save: cannot store a {type(value).__module__}.{type(value).__qualname__} "
            f"at {_where(path)}: only tensors, NumPy arrays, dicts, lists, tuples, str, int, "
            "float, bool and None can be saved (Ember never pickles)"
        )

    def _container(self, value, path: list):
        if isinstance(value, Mapping):
            if all(isinstance(k, str) for k in value):
                return {"d": {k: self.encode(v, path + [k]) for k, v in value.items()}}
            items = []
            for k, v in value.items():
                if not (k is None or isinstance(k, (bool, int, float, str))):
                    raise TypeError(
                        f"ember.save: dict keys must be str, int, float, bool or "
                        f"None, got {type(k).__name__} at {_where(path)}"
                    )
                items.append([self.encode(k, path), self.encode(v, path + [k])])
            return {"m": items}
        tag = "l" if isinstance(value, list) else "u"
        return {tag: [self.encode(v, path + [i]) for i, v in enumerate(value)]}


def host_array(arr, where: str) -> np.ndarray:
    """``arr`` as a C-contiguous NumPy array of a storable dtype (what the writer takes)."""
    if arr.dtype not in _CODES:
        raise TypeError(f"ember.save: cannot store an array of dtype {arr.dtype} at {where}")
    arr = to_backend(arr, CPU)
    if not arr.flags.c_contiguous:
        arr = arr.copy(order="C")  # (np.ascontiguousarray would make 0-d arrays 1-d)
    return arr


def _where(path: list) -> str:
    return "the top level" if not path else "".join(f"[{p!r}]" for p in path)


def _write_atomic(path: str, tensors: list, metadata: dict) -> None:
    """Header, then the data (largest items first keeps every tensor aligned); temp file,
    fsync, rename."""
    order = sorted(tensors, key=lambda item: -item[1].dtype.itemsize)
    header: dict = {"__metadata__": metadata}
    offset = 0
    for name, arr in order:
        code = _CODES[arr.dtype]
        header[name] = {
            "dtype": code,
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + arr.nbytes],
        }
        offset += arr.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(len(raw).to_bytes(8, "little"))
            fh.write(raw)
            for _, arr in order:
                if arr.nbytes:
                    flat = arr.reshape(-1)
                    if not _LITTLE:
                        flat = flat.byteswap()
                    fh.write(memoryview(flat.view(np.uint8)))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable (POSIX)
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


# ------------------------------------------------------------------------------------ load
def load(f, map_location=None, *, weights_only: bool = True, mmap=None):
    """Read what ``save`` wrote (or any safetensors file: then a flat dict of tensors).

    ``map_location``: None (each tensor back on the device it was saved from), a device or
    string ("cpu", "cuda:1"), or a dict mapping saved device strings to new ones.
    ``weights_only`` is accepted for torch compatibility; loading is always data-only.
    """
    path = _as_path(f, "load")
    if not (map_location is None or isinstance(map_location, (str, device, int, dict))):
        raise TypeError(
            "ember.load: map_location must be None, a device, a string or a dict, "
            f"got {type(map_location).__name__}"
        )
    header, arrays = _read(path)
    meta = header.get("__metadata__") or {}
    if _META_KEY not in meta:
        dev = _target("cpu", map_location)
        return {name: _tensor(arr, dev, name) for name, arr in arrays.items()}
    try:
        doc = json.loads(meta[_META_KEY])
        if doc.get("version") != _FORMAT_VERSION:
            raise ValueError(f"unknown format version {doc.get('version')!r}")
        return _Decoder(arrays, map_location).decode(doc["tree"])
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise RuntimeError(f"ember.load: '{path}' has corrupt Ember metadata: {exc}") from None


class _Decoder:
    def __init__(self, arrays: dict, map_location):
        self.arrays = arrays
        self.map_location = map_location

    def decode(self, node):
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if not isinstance(node, dict) or len(node) not in (1, 2, 3):
            raise ValueError(f"unexpected node {str(node)[:80]}")
        if "t" in node:
            name = node["t"]
            t = _tensor(self.arrays[name], _target(node.get("dev", "cpu"), self.map_location), name)
            if node.get("rg") and t.data.dtype in dtypes.FLOATING_NP:
                t.requires_grad = True
            return t
        ((tag, payload),) = node.items()
        if tag == "a":
            return self.arrays[payload]
        if tag == "f":
            return float(payload)  # "nan", "inf", "-inf"
        if tag == "d":
            return {k: self.decode(v) for k, v in payload.items()}
        if tag == "m":
            return {self.decode(k): self.decode(v) for k, v in payload}
        if tag == "l":
            return [self.decode(v) for v in payload]
        if tag == "u":
            return tuple(self.decode(v) for v in payload)
        raise ValueError(f"unknown tag {tag!r}")


def _target(saved: str, map_location) -> device:
    if map_location is None:
        return to_device(saved)
    if isinstance(map_location, dict):
        return to_device(map_location.get(saved, saved))
    return to_device(map_location)


def _tensor(arr: np.ndarray, dev: device, name: str) -> Tensor:
    if arr.dtype not in dtypes.FLOATING_NP and arr.dtype not in _INT_NP:
        raise RuntimeError(
            f"ember.load: tensor '{name}' has dtype {arr.dtype}, which Ember tensors do not support"
        )
    return Tensor(arr if dev.type == "cpu" else to_backend(arr, dev))


_INT_NP = frozenset(d.np for d in dtypes.ALL_DTYPES if not d.is_floating_point)


def _read(path: str) -> tuple[dict, dict]:
    """Parse and check the header, then copy each tensor's bytes into a new array."""
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"ember.load: no such file: '{path}'") from None
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            _not_safetensors(path, head, "it is too short to hold a safetensors header")
        n = int.from_bytes(head, "little")
        if n < 2 or n > size - 8 or n > _MAX_HEADER:
            _not_safetensors(path, head, "its first 8 bytes are not a valid header length")
        try:
            header = json.loads(fh.read(n).decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            _not_safetensors(path, head, "its header is not JSON")
        if not isinstance(header, dict):
            _not_safetensors(path, head, "its header is not a JSON object")
        data_start, data_len = 8 + n, size - 8 - n
        arrays = {}
        for name, spec in header.items():
            if name == "__metadata__":
                if spec is not None and not isinstance(spec, dict):
                    raise RuntimeError(f"ember.load: '{path}': __metadata__ is not an object")
                continue
            arr = _empty_for(path, name, spec, data_len)
            if arr.nbytes:
                fh.seek(data_start + spec["data_offsets"][0])
                flat = arr.reshape(-1).view(np.uint8)
                if fh.readinto(flat) != arr.nbytes:
                    raise RuntimeError(f"ember.load: '{path}' is truncated (tensor '{name}')")
                if not _LITTLE:
                    arr = arr.byteswap()
            arrays[name] = arr
    return header, arrays


def _empty_for(path: str, name: str, spec, data_len: int) -> np.ndarray:
    """A fresh array for one header entry, after checking dtype, shape and byte range."""
    try:
        np_dtype = _FROM_CODE[spec["dtype"]]
        shape = tuple(spec["shape"])
        begin, end = spec["data_offsets"]
        ok = (
            all(type(s) is int and s >= 0 for s in shape)
            and type(begin) is int
            and (type(end) is int)
            and 0 <= begin <= end <= data_len
        )
    except (KeyError, TypeError, ValueError):
        code = spec.get("dtype") if isinstance(spec, dict) else None
        if isinstance(spec, dict) and code not in _FROM_CODE and "shape" in spec:
            raise RuntimeError(
                f"ember.load: '{path}': tensor '{name}' has dtype {code!r}, "
                f"which Ember does not support"
            ) from None
        raise RuntimeError(f"ember.load: '{path}': malformed header entry for '{name}'") from None
    count = math.prod(shape)
    if not ok or end - begin != count * np.dtype(np_dtype).itemsize:
        raise RuntimeError(
            f"ember.load: '{path}': tensor '{name}' has inconsistent shape "
            f"{list(shape)} and byte range [{begin}, {end}]"
        )
    return np.empty(shape, dtype=np_dtype)


def _not_safetensors(path: str, head: bytes, why: str):
    hint = ""
    if head[:1] == b"\x80":
        hint = " It looks like a Python pickle, which Ember never loads."
    elif head[:4] == b"PK\x03\x04":
        hint = (
            " It looks like a zip archive such as a torch.save checkpoint, which Ember "
            "never unpickles: convert it with safetensors.torch.save_file(state_dict, ...)."
        )
    raise RuntimeError(f"ember.load: '{path}' is not a safetensors file ({why}).{hint}")


def _as_path(f, op: str) -> str:
    try:
        return os.fspath(f)
    except TypeError:
        raise TypeError(
            f"ember.{op}: expected a file path (str or os.PathLike), got {type(f).__name__}"
        ) from None


__all__ = ["save", "load"]
