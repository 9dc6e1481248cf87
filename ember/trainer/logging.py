"""What ``self.log`` does: collect logged values per hook, reduce them over the epoch, and hand
them to the progress bar, the callbacks and the loggers.

Logged values are kept as 0-d arrays (numpy or cupy), never turned into Python floats on the
way in: a value costs a device sync only when something reads it as a number (the progress bar
asking for ``trainer.progress_bar_metrics``, a logger writing it, a callback reading
``trainer.callback_metrics``). Epoch means are weighted by batch size.
"""

from __future__ import annotations

import numbers

import numpy as np

from ember.tensor.backend import get_array_module
from ember.tensor.tensor import Tensor

# hook -> (allowed on_step values, allowed on_epoch values, default on_step, default on_epoch)
_TRAIN_STEP = ((False, True), (False, True), True, False)
_EVAL_STEP = ((False, True), (False, True), False, True)
_EPOCH_ONLY = ((False,), (True,), False, True)
FX_OPTIONS = {
    **dict.fromkeys(
        (
            "training_step",
            "on_train_batch_start",
            "on_train_batch_end",
            "on_before_backward",
            "backward",
            "on_after_backward",
            "on_before_optimizer_step",
            "optimizer_step",
            "configure_gradient_clipping",
            "clip_gradients",
            "on_before_zero_grad",
            "optimizer_zero_grad",
        ),
        _TRAIN_STEP,
    ),
    **dict.fromkeys(
        (
            "validation_step",
            "test_step",
            "on_validation_batch_start",
            "on_validation_batch_end",
            "on_test_batch_start",
            "on_test_batch_end",
        ),
        _EVAL_STEP,
    ),
    **dict.fromkeys(
        (
            "on_train_start",
            "on_train_epoch_start",
            "on_train_epoch_end",
            "on_validation_start",
            "on_validation_epoch_start",
            "on_validation_epoch_end",
            "on_test_start",
            "on_test_epoch_start",
            "on_test_epoch_end",
        ),
        _EPOCH_ONLY,
    ),
}
_REDUCE_NAMES = {
    "mean": "mean",
    "avg": "mean",
    "sum": "sum",
    "max": "max",
    "amax": "max",
    "min": "min",
    "amin": "min",
}
DATALOADER_SUFFIX = "/dataloader_idx_{}"


def to_float(value) -> float:
    """The one place where a logged value becomes a Python float (a sync on a GPU)."""
    if type(value) is float:
        return value
    return float(value)


def floats_in_place(metrics: dict) -> dict:
    """Convert the values of ``metrics`` to floats once, keeping the same dict object."""
    for key, value in metrics.items():
        if type(value) is not float:
            metrics[key] = to_float(value)
    return metrics


def _reduce_name(name: str, reduce_fx) -> str:
    key = reduce_fx if isinstance(reduce_fx, str) else getattr(reduce_fx, "__name__", None)
    if key not in _REDUCE_NAMES:
        raise ValueError(
            f"self.log({name!r}): reduce_fx must be 'mean', 'sum', 'max' or 'min' "
            f"(or the matching function), got {reduce_fx!r}"
        )
    return _REDUCE_NAMES[key]


def as_logged_value(name: str, value):
    """A logged value as a Python float or a private 0-d float array (no device sync)."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"self.log({name!r}, ...): the value must be a scalar (one "
                f"element), got a tensor of shape {tuple(value.shape)}; reduce it "
                "first, e.g. with .mean()"
            )
        arr = value.data
        xp = get_array_module(arr)
        dtype = arr.dtype if arr.dtype in (np.float32, np.float64) else np.float32
        return xp.array(arr, dtype=dtype, copy=True).reshape(())  # not a view of a parameter
    if isinstance(value, (bool, numbers.Real)) and not isinstance(value, np.ndarray):
        return float(value)
    if isinstance(value, np.ndarray) or type(value).__module__.startswith("cupy"):
        if value.size != 1:
            raise ValueError(
                f"self.log({name!r}, ...): the value must be a scalar (one "
                f"element), got an array of shape {tuple(value.shape)}"
            )
        return (
            float(value.reshape(()))
            if isinstance(value, np.ndarray)
            else (value.astype("float64").reshape(()))
        )
    raise TypeError(
        f"self.log({name!r}, ...): expected a number or a one-element Tensor, got "
        f"{type(value).__name__}"
    )


def _to64(value):
    return value if isinstance(value, float) else value.astype("float64")


def _extreme(a, b, kind: str):
    if isinstance(a, float) and isinstance(b, float):
        return max(a, b) if kind == "max" else min(a, b)
    xp = get_array_module(a if not isinstance(a, float) else b)
    return xp.maximum(a, b) if kind == "max" else xp.minimum(a, b)


def extract_batch_size(batch) -> int | None:
    """Lightning's rule: the first dimension of the first tensor or array found in the batch."""
    if isinstance(batch, Tensor) or isinstance(batch, np.ndarray):
        return 1 if batch.ndim == 0 else int(batch.shape[0])
    if isinstance(batch, (str, bytes)):
        return None
    if isinstance(batch, dict):
        batch = list(batch.values())
    if isinstance(batch, (list, tuple)):
        for item in batch:
            size = extract_batch_size(item)
            if size is not None:
                return size
    return None


