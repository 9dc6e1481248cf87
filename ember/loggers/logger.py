"""The Logger base: where the Trainer sends metrics and hyperparameters.

Loggers write on rank 0 only; the Trainer asks its strategy before calling them, and each
logger also guards its own writes with ``rank_zero_only``.
"""

from __future__ import annotations

import functools
import os


def global_rank() -> int:
    """This process's rank, from the launcher's environment (0 when not under MPI)."""
    for var in ("EMBER_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "RANK"):
        if var in os.environ:
            return int(os.environ[var])
    return 0


def rank_zero_only(fn):
    """Run ``fn`` on rank 0 only; other ranks get None."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if global_rank() == 0:
            return fn(*args, **kwargs)
        return None

    return wrapper


class Logger:
    """Subclass and implement ``log_metrics`` and ``log_hyperparams``."""

    @property
    def name(self) -> str | None:
        return None

    @property
    def version(self) -> int | str | None:
        return None

    @property
    def root_dir(self) -> str | None:
        return None

    @property
    def log_dir(self) -> str | None:
        return None

    @property
    def save_dir(self) -> str | None:
        return None

    @property
    def experiment(self):
        return None

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        raise NotImplementedError

    def log_hyperparams(self, params: dict, metrics: dict | None = None) -> None:
        raise NotImplementedError

    def log_text(self, tag: str, text: str, step: int | None = None) -> None:
        """Optional: text such as generated samples (TensorBoard's Text tab)."""

    def save(self) -> None:
        """Flush what is buffered."""

    def finalize(self, status: str) -> None:
        """Called once at the end of fit/validate/test with 'success', 'failed' or
        'interrupted'."""
        self.save()

    def after_save_checkpoint(self, checkpoint_callback) -> None:
        """Called after a checkpoint callback saved a checkpoint."""
