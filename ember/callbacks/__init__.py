"""``ember.callbacks``: the Callback base and the built-in callbacks."""

from ember.callbacks.callback import Callback
from ember.callbacks.early_stopping import EarlyStopping, EarlyStoppingReason
from ember.callbacks.gradient_accumulation import GradientAccumulationScheduler
from ember.callbacks.lambda_function import LambdaCallback
from ember.callbacks.lr_monitor import LearningRateMonitor
from ember.callbacks.model_checkpoint import Checkpoint, ModelCheckpoint
from ember.callbacks.model_summary import ModelSummary, summarize
from ember.callbacks.on_exception_checkpoint import OnExceptionCheckpoint
from ember.callbacks.progress import TQDMProgressBar
from ember.callbacks.throughput import ThroughputMonitor
from ember.callbacks.timer import Timer

__all__ = [
    "Callback",
    "Checkpoint",
    "EarlyStopping",
    "EarlyStoppingReason",
    "GradientAccumulationScheduler",
    "LambdaCallback",
    "LearningRateMonitor",
    "ModelCheckpoint",
    "ModelSummary",
    "OnExceptionCheckpoint",
    "TQDMProgressBar",
    "ThroughputMonitor",
    "Timer",
    "summarize",
]
