"""The checkpoint file: one safetensors file, never pickle.

Layout (readable with the plain ``safetensors`` library):

- The model's ``state_dict`` tensors under their exact keys (``layer.weight``), so
  PyTorch takes the weights (safetensors.torch load_file, then load_state_dict).
- Every other array (optimizer state, RNG states, logged values) under a namespaced key made
  of its path in the checkpoint dict, joined with "/" (``optimizer_states/0/state/3/exp_avg``,
  ``rng_states/numpy/state``); a model loader ignores them.
- ``__metadata__["ember_checkpoint"]``: ONE JSON document: format and ember version, epoch,
  global_step, the model keys, the rest of the checkpoint dict as a JSON tree (the encoding of
  ``ember.save``: tuples, int keys and non-finite floats survive), and the sha256 of every
  tensor's bytes. ``__metadata__["ember_checkpoint_sha256"]`` is the sha256 of that document.

So every byte that matters is covered: a truncated or bit-flipped file fails the header parse,
the byte-range check, a tensor checksum or the document checksum, and the error names the file.
Writes reuse ``ember.save``'s atomic writer: temp file in the same directory, fsync, rename,
fsync of the directory. sha256 (not crc32) because hashlib's is fast enough (~1-2 GB/s) and a
checksum that is also a fingerprint is handy for comparing checkpoints.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import sys
from collections import OrderedDict
from typing import NoReturn

import numpy as np

from ember.tensor.device import CPU
from ember.tensor.serialization import _Decoder, _Encoder, _read, _tensor, _write_atomic, host_array
from ember.tensor.tensor import Tensor

FORMAT = "ember.checkpoint"
FORMAT_VERSION = 1
META_KEY = "ember_checkpoint"
SUM_KEY = "ember_checkpoint_sha256"
_LITTLE = sys.byteorder == "little"
_MAX_HEADER = 100_000_000


class CheckpointError(RuntimeError):
    """A file that is not an Ember checkpoint, or one that is damaged."""


def _ember_version() -> str:
    import ember

    return getattr(ember, "__version__", "unknown")


def digest(arr: np.ndarray) -> str:
    """sha256 of an array's bytes as stored in the file (little-endian, C order)."""
    flat = arr.reshape(-1)
    if not _LITTLE:
        flat = flat.byteswap()
    return hashlib.sha256(memoryview(np.ascontiguousarray(flat).view(np.uint8))).hexdigest()


# ------------------------------------------------------------------------------------ write
def encode_checkpoint(checkpoint: dict) -> tuple[list, dict]:
    """(tensors as (name, array), safetensors metadata) for a checkpoint dict."""
    state = checkpoint.get("state_dict") or {}
    tensors = []
    for key, value in state.items():
        arr = value.data if isinstance(value, Tensor) else value
        tensors.append((str(key), host_array(arr, f"state_dict[{key!r}]")))
    enc = _Encoder(reserved=[name for name, _ in tensors])
    rest = {k: v for k, v in checkpoint.items() if k != "state_dict"}
    try:
        tree = enc.encode(rest, [])
    except (TypeError, ValueError) as exc:
        raise type(exc)(str(exc).replace("ember.save:", "Trainer.save_checkpoint:", 1)) from None
    tensors += enc.tensors
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "ember_version": _ember_version(),
        "epoch": checkpoint.get("epoch"),
        "global_step": checkpoint.get("global_step"),
        "state_dict": [name for name, _ in tensors[: len(state)]],
        "tree": tree,
        "checksum": "sha256",
        "checksums": {name: digest(arr) for name, arr in tensors},
    }
    text = json.dumps(doc, allow_nan=False, separators=(",", ":"))
    meta = {
        "format": "pt",
        META_KEY: text,
        SUM_KEY: hashlib.sha256(text.encode("utf-8")).hexdigest(),
    }
    return tensors, meta


def _stale_temps(path: str) -> list[str]:
    """Temp files a crashed writer left for ``path`` (``.<name>.<12 hex>.tmp``)."""
    directory, name = os.path.split(os.path.abspath(path))
    pattern = re.compile(rf"^\.{re.escape(name)}\.[0-9a-f]{{12}}\.tmp$")
    try:
        return [os.path.join(directory, f) for f in os.listdir(directory) if pattern.match(f)]
    except OSError:
        return []


