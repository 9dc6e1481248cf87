"""``ember.loggers``: the Logger base, TensorBoard and CSV loggers.

tensorboardX and PyYAML are imported only when a logger first writes.
"""

from ember.loggers.csv_logs import CSVLogger
from ember.loggers.logger import Logger, rank_zero_only
from ember.loggers.tensorboard import TensorBoardLogger

__all__ = ["CSVLogger", "Logger", "TensorBoardLogger", "rank_zero_only"]
