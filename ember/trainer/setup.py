"""Trainer arguments: validation with clear errors, Lightning's defaults, and the default
callbacks, loggers and strategy built from the layers below."""

from __future__ import annotations

import datetime
import os
import re

_CLIP_ALGORITHMS = ("norm", "value")


def batch_limit(value, name: str):
    """Lightning's rule: None -> 1.0 (all); a float in [0, 1] is a fraction; an int (or a
    float with an integer value above 1) is a count of batches."""
    if value is None:
        return 1.0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"Trainer({name}={value!r}): expected an int or a float")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"Trainer({name}={value}): must be >= 0")
        return value
    if 0.0 <= value <= 1.0:
        return float(value)
    if value > 1 and value % 1.0 == 0:
        return int(value)
    raise ValueError(
        f"Trainer({name}={value}): must be a fraction in [0.0, 1.0] or an int number of batches"
    )


def non_negative_int(value, name: str, minimum: int = 0, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"Trainer({name}={value!r}): expected an int >= {minimum}")
    return value


_TIME = re.compile(r"^(\d+):(\d+):(\d+):(\d+)$")


def parse_max_time(value) -> datetime.timedelta | None:
    """'DD:HH:MM:SS', a dict of timedelta arguments, or a timedelta."""
    if value is None:
        return None
    if isinstance(value, datetime.timedelta):
        return value
    if isinstance(value, dict):
        try:
            return datetime.timedelta(**value)
        except TypeError as exc:
            raise ValueError(
                f"Trainer(max_time={value!r}): the dict must hold timedelta "
                f"arguments (days, hours, minutes, seconds...): {exc}"
            ) from None
    if isinstance(value, str):
        m = _TIME.match(value.strip())
        if m:
            d, h, mi, s = (int(x) for x in m.groups())
            return datetime.timedelta(days=d, hours=h, minutes=mi, seconds=s)
    raise ValueError(
        f"Trainer(max_time={value!r}): expected 'DD:HH:MM:SS', a dict such as "
        "{'hours': 1} or a datetime.timedelta"
    )


def parse_precision(value) -> str:
    """Lightning's precision spellings -> the canonical name (see precision.py)."""
    from ember.trainer.precision import parse_precision as parse

    return parse(value)


def parse_clip(value, algorithm):
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0
    ):
        raise ValueError(f"Trainer(gradient_clip_val={value!r}): expected a number >= 0")
    if algorithm is None:
        algorithm = "norm"
    if algorithm not in _CLIP_ALGORITHMS:
        raise ValueError(
            f"Trainer(gradient_clip_algorithm={algorithm!r}) is invalid; allowed "
            f"algorithms: {list(_CLIP_ALGORITHMS)}"
        )
    return value, algorithm


_NONFINITE = ("raise", "skip", "warn")


def parse_nonfinite(value) -> str | None:
    if value is not None and value not in _NONFINITE:
        raise ValueError(
            f"Trainer(on_nonfinite_loss={value!r}): expected one of {list(_NONFINITE)} or None"
        )
    return value


def parse_fast_dev_run(value) -> int:
    if isinstance(value, bool):
        return int(value)
    if not isinstance(value, int) or value < 0:
        raise ValueError(f"Trainer(fast_dev_run={value!r}): expected a bool or an int >= 0")
    return value


def resolve_device(accelerator, devices):
    """The device of a single-process run, from ``accelerator`` and ``devices``."""
    from ember.tensor.device import device as make_device

    acc = "cpu" if accelerator is None else str(accelerator).lower()
    if acc not in ("cpu", "cuda", "gpu", "auto"):
        raise ValueError(
            f"Trainer(accelerator={accelerator!r}): expected 'cpu', 'cuda' (or 'gpu') or 'auto'"
        )
    if acc == "auto":
        from ember.tensor.backend import cuda_is_available

        acc = "cuda" if cuda_is_available() else "cpu"
    elif acc in ("cuda", "gpu"):
        from ember.tensor.backend import cupy_module

        try:
            cupy_module()
        except RuntimeError as exc:
            raise RuntimeError(f"Trainer(accelerator={accelerator!r}): {exc}") from None
        acc = "cuda"
    index = 0
    if devices in (None, "auto", 1, "1", -1, "-1"):
        pass
    elif isinstance(devices, (list, tuple)) and len(devices) == 1 and acc == "cuda":
        index = int(devices[0])
    else:
        raise ValueError(
            f"Trainer(devices={devices!r}): one process drives one device (use 1 "
            "or 'auto'); to train on several, launch one process per device with "
            "mpiexec and a distributed strategy"
        )
    return make_device("cpu") if acc == "cpu" else make_device("cuda", index)


