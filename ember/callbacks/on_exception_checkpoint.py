"""OnExceptionCheckpoint: save a checkpoint when a run dies with an exception (Ctrl-C too),
so the work done since the last regular checkpoint is not lost."""

from __future__ import annotations

import os

from ember.callbacks.model_checkpoint import Checkpoint


class OnExceptionCheckpoint(Checkpoint):
    """Writes ``<dirpath>/<filename>.ckpt`` in ``on_exception`` (overwriting an older one).

    A later fit that finishes without an exception removes the file, as Lightning does: it
    would otherwise look like a fresh crash checkpoint. Unlike Lightning, a run that itself
    failed keeps it (Ember's Trainer calls ``teardown`` after ``on_exception``).
    """

    FILE_EXTENSION = ".ckpt"

    def __init__(self, dirpath, filename: str = "on_exception"):
        if not filename:
            raise ValueError("OnExceptionCheckpoint: the filename cannot be empty")
        # known now: an exception can come before setup
        self.dirpath = os.fspath(dirpath)
        self.filename = filename
        self._failed = False

    @property
    def ckpt_path(self) -> str:
        return os.path.join(self.dirpath, self.filename + self.FILE_EXTENSION)

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._failed = False

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._failed = True
        trainer.save_checkpoint(self.ckpt_path)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if self._failed or stage != "fit":
            return
        remove = getattr(trainer.strategy, "remove_checkpoint", None)
        if remove is not None:
            remove(self.ckpt_path)
        elif trainer.strategy.is_global_zero and os.path.isfile(self.ckpt_path):
            os.remove(self.ckpt_path)
