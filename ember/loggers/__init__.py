"""``ember.loggers``: the Logger base, TensorBoard and CSV loggers."""

from ember.loggers.logger import Logger, rank_zero_only

__all__ = ["Logger", "rank_zero_only"]
