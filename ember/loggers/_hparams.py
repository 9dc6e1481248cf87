"""Hyperparameters for loggers: plain data for ``hparams.yaml``, flat scalars for TensorBoard.

``hparams.yaml`` keeps the nesting the user gave (it is read back by people and by resume);
TensorBoard's HParams plugin only knows flat ``name -> bool/number/str``, so nested dicts are
flattened with ``/`` and everything else is stringified, as Lightning does. PyYAML is imported
only when a file is written or read.
"""

from __future__ import annotations

import dataclasses
import os
from argparse import Namespace
from collections.abc import Mapping

import numpy as np

from ember.tensor.tensor import Tensor

HPARAMS_FILE = "hparams.yaml"


def params_to_dict(params, owner: str = "log_hyperparams") -> dict:
    """Accept a dict (or any Mapping, e.g. an OmegaConf DictConfig), a Namespace, a dataclass
    instance or None."""
    if params is None:
        return {}
    if isinstance(params, Namespace):
        return dict(vars(params))
    if dataclasses.is_dataclass(params) and not isinstance(params, type):
        return {f.name: getattr(params, f.name) for f in dataclasses.fields(params)}
    if isinstance(params, Mapping):
        return {str(k): v for k, v in params.items()}
    raise TypeError(
        f"{owner}: params must be a dict, a Namespace or a dataclass, got {type(params).__name__}"
    )


def _array_of(value):
    """A NumPy view of a Tensor / array-like, or None when ``value`` is not one."""
    if isinstance(value, Tensor):
        return value.numpy(force=True)
    if isinstance(value, (np.ndarray, np.generic)):
        return np.asarray(value)
    if hasattr(value, "get") and hasattr(value, "shape") and hasattr(value, "dtype"):
        return value.get()  # a CuPy array
    return None


def to_plain(value):
    """Recursively turn ``value`` into data ``yaml.safe_dump`` accepts (and JSON could)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (Namespace, Mapping)) or (
        dataclasses.is_dataclass(value) and not isinstance(value, type)
    ):
        return {str(k): to_plain(v) for k, v in params_to_dict(value).items()}
    if isinstance(value, (set, frozenset)):
        value = sorted(value, key=repr)  # a stable order in the file
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    arr = _array_of(value)
    if arr is not None:
        if arr.dtype.kind == "V":  # ml_dtypes (bfloat16, float8...)
            arr = arr.astype(np.float64)
        return arr.item() if arr.ndim == 0 else arr.tolist()
    return str(value)


def flatten_params(params: Mapping, sep: str = "/") -> dict:
    """``{"opt": {"lr": 1e-3}}`` -> ``{"opt/lr": 1e-3}`` (Namespaces and dataclasses too)."""
    flat: dict = {}

    def walk(prefix: str, value) -> None:
        nested = isinstance(value, (Namespace, Mapping)) or (
            dataclasses.is_dataclass(value) and not isinstance(value, type)
        )
        if nested and prefix and not params_to_dict(value):
            flat[prefix] = value  # an empty dict stays as a value
            return
        if nested:
            for k, v in params_to_dict(value).items():
                walk(f"{prefix}{sep}{k}" if prefix else str(k), v)
        else:
            flat[prefix] = value

    walk("", params)
    return flat


def sanitize_for_tensorboard(flat: Mapping) -> dict:
    """Keep bool/int/float/str; 0-d tensors and NumPy scalars become numbers; the rest str."""
    out = {}
    for k, v in flat.items():
        if not isinstance(v, (bool, int, float, str)):
            arr = _array_of(v)
            v = to_plain(v)
            if arr is None or arr.ndim != 0 or arr.dtype.kind not in "biufV":
                v = str(v)
        out[k] = v
    return out


def save_hparams_yaml(path: str, hparams: Mapping, owner: str = "logger") -> None:
    """Write ``hparams`` to ``path`` atomically (temp file + rename): a crash mid-write never
    leaves a truncated file that resume would then fail to read."""
    import yaml

    tmp = f"{path}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            yaml.safe_dump(to_plain(dict(hparams)), fh, sort_keys=False, default_flow_style=False)
        os.replace(tmp, path)
    except OSError as exc:
        raise OSError(f"{owner}: cannot write '{path}': {exc.strerror or exc}") from exc


def load_hparams_yaml(path: str) -> dict:
    """Read an ``hparams.yaml`` back (safe_load: loading never executes code)."""
    import yaml

    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    return data or {}
