"""The collective watchdog: a collective that waits longer than ``timeout`` ends the job.

The normal path costs two attribute writes per collective: each communicator has a channel
that records which collective (sequence number, name) this rank has entered and since when.
A daemon thread wakes every ``poll`` seconds, answers peers' questions and checks its own
channels. When one has waited past the deadline, the thread asks every other rank (over a
private communicator, point to point) where it stands: a rank that has entered the same
collective arrived; any other did not, and its answer says where it is instead (its last
collective and the line its main thread is running), or it gave no answer at all. The lowest
waiting rank prints that report to stderr and calls MPI_Abort; the others follow after a grace
period if it could not. Peers answer from their own watchdog thread, so a rank that sleeps,
computes or waits elsewhere still explains itself.

Needs MPI_THREAD_MULTIPLE (mpi4py asks for it; MPICH and Open MPI provide it). Without it the
watchdog can only report its own rank's state before aborting.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import threading
import time
import traceback

from ember.distributed.failure import FORWARD_GRACE_S

__all__ = ["Watchdog"]

_QUERY, _REPLY, _EXIT = 7301, 7302, 7303
ANSWER_WAIT_S = 5.0  # how long a stalled rank waits for its peers to say where they are


class Channel:
    """One communicator's progress on this rank: ``seq`` collectives entered, the current
    one's name and start time (``since`` is None between collectives)."""

    __slots__ = ("name", "seq", "op", "since")

    def __init__(self, name: str):
        self.name, self.seq, self.op, self.since = name, 0, None, None

    def enter(self, op: str) -> None:
        self.op = op
        self.seq += 1
        self.since = time.monotonic()

    def exit(self) -> None:
        self.since = None


