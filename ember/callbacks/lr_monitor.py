"""LearningRateMonitor: logs each optimizer's learning rate (and optionally momentum and weight
decay) to the trainer's loggers, under Lightning's names: ``lr-Adam``, ``lr-Adam/pg2``,
``lr-SGD-1`` for a second SGD, or the scheduler config's ``name``.
"""

from __future__ import annotations

from ember.callbacks.callback import Callback


class LearningRateMonitor(Callback):
    """``logging_interval``: None logs at the scheduler's own interval ('step' or 'epoch'),
    'step' or 'epoch' log every scheduler at that interval. Optimizers without a scheduler count
    as 'step' (Lightning also logs them at each epoch start, a duplicate of step's value).
    Values are also kept in ``self.lrs`` (name -> list)."""

    def __init__(
        self,
        logging_interval: str | None = None,
        log_momentum: bool = False,
        log_weight_decay: bool = False,
    ):
        if logging_interval not in (None, "step", "epoch"):
            raise ValueError(
                "LearningRateMonitor: logging_interval should be 'step', 'epoch' or "
                f"None, got {logging_interval!r}"
            )
        self.logging_interval = logging_interval
        self.log_momentum = log_momentum
        self.log_weight_decay = log_weight_decay
        self.lrs: dict[str, list[float]] = {}
        self._last_step_logged: int | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        if not getattr(trainer, "loggers", None):
            raise RuntimeError(
                "Cannot use LearningRateMonitor with a Trainer that has no logger: "
                "pass Trainer(logger=True) or a logger, or remove the callback."
            )
        if self.log_momentum:
            missing = [
                type(o).__name__
                for o in trainer.optimizers
                if not all("momentum" in g or "betas" in g for g in o.param_groups)
            ]
            if missing:
                import warnings

                warnings.warn(
                    f"LearningRateMonitor: log_momentum=True but {', '.join(missing)} "
                    "has no momentum; 0 is logged for it.",
                    stacklevel=2,
                )
        self.lrs = {name: [] for name in self._names(trainer)}
        self._last_step_logged = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self.logging_interval == "epoch" or not _should_update_logs(trainer):
            return
        step = trainer.global_step
        if step == self._last_step_logged:  # accumulating batches share one optimizer step
            return
        stats = self._extract_stats(trainer, "step" if self.logging_interval is None else "any")
        if stats:
            self._last_step_logged = step
            self._log(trainer, stats, step)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self.logging_interval == "step":
            return
        stats = self._extract_stats(trainer, "epoch" if self.logging_interval is None else "any")
        if stats:
            self._log(trainer, stats, trainer.global_step)

    # ---- internals
    def _log(self, trainer, stats: dict, step: int) -> None:
        for name, value in stats.items():
            self.lrs.setdefault(name, []).append(value)
        metrics = getattr(trainer, "callback_metrics", None)
        if isinstance(metrics, dict):
            metrics.update(stats)
        if not getattr(trainer, "is_global_zero", True):
            return
        for logger in trainer.loggers:
            logger.log_metrics(dict(stats), step=step)

    def _groups(self, trainer) -> list[tuple[object, str, str]]:
        """(optimizer, base name, interval) for every optimizer, schedulers' optimizers first,
        as Lightning orders them."""
        out, seen, counts = [], [], {}

        def base(opt, explicit):
            if explicit is not None:
                return explicit
            cls = type(opt).__name__
            counts[cls] = counts.get(cls, 0) + 1
            return f"lr-{cls}" + (f"-{counts[cls] - 1}" if counts[cls] > 1 else "")

        for config in getattr(trainer, "lr_scheduler_configs", None) or []:
            opt = config.scheduler.optimizer
            seen.append(opt)
            out.append(
                (
                    opt,
                    base(opt, getattr(config, "name", None)),
                    getattr(config, "interval", "epoch"),
                )
            )
        for opt in trainer.optimizers:  # no scheduler: lr changes only if the user sets it
            if not any(opt is s for s in seen):
                out.append((opt, base(opt, None), "step"))
        return out

    @staticmethod
    def _group_names(name: str, groups: list[dict]) -> list[str]:
        if len(groups) > 1:
            names = [f"{name}/{g.get('name', f'pg{i + 1}')}" for i, g in enumerate(groups)]
        else:
            names = [f"{name}/{groups[0]['name']}" if groups[0].get("name") else name]
        if len(set(names)) != len(names):
            raise ValueError(
                f"LearningRateMonitor: an optimizer has param groups with the same "
                f"name: {names}; give each param group a unique 'name'."
            )
        return names

    def _names(self, trainer) -> list[str]:
        out = []
        for opt, name, _ in self._groups(trainer):
            for n in self._group_names(name, opt.param_groups):
                out.append(n)
                if self.log_momentum:
                    out.append(f"{n}-momentum")
                if self.log_weight_decay:
                    out.append(f"{n}-weight_decay")
        return out

    def _extract_stats(self, trainer, interval: str) -> dict[str, float]:
        stats: dict[str, float] = {}
        for opt, name, sched_interval in self._groups(trainer):
            if interval not in (sched_interval, "any"):
                continue
            for group, n in zip(opt.param_groups, self._group_names(name, opt.param_groups)):
                stats[n] = float(group["lr"])
                if self.log_momentum:
                    betas = group.get("betas")
                    momentum = betas[0] if betas is not None else group.get("momentum", 0.0)
                    stats[f"{n}-momentum"] = float(momentum)
                if self.log_weight_decay:
                    stats[f"{n}-weight_decay"] = float(group.get("weight_decay", 0.0))
        return stats


def _should_update_logs(trainer) -> bool:
    """Lightning's rule: log when the coming step is a multiple of log_every_n_steps."""
    every = getattr(trainer, "log_every_n_steps", 1) or 1
    return (trainer.global_step + 1) % every == 0 or bool(trainer.should_stop)
