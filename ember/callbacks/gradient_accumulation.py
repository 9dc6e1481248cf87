"""GradientAccumulationScheduler: change ``accumulate_grad_batches`` as training progresses."""

from __future__ import annotations

from ember.callbacks.callback import Callback


class GradientAccumulationScheduler(Callback):
    """``scheduling`` maps an epoch (0-based) to the accumulation factor from that epoch on.

    ``GradientAccumulationScheduler({0: 1, 4: 2, 8: 4})`` steps every batch for epochs 0-3,
    every 2 batches for epochs 4-7 and every 4 from epoch 8. Epochs before the first key
    use 1. Set at each epoch start, so the Trainer's own ``accumulate_grad_batches`` must stay 1.
    """

    def __init__(self, scheduling: dict[int, int]):
        if not isinstance(scheduling, dict) or not scheduling:
            raise TypeError(
                "GradientAccumulationScheduler: scheduling must be a non-empty dict "
                f"epoch -> factor, got {scheduling!r}"
            )
        if any(not _is_int(k) or k < 0 for k in scheduling):
            raise ValueError(
                f"GradientAccumulationScheduler: epochs must be ints >= 0, got {list(scheduling)}"
            )
        if any(not _is_int(v) or v < 1 for v in scheduling.values()):
            raise ValueError(
                "GradientAccumulationScheduler: accumulation factors must be ints "
                f">= 1, got {list(scheduling.values())}"
            )
        self.scheduling = {int(k): int(v) for k, v in scheduling.items()}
        self.scheduling.setdefault(0, 1)
        self.epochs = sorted(self.scheduling)
        self._last_set: int | None = None

    def going_to_accumulate_grad_batches(self) -> bool:
        return any(v > 1 for v in self.scheduling.values())

    def get_accumulate_grad_batches(self, epoch: int) -> int:
        for start in reversed(self.epochs):
            if epoch >= start:
                return self.scheduling[start]
        return 1

    def on_train_start(self, trainer, pl_module) -> None:
        if not getattr(pl_module, "automatic_optimization", True):
            raise RuntimeError(
                "GradientAccumulationScheduler: automatic gradient accumulation is "
                "not supported with manual optimization (automatic_optimization = "
                "False). Remove the callback or switch to automatic optimization."
            )
        current = getattr(trainer, "accumulate_grad_batches", 1)
        if current != 1 and current != self._last_set:
            raise ValueError(
                "GradientAccumulationScheduler: Trainer(accumulate_grad_batches="
                f"{current}) and a GradientAccumulationScheduler were both set; "
                "use one of them."
            )

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._last_set = self.get_accumulate_grad_batches(trainer.current_epoch)
        trainer.accumulate_grad_batches = self._last_set


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)
