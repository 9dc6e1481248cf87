"""``DataModule``: the data side of an experiment in one object (Lightning's
LightningDataModule): download once, split, and hand out the dataloaders."""

from __future__ import annotations

from ember.trainer.hparams import HyperparametersMixin
from ember.trainer.module_hooks import DataHooks


class DataModule(HyperparametersMixin, DataHooks):
    """Override ``prepare_data`` (download, once per node), ``setup(stage)`` (splits and
    transforms, on every process) and the ``*_dataloader`` methods you need.

    ``state_dict``/``load_state_dict`` let a data module with state (e.g. a position in a
    stream) travel in checkpoints.
    """

    name: str | None = None

    def __init__(self) -> None:
        self.trainer = None

    @property
    def _trainer(self):  # DataHooks.transfer_batch_to_device looks for it
        return self.__dict__.get("trainer")

    def state_dict(self) -> dict:
        """What to save in a checkpoint (JSON-serialisable)."""
        return {}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore what ``state_dict`` returned."""

    def on_exception(self, exception: BaseException) -> None:
        """Called when fit/validate/test/predict is interrupted by an exception."""

    @classmethod
    def from_datasets(
        cls,
        train_dataset=None,
        val_dataset=None,
        test_dataset=None,
        predict_dataset=None,
        batch_size: int = 1,
        num_workers: int = 0,
        **dataloader_kwargs,
    ) -> DataModule:
        """A DataModule over ready datasets (train shuffled, the others in order)."""
        from ember.data.dataloader import DataLoader

        def loader(dataset, shuffle: bool):
            if isinstance(dataset, (list, tuple)):
                return [loader(d, shuffle) for d in dataset]
            return DataLoader(
                dataset,
                batch_size=batch_size,
                shuffle=shuffle,
                num_workers=num_workers,
                **dataloader_kwargs,
            )

        datamodule = cls()
        if train_dataset is not None:
            datamodule.train_dataloader = lambda: loader(train_dataset, True)
        if val_dataset is not None:
            datamodule.val_dataloader = lambda: loader(val_dataset, False)
        if test_dataset is not None:
            datamodule.test_dataloader = lambda: loader(test_dataset, False)
        if predict_dataset is not None:
            datamodule.predict_dataloader = lambda: loader(predict_dataset, False)
        return datamodule