class _Entry:
    """One logged key of one hook: the latest step value and the epoch accumulator."""

    __slots__ = (
        "name",
        "fx",
        "prog_bar",
        "logger",
        "on_step",
        "on_epoch",
        "reduce",
        "sync_dist",
        "dataloader_idx",
        "value",
        "fresh",
        "total",
        "weight",
    )

    def __init__(
        self, name, fx, prog_bar, logger, on_step, on_epoch, reduce, sync_dist, dataloader_idx
    ):
        self.name, self.fx = name, fx
        self.prog_bar, self.logger = prog_bar, logger
        self.on_step, self.on_epoch = on_step, on_epoch
        self.reduce, self.sync_dist = reduce, sync_dist
        self.dataloader_idx = dataloader_idx
        self.value, self.fresh, self.total, self.weight = None, False, None, 0

    def options(self) -> tuple:
        return (
            self.prog_bar,
            self.logger,
            self.on_step,
            self.on_epoch,
            self.reduce,
            self.sync_dist,
        )

    def forked(self, on_step: bool) -> str:
        if self.on_step and self.on_epoch:
            return f"{self.name}_{'step' if on_step else 'epoch'}"
        return self.name

    def update(self, value, batch_size: int) -> None:
        if self.on_step:
            self.value, self.fresh = value, True
        if not self.on_epoch:
            return
        if self.reduce == "mean":
            contrib = _to64(value) * batch_size
            self.total = contrib if self.total is None else self.total + contrib
            self.weight += batch_size
        elif self.reduce == "sum":
            self.total = _to64(value) if self.total is None else self.total + _to64(value)
        else:
            self.total = value if self.total is None else _extreme(self.total, value, self.reduce)

    def epoch_value(self, strategy=None, synced=None):
        """The epoch's reduction. ``synced``: (total, weight) already reduced across ranks
        (``ResultCollection.epoch_metrics`` batches every entry into one collective)."""
        total, weight = (self.total, self.weight) if synced is None else synced
        if self.reduce == "mean":
            return total / weight if weight else total
        return total


class Metrics:
    """Three views of the same values: for callbacks, for loggers, for the progress bar."""

    __slots__ = ("callback", "log", "pbar", "by_dataloader")

    def __init__(self):
        self.callback, self.log, self.pbar = {}, {}, {}
        self.by_dataloader: dict = {}  # dataloader_idx (None = all) -> logged metrics


