"""The hooks a TrainingModule (and, for the data hooks, a DataModule) may override.

Every default is what Lightning 2.x does; the Trainer calls them in Lightning's documented
order (see ``tests/trainer/test_hook_order.py`` for the order written out).
"""

from __future__ import annotations


class DataHooks:
    """Data preparation and batch transfer; shared by TrainingModule and DataModule."""

    prepare_data_per_node: bool = True

    def prepare_data(self) -> None:
        """Download or write data once per node (rank 0 of the node); no state here."""

    def setup(self, stage: str) -> None:
        """Build what needs the data or the device; ``stage`` is fit/validate/test/predict."""

    def teardown(self, stage: str) -> None:
        """Release what ``setup`` built."""

    def train_dataloader(self):
        raise NotImplementedError(
            f"train_dataloader is not implemented in {type(self).__name__}: implement it, or "
            "pass train_dataloaders= / datamodule= to Trainer.fit"
        )

    def val_dataloader(self):
        raise NotImplementedError(f"val_dataloader is not implemented in {type(self).__name__}")

    def test_dataloader(self):
        raise NotImplementedError(f"test_dataloader is not implemented in {type(self).__name__}")

    def predict_dataloader(self):
        raise NotImplementedError(f"predict_dataloader is not implemented in {type(self).__name__}")

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        return batch

    def transfer_batch_to_device(self, batch, device, dataloader_idx: int):
        """Move every Tensor of the (nested) batch to ``device``; override for custom types."""
        trainer = getattr(self, "_trainer", None)
        if trainer is not None:
            return trainer.strategy.batch_to_device(batch, device)
        from ember.distributed.strategy import Strategy

        return Strategy.batch_to_device(Strategy(device), batch, device)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        return batch


class ModelHooks:
    """Hooks around the loops: Lightning's ModelHooks."""

    def on_fit_start(self) -> None: ...
    def on_fit_end(self) -> None: ...

    def on_train_start(self) -> None: ...
    def on_train_end(self) -> None: ...
    def on_train_epoch_start(self) -> None: ...
    def on_train_epoch_end(self) -> None: ...

    def on_train_batch_start(self, batch, batch_idx: int):
        """Return -1 to skip the rest of this epoch."""

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None: ...

    def on_validation_start(self) -> None: ...
    def on_validation_end(self) -> None: ...
    def on_validation_epoch_start(self) -> None: ...
    def on_validation_epoch_end(self) -> None: ...
    def on_validation_batch_start(self, batch, batch_idx: int, dataloader_idx: int = 0): ...
    def on_validation_batch_end(
        self, outputs, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None: ...

    def on_test_start(self) -> None: ...
    def on_test_end(self) -> None: ...
    def on_test_epoch_start(self) -> None: ...
    def on_test_epoch_end(self) -> None: ...
    def on_test_batch_start(self, batch, batch_idx: int, dataloader_idx: int = 0): ...
    def on_test_batch_end(
        self, outputs, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None: ...

    def on_predict_start(self) -> None: ...
    def on_predict_end(self) -> None: ...
    def on_predict_epoch_start(self) -> None: ...
    def on_predict_epoch_end(self) -> None: ...
    def on_predict_batch_start(self, batch, batch_idx: int, dataloader_idx: int = 0): ...
    def on_predict_batch_end(
        self, outputs, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None: ...

    def on_validation_model_zero_grad(self) -> None:
        """Free the gradients before validation (they are not needed there)."""
        self.zero_grad(set_to_none=True)

    def on_validation_model_eval(self) -> None:
        self._remember_modes_and_eval()

    def on_validation_model_train(self) -> None:
        self._restore_modes()

    def on_test_model_eval(self) -> None:
        self._remember_modes_and_eval()

    def on_test_model_train(self) -> None:
        self._restore_modes()

    def on_predict_model_eval(self) -> None:
        self._remember_modes_and_eval()

    def _remember_modes_and_eval(self) -> None:
        """``eval()``, remembering each submodule's mode so that a frozen (eval) submodule is
        not switched to train mode afterwards (a common Lightning complaint)."""
        self.__dict__["_saved_modes"] = [(m, m.training) for m in self.modules()]
        self.eval()

    def _restore_modes(self) -> None:
        saved = self.__dict__.pop("_saved_modes", None)
        if saved is None:
            self.train()
            return
        for m, mode in saved:
            m.training = mode

    def on_before_backward(self, loss) -> None: ...
    def on_after_backward(self) -> None: ...
    def on_before_optimizer_step(self, optimizer) -> None: ...
    def on_before_zero_grad(self, optimizer) -> None: ...

    def configure_model(self) -> None:
        """Create layers lazily (after ``setup``, on the target device)."""

    def configure_callbacks(self):
        """Callbacks that belong with this model; they replace Trainer callbacks of the same
        type."""
        return []


class CheckpointHooks:
    """Add to or read from a checkpoint's dict (the checkpoint format comes with issue 6)."""

    def on_save_checkpoint(self, checkpoint: dict) -> None: ...
    def on_load_checkpoint(self, checkpoint: dict) -> None: ...
