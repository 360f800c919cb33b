"""Liveness of a synchronous group: heartbeats, so that a lost rank ends the group, by name.

A rank of an all-reduce group that dies or freezes (killed, out of memory, SIGSTOP, a node
gone) leaves the others in a collective that MPI never ends and Gloo ends only with an error
that names no rank. Each process therefore runs a `Watchdog` thread: it beats (a counter in
a TCP store hosted by the group's first rank) every `interval` and watches the counter of
its successor in the ring (r -> r + 1 mod N, so the store sees O(N) requests per interval).
A successor silent for `timeout_s` is declared lost; the verdict is published in the store,
and every surviving process prints it as one line, waits briefly for the others to print
theirs, and leaves with exit code EXIT_PEER_LOST without MPI_Finalize (which would wait
for the lost process forever). If the store itself stops answering, its host (the group's
first rank) is the one lost. With `fatal=False` (the folds of a hyper-parameter study, whose
coordinator gives up the group instead of the whole job) the verdict is only reported, and
the collective that fails raises it as a TrainingError.

The threads beat while the main thread computes or waits in a collective (PyTorch and
mpi4py release the GIL there), so a slow rank is not lost; a rank that hangs with its
threads alive is caught by the collectives' own timeout (the process group's, also
`timeout_s`) instead.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

from scaletrain.parallel.world import tcp_store

EXIT_PEER_LOST = 3


def beat_interval(timeout_s: float) -> float:
    """Seconds between heartbeats: several per timeout, at most one per second."""
    return min(1.0, timeout_s / 4)


def open_store(comm: Any, timeout_s: float) -> Any:
    """A TCP store hosted by the first rank of `comm` (collective). Heartbeats travel over
    TCP, not MPI: an MPI call from a thread can wait for the library's lock while the main
    thread blocks in a collective, and beats must not depend on what the main thread does."""
    store = tcp_store(comm, timeout_s)
    comm.Barrier()  # every rank is connected before anyone watches
    return store


class Watchdog:
    """Heartbeats of the ranks of `comm` (collective to create: every rank of `comm`)."""

    def __init__(self, comm: Any, timeout_s: float, what: str, fatal: bool = True) -> None:
        from mpi4py import MPI

        self.fatal = fatal
        self.timeout_s = timeout_s
        self.interval = beat_interval(timeout_s)
        self.what = what  # e.g. "the all-reduce group", for the messages
        self.me, self.n = comm.rank, comm.size
        # messages name ranks of the job (a group may be a fold of a hyper-parameter study)
        self.world_ranks: list[int] = comm.allgather(MPI.COMM_WORLD.Get_rank())
        self.successor = (self.me + 1) % self.n
        self.store = open_store(comm, timeout_s)
        self.verdict: str | None = None
        self._decided = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scaletrain-watchdog", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        store, succ = self.store, self.successor
        seen, since = -1, time.monotonic()
        while not self._stop.wait(self.interval):
            try:
                store.add(f"beat/{self.me}", 1)
                if store.check(["lost"]):
                    return self._fail(store.get("lost").decode(), publish=False)
                if succ is None:
                    continue
                if store.check([f"done/{succ}"]):
                    succ = None  # it finished normally: nothing more to watch
                    continue
                count = store.add(f"beat/{succ}", 0)
            except Exception as exc:  # the store is gone or frozen: its host is lost
                if self._stop.is_set():
                    return
                return self._fail(self._host_lost(exc), publish=False)
            now = time.monotonic()
            if count != seen:
                seen, since = count, now
            elif now - since > self.timeout_s:
                return self._fail(
                    f"rank {self.world_ranks[succ]} of {self.what} is lost: no heartbeat for "
                    f"{now - since:.1f} s (parallel.timeout_s={self.timeout_s:g}); it died or "
                    f"froze",
                    publish=True,
                )
        self._finish()

    def _host_lost(self, exc: Exception) -> str:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        return (
            f"rank {self.world_ranks[0]} of {self.what} is lost: its heartbeat store stopped "
            f"answering within parallel.timeout_s={self.timeout_s:g} s ({first})"
        )

    def _fail(self, verdict: str, publish: bool) -> None:
        """Report the lost rank (the first verdict published wins) and end this process."""
        try:
            if publish:
                verdict = self.store.compare_set("lost", "", verdict).decode() or verdict
        except Exception:
            pass
        self.verdict = verdict
        self._decided.set()
        if not self.fatal:
            print(
                f"warning: rank {self.world_ranks[self.me]}: {verdict}",
                file=sys.stderr,
                flush=True,
            )
            return
        print(
            f"error: rank {self.world_ranks[self.me]}: {verdict}; stopping (exit {EXIT_PEER_LOST})",
            file=sys.stderr,
            flush=True,
        )
        # the others print too before anyone exits: a launcher may kill the job on our exit
        deadline = time.monotonic() + 3 * self.interval
        try:
            self.store.add("acks", 1)
            while self.store.add("acks", 0) < self.n - 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.me == 0:  # the store's host leaves last: the others' acks need it
                time.sleep(self.interval)
        except Exception:
            pass
        sys.stdout.flush()
        os._exit(EXIT_PEER_LOST)  # MPI_Finalize would wait for the lost rank forever

    def _finish(self) -> None:
        """Stopped normally: say so; the store's host keeps it up until everyone has."""
        try:
            self.store.set(f"done/{self.me}", "1")
            if self.me == 0:
                keys = [f"done/{r}" for r in range(self.n)]
                deadline = time.monotonic() + self.timeout_s
                while not self.store.check(keys) and time.monotonic() < deadline:
                    time.sleep(0.05)
        except Exception:
            pass

    # ------------------------------------------------------------------ the main thread

    def await_verdict(self) -> str | None:
        """After a failed collective: wait until the watchdog has decided whether a rank is
        lost (then it ends this process) or a timeout and some beats have passed (None)."""
        if self._decided.wait(self.timeout_s + 3 * self.interval) and self.fatal:
            time.sleep(6 * self.interval)  # the thread is ending the process
        return self.verdict

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.timeout_s + 2 * self.interval)