def write_checkpoint(path, checkpoint: dict) -> None:
    """Write ``checkpoint`` atomically: a crash leaves the previous file at ``path`` intact.

    Disk errors raise an OSError of the same kind (errno kept) that names ``path``."""
    path = os.fspath(path)
    tensors, meta = encode_checkpoint(checkpoint)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        if os.path.isdir(path):
            raise IsADirectoryError(errno.EISDIR, "it is a directory")
        os.makedirs(directory, exist_ok=True)
        for stale in _stale_temps(path):  # one writer per path: a leftover is from a crash
            os.unlink(stale)
        _write_atomic(path, tensors, meta)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise type(exc)(
            exc.errno,
            f"Trainer.save_checkpoint: cannot write '{path}': {reason} "
            "(any previous checkpoint at this path is left untouched)",
        ) from exc


# ------------------------------------------------------------------------------------- read
def _not_ours(path: str, why: str) -> NoReturn:
    raise CheckpointError(f"not an Ember checkpoint: {path} ({why})")


def _sniff(path: str) -> None:
    """Reject what is not a safetensors file before parsing anything (no code ever runs)."""
    if os.path.isdir(path):
        _not_ours(path, "it is a directory")
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
        size = os.path.getsize(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"no such checkpoint: '{path}'") from None
    n = int.from_bytes(head[:8], "little") if len(head) >= 8 else -1
    if len(head) < 9 or not 2 <= n <= min(size - 8, _MAX_HEADER) or head[8:9] != b"{":
        hint = "it is not a safetensors file"
        if head[:1] == b"\x80":
            hint += "; it looks like a Python pickle, which Ember never loads"
        elif head[:4] == b"PK\x03\x04":
            hint += (
                "; it looks like a zip archive such as a torch.save file, which Ember never "
                "unpickles"
            )
        _not_ours(path, hint)


def _corrupt(path: str, why: str) -> NoReturn:
    raise CheckpointError(f"corrupt Ember checkpoint: {path}: {why}")


def read_checkpoint(path) -> dict:
    """The checkpoint dict saved at ``path``, after checking every checksum. Tensors come back
    as ember Tensors (model state) or NumPy arrays, on the CPU."""
    path = os.fspath(path)
    _sniff(path)
    try:
        header, arrays = _read(path)
    except RuntimeError as exc:
        text = str(exc).replace(f"ember.load: '{path}': ", "").replace(f"ember.load: '{path}' ", "")
        _corrupt(path, text)
    meta = header.get("__metadata__") or {}
    if META_KEY not in meta:
        _not_ours(
            path,
            "a safetensors file without Ember checkpoint metadata; read plain "
            "tensor files with ember.load or safetensors",
        )
    text = meta[META_KEY]
    if not isinstance(text, str) or hashlib.sha256(text.encode("utf-8")).hexdigest() != meta.get(
        SUM_KEY
    ):
        _corrupt(path, "the metadata document does not match its checksum")
    try:
        doc = json.loads(text)
    except ValueError:
        _corrupt(path, "the metadata document is not JSON")
    if doc.get("format") != FORMAT or meta.get("format") != "pt":
        _not_ours(path, f"unknown format {doc.get('format')!r}")
    if doc.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"Ember checkpoint {path} has format version "
            f"{doc.get('format_version')!r}; this Ember "
            f"({_ember_version()}) reads version {FORMAT_VERSION}"
        )
    sums = doc.get("checksums") or {}
    if set(sums) != set(arrays):
        odd = sorted(set(sums) ^ set(arrays))[:5]
        _corrupt(path, f"the tensors and their checksums do not match ({odd})")
    for name, arr in arrays.items():
        if digest(arr) != sums[name]:
            _corrupt(path, f"tensor '{name}' does not match its sha256 checksum")
    try:
        state = OrderedDict((k, _tensor(arrays[k], CPU, k)) for k in doc["state_dict"])
        rest = _Decoder(arrays, "cpu").decode(doc["tree"])
    except (KeyError, ValueError, TypeError, AttributeError, RuntimeError) as exc:
        _corrupt(path, f"unreadable metadata: {exc}")
    return {"state_dict": state, **rest}


__all__ = [
    "CheckpointError",
    "read_checkpoint",
    "write_checkpoint",
    "encode_checkpoint",
    "FORMAT_VERSION",
]