class ResultCollection:
    """The values logged during one loop (training, or one evaluation run)."""

    def __init__(self, training: bool):
        self.training = training
        self.entries: dict = {}
        self.batch = None
        self.dataloader_idx: int | None = None
        self._batch_size: int | None = None

    def begin_batch(self, batch, dataloader_idx: int | None = None) -> None:
        self.batch, self.dataloader_idx, self._batch_size = batch, dataloader_idx, None

    def _current_batch_size(self) -> int:
        if self._batch_size is None:
            size = extract_batch_size(self.batch) if self.batch is not None else None
            self._batch_size = size if size is not None else 1
        return self._batch_size

    def log(
        self,
        fx: str,
        name: str,
        value,
        *,
        prog_bar: bool,
        logger: bool,
        on_step: bool,
        on_epoch: bool,
        reduce_fx,
        sync_dist: bool,
        add_dataloader_idx: bool,
        batch_size: int | None,
        strategy=None,
    ) -> None:
        reduce = _reduce_name(name, reduce_fx)
        value = as_logged_value(name, value)
        dl_idx = self.dataloader_idx if add_dataloader_idx else None
        if dl_idx is not None:
            name = name + DATALOADER_SUFFIX.format(dl_idx)
        key = (fx, name)
        entry = self.entries.get(key)
        if entry is None:
            entry = _Entry(name, fx, prog_bar, logger, on_step, on_epoch, reduce, sync_dist, dl_idx)
            self.entries[key] = entry
        elif entry.options() != (prog_bar, logger, on_step, on_epoch, reduce, sync_dist):
            raise ValueError(
                f"self.log({name!r}) was called twice in {fx} with different "
                "arguments (prog_bar, logger, on_step, on_epoch, reduce_fx, "
                "sync_dist); keep them the same within a hook"
            )
        if batch_size is None:
            batch_size = self._current_batch_size() if on_epoch and reduce == "mean" else 1
        entry.update(value, int(batch_size))

    def step_metrics(self, strategy=None) -> Metrics:
        """Values logged with ``on_step`` since the last call. In training, the fresh
        ``sync_dist`` values of every rank are reduced here, all in one collective per op
        (every rank reaches this boundary in step). Evaluation steps are not synced: the
        unpadded evaluation shards give ranks different numbers of batches."""
        out = Metrics()
        fresh = [e for e in self.entries.values() if e.fresh]
        if self.training and _distributed(strategy):
            synced = [e for e in fresh if e.sync_dist]
            for _, reduced in _reduce_groups(strategy, [(e.reduce, e.value) for e in synced]):
                for i, value in reduced.items():
                    synced[i].value = value
        for entry in fresh:
            entry.fresh = False
            forked = entry.forked(True)
            if self.training:
                out.callback[entry.name] = entry.value
                out.callback[forked] = entry.value
            if entry.logger:
                out.log[forked] = entry.value
            if entry.prog_bar:
                out.pbar[forked] = entry.value
        return out

    def epoch_metrics(self, strategy=None) -> Metrics:
        """Every ``on_epoch`` value reduced over what was logged so far."""
        out = Metrics()
        entries = [e for e in self.entries.values() if e.on_epoch and e.total is not None]
        synced: dict = {}
        if _distributed(strategy):  # one collective per op for all synced entries
            todo = [e for e in entries if e.sync_dist]
            items = []
            for e in todo:
                op = "sum" if e.reduce in ("mean", "sum") else e.reduce
                items.append((op, (e.total, float(e.weight)) if e.reduce == "mean" else e.total))
            for _, reduced in _reduce_groups(strategy, items):
                for i, value in reduced.items():
                    synced[id(todo[i])] = (
                        tuple(value) if todo[i].reduce == "mean" else (value, todo[i].weight)
                    )
        for entry in entries:
            value = entry.epoch_value(strategy, synced.get(id(entry)))
            forked = entry.forked(False)
            out.callback[entry.name] = value
            out.callback[forked] = value
            if entry.logger:
                out.log[forked] = value
                out.by_dataloader.setdefault(entry.dataloader_idx, {})[forked] = value
            if entry.prog_bar:
                out.pbar[forked] = value
        return out

    def reset(self) -> None:
        self.entries.clear()
        self.begin_batch(None)


def _distributed(strategy) -> bool:
    return strategy is not None and strategy.world_size > 1


def _reduce_groups(strategy, items: list):
    """Reduce ``items`` ((op, scalar or tuple of scalars) pairs) across ranks in ONE
    collective; yields (op, {index: reduced value}). One op: one ``strategy.reduce`` of them
    all. Several ops: every rank writes its values into its own row of a zero (ranks, n)
    matrix, one sum-reduce gathers them, and each op is applied locally. Every rank must log
    the same synced names."""
    groups: dict = {}
    for i, (op, value) in enumerate(items):
        groups.setdefault(op, {})[i] = value
    if len(groups) <= 1:
        for op, group in groups.items():
            yield op, strategy.reduce(group, op=op)
        return
    widths = [len(v) if isinstance(v, tuple) else 1 for _, v in items]
    row = [to_float(x) for _, v in items for x in (v if isinstance(v, tuple) else (v,))]
    table = np.zeros((strategy.world_size, len(row)))
    table[strategy.global_rank] = row
    table = strategy.reduce(table, op="sum")
    fold = {"sum": np.sum, "mean": np.mean, "max": np.max, "min": np.min}
    starts = np.cumsum([0] + widths)
    for op in sorted(groups):
        out = {}
        for i in groups[op]:
            cols = fold[op](table[:, starts[i] : starts[i + 1]], axis=0)
            out[i] = (
                tuple(float(c) for c in cols) if isinstance(items[i][1], tuple) else float(cols[0])
            )
        yield op, out