def resolve_strategy(strategy, device):
    """A Strategy instance, or a name: 'auto' (data parallel when an MPI launcher started more
    than one rank, else one device), 'ddp' or 'single_device'."""
    from ember.distributed.strategy import SingleDeviceStrategy, Strategy

    if isinstance(strategy, Strategy):
        return strategy
    if strategy == "single_device":
        return SingleDeviceStrategy(device)
    if strategy in (None, "auto", "ddp"):
        from ember.distributed.ddp_strategy import strategy_for

        return strategy_for(strategy, device)
    raise ValueError(
        f"Trainer(strategy={strategy!r}): expected 'auto', 'ddp', 'single_device' "
        "or a Strategy instance"
    )


def share_log_versions(trainer) -> None:
    """Rank 0's logger versions on every rank, so ``trainer.log_dir`` (and the checkpoint
    directory under it) is the same everywhere; only rank 0 creates it."""
    strategy = trainer.strategy
    if strategy.world_size <= 1:
        return
    for logger in trainer.loggers:
        if getattr(logger, "_version", 0) is None:
            version = logger.version if strategy.is_global_zero else None
            logger._version = strategy.broadcast(version)


def root_dir(value) -> str:
    return os.fspath(value) if value is not None else os.getcwd()


def _is_progress_bar(callback) -> bool:
    return any(c.__name__ in ("ProgressBar", "TQDMProgressBar") for c in type(callback).__mro__)


def _has(callbacks, name: str) -> bool:
    return any(any(c.__name__ == name for c in type(cb).__mro__) for cb in callbacks)


def default_callbacks(
    callbacks: list,
    enable_progress_bar: bool,
    enable_model_summary: bool,
    enable_checkpointing: bool,
) -> list:
    """The user's callbacks plus the defaults the user did not pass: the progress bar, the
    model summary and (once issue 6 adds it to ember.callbacks) ModelCheckpoint."""
    import ember.callbacks as cbs

    out = list(callbacks)
    bars = [cb for cb in out if _is_progress_bar(cb)]
    if len(bars) > 1:
        raise ValueError(f"Trainer(callbacks=...): found {len(bars)} progress bars; pass one")
    if bars and not enable_progress_bar:
        raise ValueError(
            f"Trainer(enable_progress_bar=False) but {type(bars[0]).__name__} is "
            "in callbacks; remove one of them"
        )
    if enable_progress_bar and not bars:
        out.append(cbs.TQDMProgressBar())
    if enable_model_summary and not _has(out, "ModelSummary"):
        out.append(cbs.ModelSummary())
    checkpoint = getattr(cbs, "ModelCheckpoint", None)  # the seam for issue 6
    if enable_checkpointing and checkpoint is not None and not _has(out, "ModelCheckpoint"):
        out.append(checkpoint())
    return order_callbacks(out)


def order_callbacks(callbacks: list) -> list:
    """Checkpoint callbacks run last (Lightning), so they see what the others did."""
    ckpt = [cb for cb in callbacks if _has([cb], "ModelCheckpoint") or _has([cb], "Checkpoint")]
    return [cb for cb in callbacks if cb not in ckpt] + ckpt


def default_loggers(logger, save_dir: str) -> list:
    """``logger=True`` (or None): a TensorBoardLogger in ``save_dir/lightning_logs``."""
    if logger is None or logger is True:
        from ember.loggers.tensorboard import TensorBoardLogger

        return [TensorBoardLogger(save_dir=save_dir, name="lightning_logs")]
    if logger is False:
        return []
    loggers = list(logger) if isinstance(logger, (list, tuple)) else [logger]
    for lg in loggers:
        if not hasattr(lg, "log_metrics"):
            raise TypeError(
                f"Trainer(logger=...): {type(lg).__name__} is not a Logger (it has no log_metrics)"
            )
    return loggers
