"""Where the loops get their data: explicit dataloaders, a DataModule or the module's
``*_dataloader`` methods; how many batches each loop takes (``limit_*_batches``,
``overfit_batches``); and the batch iteration that knows which batch is the last one."""

from __future__ import annotations

import inspect
import math
import warnings

import numpy as np

from ember.tensor.tensor import Tensor
from ember.trainer.hooks import call_datamodule_hook, call_module_hook, is_overridden

_HOOK = {
    "fit": "train_dataloader",
    "validate": "val_dataloader",
    "test": "test_dataloader",
    "predict": "predict_dataloader",
}
_LIMIT = {
    "fit": "limit_train_batches",
    "validate": "limit_val_batches",
    "test": "limit_test_batches",
    "predict": "limit_predict_batches",
}


def _is_loader(obj) -> bool:
    """A dataloader-like object (as opposed to a batch): iterable, not a tensor or a
    plain container."""
    if any(cls.__name__ == "DataLoader" for cls in type(obj).__mro__):
        return True
    return hasattr(obj, "__iter__") and not isinstance(
        obj, (Tensor, np.ndarray, list, tuple, dict, str, bytes)
    )


def as_loader_list(obj) -> list:
    """One dataloader or a list/tuple of them -> a list of dataloaders. A list of batches
    (an iterable of tensors) counts as one dataloader."""
    if isinstance(obj, (list, tuple)) and obj and all(_is_loader(x) for x in obj):
        return list(obj)
    return [obj]


def request_loaders(trainer, stage: str, explicit) -> list | None:
    """The dataloaders for ``stage``: explicit ones, else the datamodule's hook, else the
    module's (when overridden). None when there are none."""
    if explicit is not None:
        return as_loader_list(explicit)
    hook = _HOOK[stage]
    from ember.trainer.datamodule import DataModule
    from ember.trainer.module import TrainingModule

    dm = trainer.datamodule
    if dm is not None and is_overridden(hook, dm, DataModule):
        loaders = call_datamodule_hook(trainer, hook)
    elif is_overridden(hook, trainer.lightning_module, TrainingModule):
        loaders = call_module_hook(trainer, hook)
    else:
        return None
    return None if loaders is None else as_loader_list(loaders)


def loader_length(loader) -> float:
    try:
        return len(loader)
    except (TypeError, NotImplementedError):
        return math.inf


def limited_batches(loader, limit, stage_name: str, limit_name: str) -> int | float:
    """How many batches of ``loader`` a loop takes under ``limit`` (an int count or a
    fraction of the length)."""
    n = loader_length(loader)
    if isinstance(limit, int):
        return min(n, limit)
    if limit == 1.0:
        return n
    if n == math.inf:
        raise ValueError(
            f"{limit_name}={limit}: a fraction needs a dataloader with a length, "
            f"but the {stage_name} dataloader has none; pass an int instead"
        )
    k = int(n * limit)
    if k == 0 and limit > 0.0:
        raise ValueError(
            f"{limit_name}={limit} of the {stage_name} dataloader is "
            f"{limit} * {n} < 1 batch; increase it to at least {1.0 / n:.4g} or "
            "pass an int"
        )
    return k


def iterate(loader, num_batches):
    """Yield ``(batch_idx, batch, is_last)`` for at most ``num_batches`` batches.

    With a known length the last batch is known without reading ahead (so a dataloader's
    position stays exact for resuming); otherwise one batch is read ahead.
    """
    if num_batches <= 0:
        return
    it = iter(loader)
    known = loader_length(loader) < math.inf
    if known:
        for idx in range(int(num_batches)):
            try:
                batch = next(it)
            except StopIteration:
                return
            yield idx, batch, idx + 1 == num_batches
        return
    try:
        nxt = next(it)
    except StopIteration:
        return
    idx = 0
    while True:
        cur = nxt
        if idx + 1 >= num_batches:
            yield idx, cur, True
            return
        try:
            nxt = next(it)
        except StopIteration:
            yield idx, cur, True
            return
        yield idx, cur, False
        idx += 1


def sequential_copy(loader):
    """The same DataLoader without shuffling (for overfit_batches), or the loader itself
    when it cannot be rebuilt."""
    sampler = getattr(loader, "sampler", None)
    if (
        sampler is None
        or type(sampler).__name__ != "RandomSampler"
        or getattr(loader, "batch_size", None) is None
    ):
        return loader
    from ember.data.dataloader import DataLoader

    warnings.warn(
        "overfit_batches: the training dataloader shuffles; using it without "
        "shuffling so that the same batches are seen every epoch",
        UserWarning,
        stacklevel=3,
    )
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        shuffle=False,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        drop_last=loader.drop_last,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context,
        generator=loader.generator,
    )


_CAPACITY: dict = {}


def _positional_capacity(fn) -> float:
    func = getattr(fn, "__func__", fn)
    cap = _CAPACITY.get(func)
    if cap is None:
        try:
            params = inspect.signature(fn).parameters.values()
        except (TypeError, ValueError):
            return math.inf
        cap = 0
        for p in params:
            if p.kind == p.VAR_POSITIONAL:
                cap = math.inf
                break
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                cap += 1
        _CAPACITY[func] = cap
    return cap


def step_args(fn, hook: str, batch, batch_idx: int, dataloader_idx: int | None) -> tuple:
    """Arguments for a step: ``batch``, plus ``batch_idx`` when the step takes it, plus
    ``dataloader_idx`` when there are several dataloaders."""
    cap = _positional_capacity(fn)
    if dataloader_idx is not None:
        if cap < 3:
            raise TypeError(
                f"{hook} is run on several dataloaders, so it must accept a "
                f"dataloader_idx argument: def {hook}(self, batch, batch_idx, "
                "dataloader_idx=0)"
            )
        return batch, batch_idx, dataloader_idx
    return (batch, batch_idx) if cap >= 2 else (batch,)


def transfer_batch(trainer, batch, dataloader_idx: int = 0):
    """on_before_batch_transfer, transfer_batch_to_device, on_after_batch_transfer; each from
    the datamodule when it overrides the hook, else from the module."""
    from ember.trainer.datamodule import DataModule

    dm = trainer.datamodule
    device = trainer.strategy.root_device
    for hook, args in (
        ("on_before_batch_transfer", (dataloader_idx,)),
        ("transfer_batch_to_device", (device, dataloader_idx)),
        ("on_after_batch_transfer", (dataloader_idx,)),
    ):
        if dm is not None and is_overridden(hook, dm, DataModule):
            batch = call_datamodule_hook(trainer, hook, batch, *args)
        else:
            batch = call_module_hook(trainer, hook, batch, *args)
    return batch