class Watchdog:
    """Watches every channel of this rank; aborts the job when a collective stalls."""

    def __init__(self, mpi_comm, timeout: float, poll: float | None = None):
        from mpi4py import MPI

        self._MPI = MPI
        self.timeout = float(timeout)
        self._poll = poll
        self.comm = mpi_comm.Dup()  # private: queries never mix with the job's messages
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.channels: dict = {}
        self.threaded = MPI.Query_thread() >= MPI.THREAD_MULTIPLE
        self._stop = threading.Event()
        self._thread = None
        self._sends: list = []  # (request, buffer) of answers in flight
        self.exited: dict = {}  # rank -> its state when it left (exit notice)
        self._host = os.uname().nodename

    @property
    def poll(self) -> float:
        if self._poll is not None:
            return self._poll
        return min(1.0, max(0.05, self.timeout / 8))

    def channel(self, name: str) -> Channel:
        ch = self.channels.get(name)
        if ch is None:
            ch = self.channels[name] = Channel(name)
        return ch

    # ------------------------------------------------------------------ thread
    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="ember-watchdog", daemon=True)
        self._thread.start()
        atexit.register(self.stop)  # before mpi4py's MPI_Finalize (atexit runs LIFO)

    def stop(self) -> None:
        """Stop the thread; at interpreter exit, first tell the peers this rank is leaving
        (with how far it got), so one that waits for it aborts now, not after the timeout."""
        if self._thread is None:
            return
        self._stop.set()
        t = self._thread
        if t is not threading.current_thread():
            t.join(timeout=5)
        self._thread = None
        if self.threaded:
            self._notify_exit()

    def _notify_exit(self) -> None:
        mpi = self._MPI
        data = json.dumps(self.state()).encode()
        reqs = [
            self.comm.Isend([data, mpi.BYTE], r, _EXIT) for r in range(self.size) if r != self.rank
        ]
        deadline = time.monotonic() + 1.0
        while reqs and time.monotonic() < deadline:
            reqs = [r for r in reqs if not r.Test()]
            time.sleep(0.001)

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.poll):
                if self.threaded:
                    self._answer()
                now = time.monotonic()
                for ch in list(self.channels.values()):
                    since = ch.since
                    if since is None:
                        continue
                    if now - since > self.timeout or self._left_behind(ch):
                        self._stalled(ch, ch.seq, now - since)
        except Exception:  # the watchdog must never take the job down by itself
            traceback.print_exc()

    # ------------------------------------------------------------------ state
    def state(self) -> dict:
        """This rank's progress on every channel, and where its main thread is."""
        now = time.monotonic()
        chans = {}
        for name, ch in list(self.channels.items()):
            since = ch.since
            chans[name] = [ch.seq, ch.op, None if since is None else round(now - since, 3)]
        return {
            "rank": self.rank,
            "host": self._host,
            "pid": os.getpid(),
            "channels": chans,
            "where": _main_thread_location(),
        }

    def _left_behind(self, ch: Channel) -> bool:
        """True when a rank that has exited never entered ``ch``'s current collective."""
        for st in self.exited.values():
            got = st["channels"].get(ch.name)
            if got is None or got[0] < ch.seq:
                return True
        return False

    def _answer(self) -> None:
        """Reply to every pending query with this rank's state; note exit notices."""
        mpi, comm = self._MPI, self.comm
        status = mpi.Status()
        while comm.Iprobe(mpi.ANY_SOURCE, _EXIT, status):
            src = status.Get_source()
            buf = bytearray(max(status.Get_count(mpi.BYTE), 1))
            comm.Recv([buf, mpi.BYTE], src, _EXIT)
            try:
                self.exited[src] = dict(json.loads(bytes(buf)), exited=True)
            except ValueError:
                self.exited[src] = {"channels": {}, "exited": True}
        while comm.Iprobe(mpi.ANY_SOURCE, _QUERY, status):
            src = status.Get_source()
            buf = bytearray(max(status.Get_count(mpi.BYTE), 1))
            comm.Recv([buf, mpi.BYTE], src, _QUERY)
            data = json.dumps(self.state()).encode()
            self._sends.append((comm.Isend([data, mpi.BYTE], src, _REPLY), data))
        self._sends = [(r, d) for r, d in self._sends if not r.Test()]

    def _gather_states(self, wait: float) -> dict:
        """Ask every other rank for its state; the answers that arrive within ``wait`` s."""
        mpi, comm = self._MPI, self.comm
        states = {self.rank: self.state(), **self.exited}
        if not self.threaded:
            return states
        q = b"?"
        reqs = [comm.Isend([q, mpi.BYTE], r, _QUERY) for r in range(self.size) if r not in states]
        status = mpi.Status()
        deadline = time.monotonic() + wait
        while len(states) < self.size and time.monotonic() < deadline:
            self._answer()  # other waiting ranks are asking us at the same time
            while comm.Iprobe(mpi.ANY_SOURCE, _REPLY, status):
                src = status.Get_source()
                buf = bytearray(status.Get_count(mpi.BYTE))
                comm.Recv([buf, mpi.BYTE], src, _REPLY)
                try:
                    states[src] = json.loads(bytes(buf))
                except ValueError:
                    states[src] = None
            time.sleep(0.01)
        for r in reqs:
            if not r.Test():
                r.Cancel()
        return states

    def _stalled(self, ch: Channel, seq: int, waited: float) -> None:
        # Generous: a live rank whose main thread spins inside MPI on an oversubscribed
        # machine can take seconds to let its watchdog thread answer (CI saw 1.75 s miss).
        wait = 3 * self.poll + ANSWER_WAIT_S
        states = self._gather_states(wait)
        missing = []
        for r in range(self.size):
            st = states.get(r)
            got = None if st is None else st["channels"].get(ch.name)
            if got is None or got[0] < seq:
                missing.append(r)
        if ch.since is None or ch.seq != seq:
            return  # it completed while we were asking: a slow collective, not a stall
        arrived = [r for r in range(self.size) if r not in missing]
        report = _report(ch.name, seq, ch.op, waited, self.timeout, missing, states)
        if arrived and self.rank != min(arrived):
            time.sleep(wait + 2.0)  # the lowest waiting rank reports and aborts first
            if ch.since is None or ch.seq != seq:
                return
        sys.stderr.write(report)
        sys.stderr.flush()
        time.sleep(FORWARD_GRACE_S)  # let the launcher forward the report before the kill
        try:
            self._MPI.COMM_WORLD.Abort(1)
        finally:
            os._exit(1)


def _main_thread_location() -> str:
    frame = sys._current_frames().get(threading.main_thread().ident)
    if frame is None:
        return "(main thread gone)"
    stack = traceback.extract_stack(frame)[-3:]
    return " <- ".join(
        f"{os.path.basename(f.filename)}:{f.lineno} in {f.name}" for f in reversed(stack)
    )


def _report(name, seq, op, waited, timeout, missing, states) -> str:
    lines = [
        f"ember.distributed watchdog: collective #{seq} ({op}) on communicator "
        f"{name!r} has waited {waited:.1f} s (timeout {timeout:g} s); ranks that did not "
        f"arrive: {missing}. Aborting the job."
    ]
    for r in missing:
        st = states.get(r)
        if st is None:
            lines.append(f"  rank {r}: no answer (dead, or stuck where Python cannot run)")
            continue
        got = st["channels"].get(name)
        last = (
            "no collective yet"
            if not got or not got[0]
            else (
                f"last entered #{got[0]} ({got[1]})"
                + ("" if got[2] is None else f", waiting {got[2]:.1f} s there")
            )
        )
        at = "it has EXITED" if st.get("exited") else f"main thread at {st['where']}"
        lines.append(
            f"  rank {r} ({st.get('host', '?')}, pid {st.get('pid', '?')}): on "
            f"{name!r} {last}; {at}"
        )
        for other, (oseq, oop, owait) in st["channels"].items():
            if other != name and owait is not None:
                lines.append(f"    and waiting {owait:.1f} s in #{oseq} ({oop}) on {other!r}")
    return "\n".join(lines) + "\n"
