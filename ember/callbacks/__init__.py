"""``ember.callbacks``: the Callback base and the built-in callbacks."""

from ember.callbacks.callback import Callback
from ember.callbacks.gradient_accumulation import GradientAccumulationScheduler
from ember.callbacks.lambda_function import LambdaCallback
from ember.callbacks.lr_monitor import LearningRateMonitor
from ember.callbacks.model_summary import ModelSummary, summarize
from ember.callbacks.progress import TQDMProgressBar
from ember.callbacks.throughput import ThroughputMonitor
from ember.callbacks.timer import Timer

__all__ = [
    "Callback",
    "GradientAccumulationScheduler",
    "LambdaCallback",
    "LearningRateMonitor",
    "ModelSummary",
    "TQDMProgressBar",
    "ThroughputMonitor",
    "Timer",
    "summarize",
]
