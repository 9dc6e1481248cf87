"""``RecipeModule``: a TrainingModule whose optimizer and scheduler come from the recipe's
config as factories (Hydra ``_partial_`` objects), so one model class serves every optimizer and
schedule a config can name."""

from __future__ import annotations

import math

from ember.trainer import TrainingModule


class RecipeModule(TrainingModule):
    """Base of the recipe models.

    ``optimizer``: a callable ``optimizer(param_groups) -> Optimizer`` (e.g.
    ``functools.partial(ember.optim.AdamW, lr=1e-3)``). ``scheduler``: None or a callable
    ``scheduler(optimizer, total_steps=N) -> LRScheduler``, stepped every optimizer step; N is
    the Trainer's ``estimated_stepping_batches``. Neither is a hyperparameter: subclasses call
    ``save_hyperparameters(ignore=RecipeModule.FACTORIES)``.
    """

    FACTORIES = ("optimizer", "scheduler")

    def __init__(self, optimizer=None, scheduler=None) -> None:
        super().__init__()
        self.__dict__["optimizer_factory"] = optimizer
        self.__dict__["scheduler_factory"] = scheduler

    def param_groups(self) -> list:
        """Weight decay on matrices and embeddings only (not on biases and norm gains), as
        nanoGPT and most recipes do; the optimizer's own weight_decay applies to group 0."""
        decay, no_decay = [], []
        for p in self.parameters():
            if p.requires_grad:
                (decay if p.dim() >= 2 else no_decay).append(p)
        groups = [{"params": decay}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        return groups

    def configure_optimizers(self):
        factory = self.__dict__.get("optimizer_factory")
        if factory is None:
            raise ValueError(
                f"{type(self).__name__}: no optimizer; build it with optimizer=<a callable "
                "taking the parameter groups> (the recipes pass the optimizer config, a Hydra "
                "_partial_)"
            )
        opt = factory(self.param_groups())
        make_scheduler = self.__dict__.get("scheduler_factory")
        if make_scheduler is None:
            return opt
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise ValueError(
                f"{type(self).__name__}: the scheduler needs the number of training steps, but "
                "the run has no end (set trainer.max_steps or trainer.max_epochs, or "
                "scheduler=none)"
            )
        sched = make_scheduler(opt, total_steps=max(int(total), 1))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
