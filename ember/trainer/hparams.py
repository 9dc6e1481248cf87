"""``save_hyperparameters``: capture the ``__init__`` arguments of a TrainingModule or a
DataModule into ``self.hparams``, as Lightning does, but keep only JSON-serialisable values so
that checkpoints (safetensors + JSON, never pickle) and loggers can store them."""

from __future__ import annotations

import copy
import inspect
import json
import types
import warnings
from collections.abc import Mapping


class AttributeDict(dict):
    """A dict whose keys are also attributes: ``hparams.lr`` is ``hparams["lr"]``."""

    def __getattr__(self, key: str):
        try:
            return self[key]
        except KeyError as exc:
            raise AttributeError(f"'AttributeDict' object has no attribute '{key}'") from exc

    def __setattr__(self, key: str, value) -> None:
        self[key] = value

    def __delattr__(self, key: str) -> None:
        try:
            del self[key]
        except KeyError as exc:
            raise AttributeError(key) from exc

    def __repr__(self) -> str:
        if not self:
            return ""
        width = max(len(str(k)) for k in self) + 2
        rows = sorted(self.items(), key=lambda kv: str(kv[0]))
        return "\n".join(f"{repr(str(k)):>{width}}: {v!r}" for k, v in rows)


def _init_args_of(frame: types.FrameType, obj) -> dict | None:
    """The arguments of the ``__init__`` running in ``frame`` (``**kwargs`` merged in), or
    None when ``frame`` is not an ``__init__`` of ``obj``."""
    code = frame.f_code
    if code.co_name != "__init__" or code.co_argcount < 1:
        return None
    local = frame.f_locals
    names = code.co_varnames
    if local.get(names[0]) is not obj:
        return None
    n_named = code.co_argcount + code.co_kwonlyargcount
    args = {name: local[name] for name in names[1:n_named] if name in local}
    pos = n_named
    if code.co_flags & inspect.CO_VARARGS:
        pos += 1  # *args have no names: Lightning drops them too
    if code.co_flags & inspect.CO_VARKEYWORDS:
        extra = local.get(names[pos])
        if isinstance(extra, Mapping):
            args.update(extra)
    return args


def collect_init_args(frame: types.FrameType, obj) -> dict:
    """Merge the arguments of every ``__init__`` of ``obj`` on the stack, starting at
    ``frame``; the outermost (most derived class) wins on a clash."""
    merged: dict = {}
    while frame is not None:
        args = _init_args_of(frame, obj)
        if args is None:
            break
        merged = {**merged, **args}
        frame = frame.f_back
    return merged


def _json_ok(value) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError, OverflowError):
        return False
    return True


class HyperparametersMixin:
    """``save_hyperparameters()`` and ``hparams`` for TrainingModule and DataModule."""

    @property
    def hparams(self) -> AttributeDict:
        d = self.__dict__
        if "_hparams" not in d:
            object.__setattr__(self, "_hparams", AttributeDict())
        return d["_hparams"]

    @property
    def hparams_initial(self) -> AttributeDict:
        """The hyperparameters as they were saved (later edits of ``hparams`` do not show)."""
        return copy.deepcopy(self.__dict__.get("_hparams_initial") or AttributeDict())

    def save_hyperparameters(
        self, *args, ignore=None, frame: types.FrameType | None = None, logger: bool = True
    ) -> None:
        """Store hyperparameters in ``self.hparams``.

        Without arguments, every argument of the calling ``__init__`` (and of the ``__init__``
        chain above it) is kept. String arguments pick names among them; a dict (or an object
        with ``vars()``) is taken as is. ``ignore`` drops names. Values that JSON cannot
        hold (modules, tensors, functions) are skipped with a warning, since checkpoints
        and loggers store hyperparameters as JSON/YAML.
        """
        object.__setattr__(self, "_log_hyperparams", bool(logger))
        if frame is None:
            frame = inspect.currentframe().f_back
        ignore = [ignore] if isinstance(ignore, str) else list(ignore or [])
        if len(args) == 1 and not isinstance(args[0], str):
            given = args[0]
            if isinstance(given, Mapping):
                hp = dict(given)
            elif hasattr(given, "__dict__"):
                hp = dict(vars(given))
            else:
                raise ValueError(
                    f"save_hyperparameters: unsupported argument of type "
                    f"{type(given).__name__}; pass names, a dict or a namespace"
                )
        else:
            init_args = collect_init_args(frame, self)
            if args:
                missing = [a for a in args if a not in init_args]
                if missing:
                    raise ValueError(
                        f"save_hyperparameters: {missing} are not arguments of "
                        f"{type(self).__name__}.__init__ (it takes "
                        f"{sorted(init_args)})"
                    )
                hp = {a: init_args[a] for a in args}
            else:
                hp = init_args
        del frame
        kept = AttributeDict()
        skipped = []
        for key, value in hp.items():
            if key in ignore:
                continue
            if _json_ok(value):
                kept[key] = value
            else:
                skipped.append(key)
        if skipped:
            warnings.warn(
                f"save_hyperparameters: skipped {skipped} of {type(self).__name__}: their values "
                "are not JSON-serialisable (hyperparameters go into checkpoints and loggers as "
                "JSON). Pass ignore=[...] to silence this.",
                UserWarning,
                stacklevel=2,
            )
        self.hparams.update(kept)
        object.__setattr__(self, "_hparams_initial", copy.deepcopy(AttributeDict(self.hparams)))
