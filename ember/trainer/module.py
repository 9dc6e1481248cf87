"""``TrainingModule``: an ``nn.Module`` that also says how it is trained (Lightning's
LightningModule): the steps, ``configure_optimizers``, ``self.log`` and the hooks."""

from __future__ import annotations

import builtins
import warnings

from ember.nn.module import Module
from ember.trainer.hparams import HyperparametersMixin
from ember.trainer.module_hooks import CheckpointHooks, DataHooks, ModelHooks


class TrainingModule(HyperparametersMixin, ModelHooks, DataHooks, CheckpointHooks, Module):
    """Subclass it; write ``training_step``, ``configure_optimizers`` and, as needed,
    ``validation_step``, ``test_step``, ``predict_step`` and the hooks."""

    example_input_array = None  # set it to let ModelSummary show input/output shapes

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        d = self.__dict__
        d["_trainer"] = None
        d["_automatic_optimization"] = True
        d["_current_fx_name"] = None
        d["_log_hyperparams"] = True

    # ------------------------------------------------------------------ state
    @property
    def trainer(self):
        trainer = self.__dict__.get("_trainer")
        if trainer is None:
            raise RuntimeError(
                f"{type(self).__name__} is not attached to a Trainer (this is "
                "set by Trainer.fit/validate/test/predict)"
            )
        return trainer

    @trainer.setter
    def trainer(self, trainer) -> None:
        self.__dict__["_trainer"] = trainer

    @property
    def automatic_optimization(self) -> bool:
        """False: ``training_step`` calls ``self.optimizers()``, ``manual_backward`` and
        ``opt.step()`` itself."""
        return self.__dict__.get("_automatic_optimization", True)

    @automatic_optimization.setter
    def automatic_optimization(self, value: bool) -> None:
        self.__dict__["_automatic_optimization"] = bool(value)

    @property
    def current_epoch(self) -> int:
        trainer = self.__dict__.get("_trainer")
        return trainer.current_epoch if trainer is not None else 0

    @property
    def global_step(self) -> int:
        """Optimizer steps taken so far (not batches: see ``trainer.batches_seen``)."""
        trainer = self.__dict__.get("_trainer")
        return trainer.global_step if trainer is not None else 0

    @property
    def device(self):
        for tensor in self.parameters():
            return tensor.device
        for tensor in self.buffers():
            return tensor.device
        trainer = self.__dict__.get("_trainer")
        if trainer is not None:
            return trainer.strategy.root_device
        from ember.tensor.device import CPU

        return CPU

    @property
    def logger(self):
        trainer = self.__dict__.get("_trainer")
        return trainer.logger if trainer is not None else None

    @property
    def loggers(self) -> list:
        trainer = self.__dict__.get("_trainer")
        return trainer.loggers if trainer is not None else []

    @property
    def global_rank(self) -> int:
        trainer = self.__dict__.get("_trainer")
        return trainer.global_rank if trainer is not None else 0

    @property
    def local_rank(self) -> int:
        trainer = self.__dict__.get("_trainer")
        return trainer.local_rank if trainer is not None else 0

    # ------------------------------------------------------------------ steps
    def training_step(self, *args, **kwargs):
        raise NotImplementedError(
            f"{type(self).__name__}.training_step must be implemented to train with the Trainer"
        )

    def validation_step(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__}.validation_step is not implemented")

    def test_step(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__}.test_step is not implemented")

    def predict_step(self, batch, batch_idx: int = 0, dataloader_idx: int = 0):
        """Default: ``self(batch)``."""
        return self(batch)

    def configure_optimizers(self):
        """Return an optimizer, a list of them, ``(optimizers, schedulers)``, or a dict
        ``{"optimizer": ..., "lr_scheduler": scheduler or {"scheduler": ..., "interval":
        "step"|"epoch", "frequency": n, "monitor": key, "name": str}}``."""
        raise NotImplementedError(
            f"{type(self).__name__}.configure_optimizers must be "
            "implemented to train with the Trainer"
        )

    # ---------------------------------------------------------------- logging
    def log(
        self,
        name: str,
        value,
        prog_bar: bool = False,
        logger: bool | None = None,
        on_step: bool | None = None,
        on_epoch: bool | None = None,
        reduce_fx="mean",
        enable_graph: bool = False,
        sync_dist: bool = False,
        sync_dist_group=None,
        add_dataloader_idx: bool = True,
        batch_size: int | None = None,
        metric_attribute=None,
        rank_zero_only: bool = False,
    ) -> None:
        """Log a scalar. Defaults follow the hook: per step in ``training_step``, per epoch
        (a batch-size-weighted mean) in ``validation_step``. With both ``on_step`` and
        ``on_epoch`` the keys are ``name_step`` and ``name_epoch``. The value is not turned
        into a Python number (no device sync) until something displays or writes it."""
        trainer = self.__dict__.get("_trainer")
        if trainer is None:
            warnings.warn(
                f"self.log({name!r}) was called but {type(self).__name__} is not "
                "attached to a Trainer; the value is dropped",
                UserWarning,
                stacklevel=2,
            )
            return
        trainer._logger_connector.log(
            self.__dict__.get("_current_fx_name"),
            name,
            value,
            prog_bar=prog_bar,
            logger=True if logger is None else logger,
            on_step=on_step,
            on_epoch=on_epoch,
            reduce_fx=reduce_fx,
            sync_dist=sync_dist,
            add_dataloader_idx=add_dataloader_idx,
            batch_size=batch_size,
        )

    def log_dict(
        self,
        dictionary: dict,
        prog_bar: bool = False,
        logger: bool | None = None,
        on_step: bool | None = None,
        on_epoch: bool | None = None,
        reduce_fx="mean",
        enable_graph: bool = False,
        sync_dist: bool = False,
        sync_dist_group=None,
        add_dataloader_idx: bool = True,
        batch_size: int | None = None,
        rank_zero_only: bool = False,
    ) -> None:
        """``self.log`` for every item of ``dictionary``."""
        for name, value in dictionary.items():
            self.log(
                name,
                value,
                prog_bar=prog_bar,
                logger=logger,
                on_step=on_step,
                on_epoch=on_epoch,
                reduce_fx=reduce_fx,
                sync_dist=sync_dist,
                add_dataloader_idx=add_dataloader_idx,
                batch_size=batch_size,
            )

    def print(self, *args, **kwargs) -> None:
        """``print`` on rank 0 only."""
        trainer = self.__dict__.get("_trainer")
        if trainer is None or trainer.is_global_zero:
            builtins.print(*args, **kwargs)

    # ------------------------------------------------------------ checkpoints
    @classmethod
    def load_from_checkpoint(
        cls, checkpoint_path, map_location=None, strict: bool = True, **kwargs
    ):
        """Rebuild the module from a checkpoint: ``cls(**saved hyperparameters, **kwargs)``
        (``save_hyperparameters()`` in ``__init__`` makes that possible), then
        ``on_load_checkpoint`` and the weights (``strict``: every key and shape must match)."""
        from ember.trainer.checkpoint_state import load_module_from_checkpoint

        return load_module_from_checkpoint(cls, checkpoint_path, map_location, strict, kwargs)

    # ----------------------------------------------------------- optimization
    def optimizers(self, use_pl_optimizer: bool = True):
        """The optimizer (or list of them) from ``configure_optimizers``, wrapped so that
        ``opt.step()`` counts as a global step and runs ``on_before_optimizer_step``."""
        trainer = self.trainer
        opts = trainer._optimizer_proxies if use_pl_optimizer else trainer.optimizers
        if not opts:
            raise RuntimeError(
                "self.optimizers(): configure_optimizers has not been called "
                "yet (optimizers exist during Trainer.fit)"
            )
        return opts[0] if len(opts) == 1 else list(opts)

    def lr_schedulers(self):
        """The scheduler (or list of them) from ``configure_optimizers``; None if none."""
        configs = self.trainer.lr_scheduler_configs
        if not configs:
            return None
        schedulers = [c.scheduler for c in configs]
        return schedulers[0] if len(schedulers) == 1 else schedulers

    def manual_backward(self, loss, *args, **kwargs) -> None:
        """``loss.backward()`` with the backward hooks, for manual optimization."""
        if self.automatic_optimization:
            raise RuntimeError(
                "manual_backward is for manual optimization: set "
                "self.automatic_optimization = False in __init__"
            )
        from ember.trainer.optimization import check_loss, run_backward

        trainer = self.trainer
        if loss.numel() == 1 and check_loss(trainer, loss, trainer._progress.batch_idx) is None:
            return  # on_nonfinite_loss="skip"
        run_backward(trainer, loss, *args, **kwargs)

    def backward(self, loss, *args, **kwargs) -> None:
        """How the loss is back-propagated; override for e.g. ``retain_graph=True``."""
        loss.backward(*args, **kwargs)

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer, optimizer_closure=None) -> None:
        """Override to change when or how the optimizer steps (e.g. a learning-rate warmup);
        the closure runs ``training_step`` and backward, so it must be called."""
        optimizer.step(closure=optimizer_closure)

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer) -> None:
        optimizer.zero_grad()

    def lr_scheduler_step(self, scheduler, metric) -> None:
        if metric is None:
            scheduler.step()
        else:
            scheduler.step(metric)

    def configure_gradient_clipping(
        self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
    ) -> None:
        """Called before every optimizer step with the Trainer's clipping settings."""
        self.clip_gradients(
            optimizer,
            gradient_clip_val=gradient_clip_val,
            gradient_clip_algorithm=gradient_clip_algorithm,
        )

    def clip_gradients(
        self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
    ) -> None:
        """Clip the gradients of ``optimizer``'s parameters by norm (default) or value."""
        from ember.trainer.optimization import clip_gradients

        trainer = self.__dict__.get("_trainer")
        if gradient_clip_val is None and trainer is not None:
            gradient_clip_val = trainer.gradient_clip_val
        if gradient_clip_algorithm is None and trainer is not None:
            gradient_clip_algorithm = trainer.gradient_clip_algorithm
        clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm or "norm")

    def toggle_optimizer(self, optimizer) -> None:
        """Freeze (requires_grad=False) every parameter that ``optimizer`` does not own, so
        that with several optimizers only one set of gradients is computed."""
        opt = getattr(optimizer, "optimizer", optimizer)
        own = {id(p) for g in opt.param_groups for p in g["params"]}
        saved = self.__dict__.setdefault("_param_requires_grad_state", {})
        for p in self.parameters():
            saved.setdefault(id(p), (p, p.requires_grad))
            if id(p) not in own:
                p.requires_grad = False

    def untoggle_optimizer(self, optimizer) -> None:
        for p, flag in self.__dict__.pop("_param_requires_grad_state", {}).values():
            p.requires_grad = flag

    def freeze(self) -> None:
        for p in self.parameters():
            p.requires_grad = False
        self.eval()

    def unfreeze(self) -> None:
        for p in self.parameters():
            p.requires_grad = True
        self.train()
