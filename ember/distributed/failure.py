"""An exception on one rank ends the whole job, at once, instead of leaving the others blocked.

Without this, a rank that raises exits (or sits in MPI_Finalize) while its peers wait forever
in their next collective. Here the failing rank prints its rank and traceback to stderr and
calls MPI_Abort, which makes the launcher kill every process: the job ends within seconds with
a non-zero status. ``world()`` installs the hook for MPI jobs with more than one rank;
``abort_on_exception()`` is the explicit form for a block of code.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
import traceback

__all__ = ["abort_on_exception", "install_excepthook", "report_and_abort"]


def _should_abort(exc) -> bool:
    """SystemExit(0) is a normal exit; every other exception ends the job."""
    if isinstance(exc, SystemExit):
        return exc.code not in (None, 0)
    return True


# MPI_Abort makes the launcher kill every rank at once; on a busy machine it could do so before
# forwarding the report this rank just wrote to stderr (seen: an empty job output). A short
# pause lets the launcher pass the report on first.
FORWARD_GRACE_S = 0.5


def report_and_abort(comm, exc_type, exc, tb, where: str = "main thread") -> None:
    """Print ``[rank r/size]`` and the traceback, then MPI_Abort the job (exit code 1)."""
    host = os.uname().nodename
    head = (
        f"ember.distributed: rank {comm.rank}/{comm.size} ({host}, pid {os.getpid()}) "
        f"raised in its {where}; aborting the whole job.\n"
    )
    body = "".join(traceback.format_exception(exc_type, exc, tb))
    text = "".join(f"[rank {comm.rank}] {line}\n" for line in body.rstrip("\n").split("\n"))
    try:
        sys.stderr.write(head + text)
        sys.stderr.flush()
        time.sleep(FORWARD_GRACE_S)
    finally:
        comm.abort(1)


def _world(comm):
    if comm is None:
        from ember.distributed.comm import world

        comm = world()
    return comm


@contextlib.contextmanager
def abort_on_exception(comm=None):
    """Run a block; if it raises (anything but ``SystemExit(0)``) on a multi-rank job, report
    and abort every rank. With one process the exception propagates as usual."""
    comm = _world(comm)
    try:
        yield
    except BaseException as exc:
        if comm.size > 1 and _should_abort(exc):
            report_and_abort(comm, type(exc), exc, exc.__traceback__)
        raise


_installed = None


def install_excepthook(comm=None) -> None:
    """Make an uncaught exception in any thread abort the job (idempotent)."""
    global _installed
    comm = _world(comm)
    if comm.size <= 1 or _installed is comm:
        return
    prev_sys, prev_thread = sys.excepthook, threading.excepthook

    def sys_hook(exc_type, exc, tb):
        if _should_abort(exc):
            report_and_abort(comm, exc_type, exc, tb)
        prev_sys(exc_type, exc, tb)

    def thread_hook(args):
        if args.exc_type is not SystemExit or _should_abort(args.exc_value):
            name = args.thread.name if args.thread is not None else "?"
            report_and_abort(
                comm, args.exc_type, args.exc_value, args.exc_traceback, f"thread {name!r}"
            )
        prev_thread(args)

    sys.excepthook = sys_hook
    threading.excepthook = thread_hook
    _installed = comm
