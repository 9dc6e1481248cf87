"""SIGTERM preemption: the handler that notes the signal while fit runs, and the check at a clean
loop boundary that saves ``last.ckpt`` on every rank and stops the run."""

from __future__ import annotations

import os

from ember.trainer.checkpoint_state import checkpoint_callbacks, save_checkpoint


class Preempted(BaseException):
    """Raised by the fit loop after SIGTERM and a saved checkpoint; ``Trainer.fit`` catches
    it and returns (a BaseException, so an ``except Exception`` in user code lets it pass)."""

    def __init__(self, path: str):
        super().__init__(path)
        self.path = path


def preemption_path(trainer) -> str:
    """``last.ckpt`` in the checkpoint callback's directory, else in
    ``<log_dir or default_root_dir>/checkpoints``: where ``fit(ckpt_path="last")`` looks."""
    for cb in checkpoint_callbacks(trainer):
        dirpath = getattr(cb, "dirpath", None)
        if dirpath:
            return os.path.join(
                dirpath,
                getattr(cb, "CHECKPOINT_NAME_LAST", "last")
                + getattr(cb, "FILE_EXTENSION", ".ckpt"),
            )
    return os.path.join(trainer.log_dir, "checkpoints", "last.ckpt")


class SigtermHandler:
    """While fit runs (main thread only): SIGTERM sets ``trainer.received_sigterm``; the fit
    loop then saves a checkpoint at the next batch boundary and stops. The previous handler
    comes back afterwards. A forked DataLoader worker that inherits the handler dies of the
    signal as usual."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.previous = None
        self.installed = False

    def _handle(self, signum, frame) -> None:
        import signal

        if os.getpid() != self.pid:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.trainer.received_sigterm = True

    def __enter__(self):
        import signal
        import threading

        self.trainer.received_sigterm = False
        if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGTERM"):
            self.pid = os.getpid()
            self.previous = signal.signal(signal.SIGTERM, self._handle)
            self.installed = True
        self.trainer._sigterm_installed = self.installed
        return self

    def __exit__(self, *exc) -> bool:
        import signal

        if self.installed:
            previous = self.previous if self.previous is not None else signal.SIG_DFL
            signal.signal(signal.SIGTERM, previous)
        self.trainer._sigterm_installed = False
        return False


def check_preemption(trainer) -> None:
    """At a clean loop boundary: when SIGTERM reached any rank, save and stop (every rank
    takes the same decision, so every rank saves at the same step)."""
    if not getattr(trainer, "_sigterm_installed", False):
        return
    flag = bool(getattr(trainer, "received_sigterm", False))
    if trainer.strategy.world_size > 1:
        flag = trainer.strategy.reduce_boolean_decision(flag, all=False)
    if not flag:
        return
    path = preemption_path(trainer)
    save_checkpoint(trainer, path)
    raise Preempted(path)
