"""What a checkpoint holds and how a run comes back from it (the file format is
checkpoint_io.py).

The checkpoint dict uses Lightning's keys (``epoch``, ``global_step``, ``state_dict``,
``loops``, ``callbacks``, ``optimizer_states``, ``lr_schedulers``, ``hyper_parameters``...) plus
``rng_states`` (Ember's default generator, NumPy's and Python's global generators) and
``grad_scaler``. Resuming is exact on the CPU: the loop position, the dataloader/sampler position,
every RNG and the logged-metric accumulators are restored, so an interrupted and resumed run
produces the same weights and the same logs as an uninterrupted one.

A checkpoint saved *inside* a batch (``on_train_batch_end``, validation) or an epoch end
records where: the resumed run first finishes that batch or epoch end (logging, validation,
schedulers, counters) as the interrupted run would have. The loggers get ``purge_step`` = the
logging step of the save point, and what the Trainer had already sent to the loggers at that step
is sent again, so a log has every point once whether or not the old run got past the save.
(Values a callback writes straight to a logger at that step before the save, e.g.
LearningRateMonitor's, are not replayed.)
"""

from __future__ import annotations

import copy
import os
import random
import re
import warnings

import numpy as np

from ember.tensor.backend import to_backend
from ember.tensor.device import CPU
from ember.trainer.checkpoint_io import read_checkpoint, write_checkpoint
from ember.trainer.hooks import call_callback_hooks, call_module_hook

_LAST = re.compile(r"^last(-v\d+)?\.ckpt$")


