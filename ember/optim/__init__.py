"""``ember.optim``: optimizers and learning-rate schedulers with torch.optim's names and
semantics. Updates run in place on the raw arrays (see ``ember.optim.foreach``)."""

from ember.optim import lr_scheduler as lr_scheduler
from ember.optim.adagrad import Adagrad
from ember.optim.adam import Adam, AdamW
from ember.optim.optimizer import Optimizer, required
from ember.optim.rmsprop import RMSprop
from ember.optim.sgd import SGD

__all__ = ["Optimizer", "required", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "lr_scheduler"]
