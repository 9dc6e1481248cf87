"""``ember.trainer``: TrainingModule, DataModule and the Trainer (Lightning 2.x's vocabulary
and hook order). Heavy optional modules (tqdm, tensorboardX, yaml) load only when a callback or
logger that needs them runs, so ``import ember.trainer`` stays fast."""

from ember.trainer.datamodule import DataModule
from ember.trainer.hparams import AttributeDict
from ember.trainer.module import TrainingModule
from ember.trainer.trainer import Trainer

__all__ = ["Trainer", "TrainingModule", "DataModule", "AttributeDict"]