# ------------------------------------------------------------------------------- RNG states
def rng_states() -> dict:
    """Every global generator as arrays + JSON (no pickle): Ember's default generator,
    NumPy's legacy global one, Python's ``random``."""
    from ember.tensor.random import default_generator, get_cuda_rng_states

    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    cuda = {str(i): st.data for i, st in get_cuda_rng_states().items()}  # per device used
    return {
        **({"cuda": cuda} if cuda else {}),
        "ember": default_generator.get_state().data,
        "numpy": {
            "bit_generator": name,
            "state": keys,
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {
            "version": version,
            "state": np.asarray(internal, dtype=np.int64),
            "gauss_next": gauss_next,
        },
    }


def set_rng_states(states: dict) -> None:
    from ember.tensor.random import default_generator, set_cuda_rng_states

    if "ember" in states:
        default_generator.set_state(np.asarray(states["ember"], dtype=np.uint8))
    if "cuda" in states:  # restored even on a CPU-only machine: the state is 16 plain bytes
        set_cuda_rng_states({int(i): np.asarray(v, np.uint8) for i, v in states["cuda"].items()})
    if "numpy" in states:
        st = states["numpy"]
        np.random.set_state(
            (
                st["bit_generator"],
                np.asarray(st["state"], dtype=np.uint32),
                int(st["pos"]),
                int(st["has_gauss"]),
                float(st["cached_gaussian"]),
            )
        )
    if "python" in states:
        st = states["python"]
        random.setstate((int(st["version"]), tuple(int(x) for x in st["state"]), st["gauss_next"]))


# ------------------------------------------------------------------------------ saving state
def _host(value):
    """A logged value for the file: floats stay, device arrays come to the CPU."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return np.asarray(to_backend(value, CPU))


def _on_device(value, device):
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return to_backend(np.asarray(value), device)


def _metrics_state(trainer) -> dict:
    from ember.trainer.logging import _Entry

    store, connector = trainer._metrics, trainer._logger_connector
    entries = [
        {
            slot: _host(getattr(e, slot)) if slot in ("value", "total") else getattr(e, slot)
            for slot in _Entry.__slots__
        }
        for e in connector.train_results.entries.values()
    ]
    return {
        "callback": {k: _host(v) for k, v in store.callback.items()},
        "logged": {k: _host(v) for k, v in store.logged.items()},
        "pbar": {k: _host(v) for k, v in store.pbar.items()},
        "pending_log": {k: _host(v) for k, v in connector._pending_log.items()},
        "results": entries,
        "val_logged_steps": trainer._val_loop.logged_steps,
    }


def _loader_state(loader) -> dict:
    from ember.tensor.random import Generator

    state = (
        loader.state_dict()
        if hasattr(loader, "state_dict") and hasattr(loader, "load_state_dict")
        else None
    )
    gen = getattr(loader, "generator", None)
    return {
        "state": state,
        "generator": gen.get_state().data if isinstance(gen, Generator) else None,
    }


def _loop_state(trainer) -> dict:
    """The fit loop's counters and position, with what resuming there needs."""
    import time

    loop = trainer._fit_loop
    counters = trainer._progress.state_dict()
    position = tuple(loop.position)
    if position[0] == "batch":  # inside training_step / backward / the optimizer step
        warnings.warn(
            f"Trainer.save_checkpoint inside training batch {position[1]} (before "
            "on_train_batch_end): a run resumed from it continues after that batch "
            "and is not an exact continuation",
            RuntimeWarning,
            stacklevel=4,
        )
        counters["batches_seen"] += 1
        counters["batch_idx"] = position[1] + 1
        position = ("batch_end",) + position[1:]
    if position[0] in ("batch_end", "validation") and position[3]:
        warnings.warn(
            "Trainer.save_checkpoint inside a gradient accumulation window: the "
            "accumulated gradients are not saved",
            RuntimeWarning,
            stacklevel=4,
        )
    steps = counters["batches_that_stepped"]
    log_step = max(steps - 1, 0) if position[0] == "epoch_end" else steps
    complete = (
        position[0] == "epoch_end"
        or counters["batch_idx"] == 0
        or (position[0] in ("batch_end", "validation") and position[2])
    )
    started = loop._start_time
    elapsed = time.monotonic() - started if started is not None else loop.time_offset
    loader = loop.train_loader
    return {
        "progress": counters,
        "position": list(position),
        "log_step": log_step,
        "replay": [[s, m] for s, m in trainer._logger_connector.sent if s >= log_step],
        "epoch_complete": complete,
        # a batch whose step "16-mixed" skipped must not step the per-step plateau
        # schedulers when the resumed run finishes it
        "skipped_step": bool(getattr(trainer, "_skipped_step", False)),
        "time_elapsed": elapsed,
        "metrics": _metrics_state(trainer),
        "dataloader": _loader_state(loader) if loader is not None else None,
    }


def _grad_scaler(trainer):
    """The mixed-precision GradScaler, when there is one (issue 9 wires it in)."""
    scaler = getattr(trainer, "grad_scaler", None)
    if scaler is None:
        scaler = getattr(getattr(trainer, "precision_plugin", None), "scaler", None)
    return scaler if hasattr(scaler, "state_dict") else None


def _hparams_saved(obj) -> bool:
    return obj is not None and obj.__dict__.get("_hparams_initial") is not None


def dump_checkpoint(trainer, weights_only: bool = False) -> dict:
    """The checkpoint dict (Lightning's keys); ``on_save_checkpoint`` hooks may add
    JSON-able values or arrays."""
    import ember

    module = trainer.lightning_module
    ckpt: dict = {
        "epoch": trainer.current_epoch,
        "global_step": trainer.global_step,
        "ember_version": ember.__version__,
        "state_dict": module.state_dict(),
    }
    if not weights_only:
        ckpt["loops"] = {"fit_loop": _loop_state(trainer)}
        ckpt["callbacks"] = {}
        for cb in trainer.callbacks:
            state = cb.state_dict() if hasattr(cb, "state_dict") else None
            if state:
                ckpt["callbacks"][getattr(cb, "state_key", type(cb).__qualname__)] = state
        ckpt["optimizer_states"] = [opt.state_dict() for opt in trainer.optimizers]
        ckpt["lr_schedulers"] = [c.scheduler.state_dict() for c in trainer.lr_scheduler_configs]
        scaler = _grad_scaler(trainer)
        if scaler is not None:
            ckpt["grad_scaler"] = scaler.state_dict()
        ckpt["rng_states"] = rng_states()
    if _hparams_saved(module):
        ckpt["hparams_name"] = "kwargs"
        ckpt["hyper_parameters"] = dict(module.hparams)
    dm = trainer.datamodule
    if dm is not None:
        if _hparams_saved(dm):
            ckpt["datamodule_hparams_name"] = "kwargs"
            ckpt["datamodule_hyper_parameters"] = dict(dm.hparams)
        state = dm.state_dict() if not weights_only else None
        if state:
            ckpt[type(dm).__qualname__] = state
    if not weights_only:
        call_callback_hooks(trainer, "on_save_checkpoint", ckpt)
    call_module_hook(trainer, "on_save_checkpoint", ckpt)
    return ckpt


def save_checkpoint(trainer, filepath, weights_only: bool = False) -> None:
    """Every rank calls this at the same point; rank 0 writes; all ranks learn whether it
    worked (a failed write raises everywhere instead of leaving ranks in a barrier)."""
    if trainer.lightning_module is None:
        raise RuntimeError(
            "Trainer.save_checkpoint: no model is attached yet; call it during "
            "or after fit/validate/test/predict"
        )
    path = os.fspath(filepath)
    checkpoint = dump_checkpoint(trainer, weights_only)
    strategy = trainer.strategy
    error = None
    if strategy.is_global_zero:
        try:
            write_checkpoint(path, checkpoint)
        except Exception as exc:  # noqa: BLE001 - re-raised below, after the other ranks know
            error = exc
    if strategy.world_size > 1:
        message = strategy.broadcast(None if error is None else f"{type(error).__name__}: {error}")
        strategy.barrier("Trainer.save_checkpoint")
        if message is not None and error is None:
            raise RuntimeError(
                f"Trainer.save_checkpoint: rank 0 could not write '{path}': {message}"
            )
    if error is not None:
        raise error


# ---------------------------------------------------------------------------- which file
def checkpoint_callbacks(trainer) -> list:
    """Callbacks that know checkpoint paths (ModelCheckpoint and look-alikes)."""
    return [
        cb
        for cb in trainer.callbacks
        if hasattr(cb, "best_model_path") or hasattr(cb, "last_model_path")
    ]


def _last_dirs(trainer) -> list[str]:
    """Where ``last*.ckpt`` may be: the checkpoint callbacks' directories, then where a
    SIGTERM checkpoint goes (``<log_dir or default_root_dir>/checkpoints``)."""
    dirs = [cb.dirpath for cb in checkpoint_callbacks(trainer) if getattr(cb, "dirpath", None)]
    dirs += [
        os.path.join(trainer.log_dir, "checkpoints"),
        os.path.join(trainer.default_root_dir, "checkpoints"),
    ]
    root = getattr(trainer.logger, "root_dir", None) if trainer.loggers else None
    if root and os.path.isdir(root):  # earlier versions of the same logger
        dirs += [os.path.join(root, d, "checkpoints") for d in sorted(os.listdir(root))]
    return dirs


def resolve_ckpt_path(trainer, ckpt_path, fn: str) -> str | None:
    """A path, or "last" / "best" asked of the checkpoint callback (None: "last" found
    nothing, train from scratch as Lightning does)."""
    if ckpt_path is None:
        return None
    callbacks = checkpoint_callbacks(trainer)
    if ckpt_path == "best":
        if not callbacks:
            raise ValueError(
                f'Trainer.{fn}(ckpt_path="best") needs a ModelCheckpoint callback '
                "(none is configured); pass a checkpoint path instead"
            )
        best = getattr(trainer.checkpoint_callback, "best_model_path", "")
        if not best:
            raise ValueError(
                f'Trainer.{fn}(ckpt_path="best"): the ModelCheckpoint has not '
                "saved a best checkpoint yet (best_model_path is empty)"
            )
        return best
    if ckpt_path == "last":
        found = set()
        for cb in callbacks:
            finder = getattr(cb, "_find_last_checkpoints", None)
            if finder is not None:
                found |= set(finder(trainer))
            last = getattr(cb, "last_model_path", "")
            if last and os.path.isfile(last):
                found.add(last)
        dirs = _last_dirs(trainer)
        for d in dirs:
            if os.path.isdir(d):
                found |= {os.path.join(d, f) for f in os.listdir(d) if _LAST.match(f)}
        if found:
            return max(found, key=os.path.getmtime)
        if not callbacks:
            raise ValueError(
                f'Trainer.{fn}(ckpt_path="last"): no ModelCheckpoint callback and '
                f"no last.ckpt in {sorted(set(dirs))}; pass a checkpoint path"
            )
        warnings.warn(
            f'ckpt_path="last" is set, but there is no last checkpoint available '
            f"(looked in {sorted(set(dirs))}); training starts from scratch",
            UserWarning,
            stacklevel=4,
        )
        return None
    path = os.fspath(ckpt_path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Trainer.{fn}(ckpt_path={path!r}): no such checkpoint file")
    return path


# ----------------------------------------------------------------------------- restoring
def load_model_state(module, state: dict, path: str, strict: bool = True):
    """``module.load_state_dict`` whose error names the file and lists every difference
    (missing keys, unexpected keys, shape mismatches)."""
    try:
        return module.load_state_dict(state, strict=strict)
    except RuntimeError as exc:
        raise RuntimeError(
            f"checkpoint '{path}' does not fit {type(module).__name__}: {exc}"
        ) from None


class Restorer:
    """Brings a run back from a checkpoint, in Lightning's order: the module and callbacks
    after ``setup``, the training state after ``configure_optimizers`` and
    ``on_fit_start``, the loop's data, metric and RNG state when the fit loop starts."""

    def __init__(self, trainer, path: str):
        self.trainer, self.path = trainer, path
        self.checkpoint = read_checkpoint(path)

    def restore_module(self) -> None:
        call_module_hook(self.trainer, "on_load_checkpoint", self.checkpoint)
        load_model_state(self.trainer.lightning_module, self.checkpoint["state_dict"], self.path)

    def restore_callbacks(self) -> None:
        trainer, ckpt = self.trainer, self.checkpoint
        dm = trainer.datamodule
        if dm is not None and type(dm).__qualname__ in ckpt:
            dm.load_state_dict(copy.deepcopy(ckpt[type(dm).__qualname__]))
        call_callback_hooks(trainer, "on_load_checkpoint", ckpt)
        states = ckpt.get("callbacks") or {}
        for cb in trainer.callbacks:
            state = states.get(getattr(cb, "state_key", type(cb).__qualname__))
            if state and hasattr(cb, "load_state_dict"):
                cb.load_state_dict(copy.deepcopy(state))

    def _check_count(self, key: str, have: int, what: str) -> list:
        saved = self.checkpoint.get(key) or []
        if len(saved) != have:
            raise ValueError(
                f"Trainer.fit(ckpt_path='{self.path}'): the checkpoint has "
                f"{len(saved)} {what} but configure_optimizers returned {have}"
            )
        return saved

    def restore_training_state(self) -> None:
        trainer, ckpt = self.trainer, self.checkpoint
        if "optimizer_states" not in ckpt or "loops" not in ckpt:
            raise ValueError(
                f"Trainer.fit(ckpt_path='{self.path}'): this checkpoint holds only the model "
                "(it was saved with weights_only=True), so training cannot resume from it; "
                "load the weights with load_from_checkpoint or load_state_dict and start a new "
                "fit"
            )
        for opt, state in zip(
            trainer.optimizers,
            self._check_count("optimizer_states", len(trainer.optimizers), "optimizer states"),
        ):
            try:
                opt.load_state_dict(state)
            except (ValueError, KeyError) as exc:
                raise ValueError(
                    f"Trainer.fit(ckpt_path='{self.path}'): the optimizer state "
                    f"does not fit {type(opt).__name__}: {exc}"
                ) from None
        configs = trainer.lr_scheduler_configs
        for config, state in zip(
            configs, self._check_count("lr_schedulers", len(configs), "lr scheduler states")
        ):
            config.scheduler.load_state_dict(state)
        scaler = _grad_scaler(trainer)
        if scaler is not None and ckpt.get("grad_scaler") is not None:
            scaler.load_state_dict(ckpt["grad_scaler"])
        loop = ckpt["loops"]["fit_loop"]
        trainer._progress.load_state_dict(loop["progress"])
        trainer._fit_loop.time_offset = float(loop.get("time_elapsed") or 0.0)
        for logger in trainer.loggers:  # drop what the old run logged after the save point
            if hasattr(logger, "purge_step"):
                logger.purge_step = int(loop["log_step"])
        trainer._fit_loop.resume = _FitResume(trainer, loop, ckpt.get("rng_states"))


def _sampler_state(state: dict):
    inner = state.get("sampler")
    if (
        isinstance(inner, dict)
        and isinstance(inner.get("sampler"), dict)
        and "yielded" not in inner
    ):
        inner = inner["sampler"]  # a BatchSampler's state wraps its sampler's
    return inner if isinstance(inner, dict) and "yielded" in inner else None


def _refold_loader_state(trainer, loader, state: dict, epoch_complete: bool) -> tuple:
    """A loader state saved by a DistributedSampler under another world size, made to resume
    at the same global position of the epoch's order here; (state, whether it changed)."""
    import copy

    from ember.distributed.sampler import DistributedSampler, fold_loader_state

    inner = _sampler_state(state)
    old = inner.get("num_replicas") if inner is not None else None
    distributed = isinstance(getattr(loader, "sampler", None), DistributedSampler)
    if old is None or (distributed and int(old) == trainer.strategy.world_size):
        return dict(state), False
    if epoch_complete:  # the next iter() starts the next epoch from its beginning
        out = copy.deepcopy(state)
        _sampler_state(out).update(
            epoch=int(inner["epoch"]) + 1, yielded=0, started=False, offset=0
        )
        out["batches_consumed"] = 0
        return out, True
    out = fold_loader_state(state, loader.batch_size or 1)
    if not distributed:  # one process, a plain sampler: the position in the epoch's order
        inner = _sampler_state(out)
        n = len(loader.dataset)
        inner["yielded"] = min(n, int(inner.pop("offset", 0)) + int(inner["yielded"]) * int(old))
        inner.pop("num_replicas", None)
    return out, True


class _FitResume:
    """What the fit loop applies when it starts (after the sanity check, which resets the
    metrics and would otherwise see the restored RNG states)."""

    def __init__(self, trainer, loop: dict, rng: dict | None):
        self.trainer, self.loop, self.rng = trainer, loop, rng

    def apply(self, fit_loop) -> tuple:
        trainer, loop = self.trainer, self.loop
        self._restore_loader(fit_loop)
        self._restore_metrics()
        connector = trainer._logger_connector
        replay = [(int(step), dict(metrics)) for step, metrics in loop.get("replay") or []]
        connector.sent = list(replay)
        trainer._skipped_step = bool(loop.get("skipped_step", False))
        if trainer.is_global_zero:
            for step, metrics in replay:
                for logger in trainer.loggers:
                    logger.log_metrics(dict(metrics), step=step)
        if self.rng:
            set_rng_states(self.rng)  # last: nothing above may draw from them
        return tuple(loop.get("position") or ("between",))

    def _restore_loader(self, fit_loop) -> None:
        saved = self.loop.get("dataloader") or {}
        loader = fit_loop.train_loader
        gen = getattr(loader, "generator", None)
        if saved.get("generator") is not None and hasattr(gen, "set_state"):
            gen.set_state(np.asarray(saved["generator"], dtype=np.uint8))
        state = saved.get("state")
        consumed = self.trainer._progress.batch_idx
        refolded = False
        if state is not None and hasattr(loader, "load_state_dict"):
            state, refolded = _refold_loader_state(
                self.trainer, loader, state, bool(self.loop.get("epoch_complete"))
            )
            if self.loop.get("epoch_complete") and state.get("batches_consumed"):
                try:  # the next iter() starts a new epoch, even under limit_train_batches
                    state["batches_consumed"] = max(int(state["batches_consumed"]), len(loader))
                except TypeError:
                    pass
            loader.load_state_dict(state)
            total = fit_loop.num_training_batches
            if refolded and not self.loop.get("epoch_complete") and total < float("inf"):
                # the batches left for this rank decide where the epoch's count stands
                self.trainer._progress.batch_idx = max(0, int(total) - len(loader))
        elif consumed and not self.loop.get("epoch_complete"):
            warnings.warn(
                f"Resuming mid-epoch with a training dataloader that has no "
                f"state_dict ({type(loader).__name__}): its first {consumed} batches "
                "are read again and dropped; the order is only the same if the "
                "loader's is deterministic",
                UserWarning,
                stacklevel=3,
            )
            fit_loop.skip_batches = consumed

    def _restore_metrics(self) -> None:
        from ember.trainer.logging import _Entry

        trainer = self.trainer
        saved = self.loop.get("metrics") or {}
        device = trainer.strategy.root_device
        store, connector = trainer._metrics, trainer._logger_connector
        for name in ("callback", "logged", "pbar"):
            target = getattr(store, name)
            target.clear()
            target.update({k: _on_device(v, device) for k, v in (saved.get(name) or {}).items()})
        connector._pending_log = {
            k: _on_device(v, device) for k, v in (saved.get("pending_log") or {}).items()
        }
        entries = connector.train_results.entries
        entries.clear()
        for state in saved.get("results") or []:
            entry = _Entry.__new__(_Entry)
            for slot in _Entry.__slots__:
                value = state.get(slot)
                setattr(
                    entry, slot, _on_device(value, device) if slot in ("value", "total") else value
                )
            entries[(entry.fx, entry.name)] = entry
        trainer._val_loop.logged_steps = int(saved.get("val_logged_steps") or 0)


# -------------------------------------------------------------------- load_from_checkpoint
def load_module_from_checkpoint(
    cls, path, map_location=None, strict: bool = True, overrides: dict | None = None
):
    """``cls(**saved hyperparameters, **overrides)`` with the checkpoint's weights."""
    import inspect

    path = os.fspath(path)
    overrides = dict(overrides or {})
    ckpt = read_checkpoint(path)
    hparams = ckpt.get("hyper_parameters")
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    if hparams is None:
        required = [
            p.name
            for p in params
            if p.default is p.empty
            and p.name not in overrides
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        if required:
            raise ValueError(
                f"{cls.__name__}.load_from_checkpoint: '{path}' holds no hyperparameters, and "
                f"{cls.__name__}.__init__ needs {required}. Call self.save_hyperparameters() in "
                f"{cls.__name__}.__init__ so checkpoints can rebuild the module, or pass them "
                f"as keyword arguments: load_from_checkpoint(path, {required[0]}=...)"
            )
        hparams = {}
    kwargs = {**hparams, **overrides}
    if not any(p.kind == p.VAR_KEYWORD for p in params):
        names = {p.name for p in params}
        kwargs = {k: v for k, v in kwargs.items() if k in names}
    model = cls(**kwargs)
    model.on_load_checkpoint(ckpt)
    load_model_state(model, ckpt["state_dict"], path, strict)
    if map_location is not None:
        model.to(map_location)
    return model