def validate_log_call(fx: str | None, name, on_step, on_epoch) -> tuple[bool, bool]:
    """Resolve Lightning's per-hook defaults and reject what the hook does not allow."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"self.log: the name must be a non-empty string, got {name!r}")
    options = FX_OPTIONS.get(fx)
    if options is None:
        where = f"`{fx}`" if fx else "outside of the Trainer's hooks"
        raise RuntimeError(
            f"self.log({name!r}): you can't log inside {where}; log in "
            f"training_step/validation_step/test_step or the epoch and batch "
            f"hooks ({', '.join(sorted(FX_OPTIONS))})"
        )
    allowed_step, allowed_epoch, default_step, default_epoch = options
    on_step = default_step if on_step is None else bool(on_step)
    on_epoch = default_epoch if on_epoch is None else bool(on_epoch)
    if on_step not in allowed_step:
        raise RuntimeError(
            f"self.log({name!r}, on_step={on_step}): not allowed in {fx} "
            f"(on_step can be {list(allowed_step)} there)"
        )
    if on_epoch not in allowed_epoch:
        raise RuntimeError(
            f"self.log({name!r}, on_epoch={on_epoch}): not allowed in {fx} "
            f"(on_epoch can be {list(allowed_epoch)} there)"
        )
    if not on_step and not on_epoch:
        raise ValueError(
            f"self.log({name!r}): on_step=False and on_epoch=False would log "
            "nothing; set one of them"
        )
    return on_step, on_epoch


class MetricStore:
    """The trainer's ``callback_metrics``, ``logged_metrics`` and ``progress_bar_metrics``:
    values stay arrays until one of these properties is read."""

    def __init__(self):
        self.callback: dict = {}
        self.logged: dict = {}
        self.pbar: dict = {}

    def update(self, metrics: Metrics, logged: bool = True) -> None:
        self.callback.update(metrics.callback)
        self.pbar.update(metrics.pbar)
        if logged:
            self.logged.update(metrics.log)

    def reset(self) -> None:
        self.callback.clear()
        self.logged.clear()
        self.pbar.clear()


def send_to_loggers(trainer, metrics: dict, step: int) -> None:
    """Write ``metrics`` (converted to floats here, the sync point) to every logger, on
    rank 0 only. ``epoch`` is added, as Lightning does."""
    if not metrics or not trainer.loggers or not trainer.is_global_zero:
        return
    scalars = {key: to_float(value) for key, value in metrics.items()}
    scalars.setdefault("epoch", trainer.current_epoch)
    trainer._logger_connector.sent.append((step, scalars))
    for logger in trainer.loggers:
        logger.log_metrics(scalars, step=step)


class LoggerConnector:
    """Routes ``self.log`` to the active loop's results and moves reduced values to the
    trainer's metric dicts and to the loggers at the right moments."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.train_results = ResultCollection(training=True)
        self.results: ResultCollection | None = None  # the collection of the running loop
        self._pending_log: dict = {}  # step values waiting for the end of the optimizer step
        # (step, metrics) sent to the loggers since the current training batch began: a
        # checkpoint saved inside the batch replays them on resume (checkpoint_state.py)
        self.sent: list = []

    # ------------------------------------------------------------------ intake
    def log(self, fx, name, value, *, on_step, on_epoch, **options) -> None:
        on_step, on_epoch = validate_log_call(fx, name, on_step, on_epoch)
        if self.results is None:
            raise RuntimeError(f"self.log({name!r}) was called in {fx} outside of a running loop")
        self.results.log(
            fx,
            name,
            value,
            on_step=on_step,
            on_epoch=on_epoch,
            strategy=self.trainer.strategy,
            **options,
        )

    @property
    def _store(self) -> MetricStore:
        return self.trainer._metrics

    def _step(self) -> int:
        return self.trainer._progress.batches_that_stepped

    # ---------------------------------------------------------------- training
    def collect_train_step(self) -> None:
        """Values logged with ``on_step`` so far in this batch: to the progress bar and the
        callback metrics now (before ``on_train_batch_end``, so that the progress bar shows
        this batch), and kept for the loggers until the optimizer step ends the batch."""
        metrics = self.train_results.step_metrics(self.trainer.strategy)
        self._store.update(metrics, logged=False)
        self._pending_log.update(metrics.log)

    def train_step_end(self, accumulating: bool) -> None:
        """After ``on_train_batch_end``: on a batch that stepped the optimizer, send this
        step's values to the loggers every ``log_every_n_steps``."""
        self.collect_train_step()
        if accumulating:
            return
        trainer = self.trainer
        n = trainer.log_every_n_steps
        due = (n > 0 and (self._step() + 1) % n == 0) or trainer.should_stop
        pending, self._pending_log = self._pending_log, {}
        if due and pending:
            self._store.logged.update(pending)
            send_to_loggers(trainer, pending, self._step())

    def update_train_epoch_metrics(self) -> Metrics:
        metrics = self.train_results.epoch_metrics(self.trainer.strategy)
        self._store.update(metrics, logged=False)
        return metrics

    def train_epoch_end(self) -> None:
        """Epoch values to the loggers (at the step of the epoch's last batch), flush."""
        metrics = self.update_train_epoch_metrics()
        if metrics.log:
            self._store.logged.update(metrics.log)
            send_to_loggers(self.trainer, metrics.log, max(self._step() - 1, 0))
        self.train_results.reset()
        self.save()

    # -------------------------------------------------------------- evaluation
    def eval_step_end(self, loop) -> None:
        metrics = loop.results.step_metrics()
        self._store.pbar.update(metrics.pbar)
        if self.trainer.sanity_checking:
            return
        if metrics.log:
            self._store.logged.update(metrics.log)
            send_to_loggers(self.trainer, metrics.log, loop.logged_steps)
        loop.logged_steps += 1

    def eval_epoch_end(self, loop, num_loaders: int) -> list[dict]:
        """Epoch values to the callback metrics and (except in the sanity check) the loggers;
        returns the logged values per dataloader."""
        trainer = self.trainer
        metrics = loop.results.epoch_metrics(trainer.strategy)
        sanity = trainer.sanity_checking
        self._store.update(metrics, logged=not sanity)
        if not sanity and metrics.log:
            send_to_loggers(trainer, metrics.log, self._step())
            self.save()
        shared = metrics.by_dataloader.get(None, {})
        return [{**shared, **metrics.by_dataloader.get(i, {})} for i in range(num_loaders)]

    # ----------------------------------------------------------------- loggers
    def log_hyperparams(self) -> None:
        """The module's (and datamodule's) saved hyperparameters, to every logger."""
        trainer = self.trainer
        if not trainer.loggers or not trainer.is_global_zero:
            return
        module, dm = trainer.lightning_module, trainer.datamodule
        hparams: dict = {}
        if module.__dict__.get("_log_hyperparams", True):
            hparams.update(module.hparams_initial)
        if dm is not None and dm.__dict__.get("_log_hyperparams", False):
            dm_hp = dm.hparams_initial
            clash = [k for k in dm_hp if k in hparams and hparams[k] != dm_hp[k]]
            if clash:
                raise ValueError(
                    f"hyperparameters {clash} are saved by both the module and the "
                    "datamodule with different values"
                )
            hparams.update(dm_hp)
        for logger in trainer.loggers:
            logger.log_hyperparams(hparams)

    def save(self) -> None:
        if self.trainer.is_global_zero:
            for logger in self.trainer.loggers:
                logger.save()

    def finalize(self, status: str) -> None:
        if self.trainer.is_global_zero:
            for logger in self.trainer.loggers:
                logger.finalize(status)

    def reset(self) -> None:
        self.train_results.reset()
        self._pending_log = {}
        self.sent = []
        self._store.reset()
