"""The parameter servers' messages, and a client's side of them (a worker's lead rank, or a
sub-master towards its master). One exchange:

    client -> server   header [kind, step, spent, elapsed] (int64), payload (float32): its
                       parameters and buffers as they are (flatstate.py)
    server -> client   reply (float32): the central variable

sent with non-blocking Isend/Irecv of the vectors' memory (no pickling). A client whose server
runs on its node writes the payload into shared memory and reads the reply there (`shm.py`,
parallel.shared_memory): only the header and a one-number notice of the reply travel.

`spent`, `elapsed`: the microseconds the worker's training thread has spent on exchanges and
the microseconds since it began training (-1 from a sub-master), from which the server logs
the share of their time the workers lose to exchanges. Every wait polls with a deadline
(`parallel.timeout_s`) and names the rank that went silent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from scaletrain.errors import TrainingError
from scaletrain.parallel.shm import Slot

TAG_HEADER, TAG_PAYLOAD, TAG_REPLY = 101, 102, 103
TAG_WAKE = 104  # to a client itself: its exchange thread stops waiting (Client.wake)
TAG_STOP = 105  # server to client: the run stops (a signal reached one of its processes)
# Some MPI libraries (Open MPI over shared memory without a single-copy mechanism) move a
# large message in fragments and advance them only inside MPI calls, on both sides: every
# poll moves one fragment. So while a message of ours is travelling we poll without pausing
# (yielding the GIL between polls) for up to SPIN_S; longer waits (a server busy with other
# workers, a slow peer) back off to sleeps of at most MAX_PAUSE.
SPIN_S = 0.05
MAX_PAUSE = 5e-4
# parallel.reply_wait: sleep: the exchange thread looks for the master's reply this often
# (doubling from REPLY_PAUSE up to REPLY_MAX_PAUSE), a fraction of a step of ours
REPLY_PAUSE, REPLY_MAX_PAUSE = 2e-5, 2e-4
# a worker's last exchange is DONE, or STOP when its replica stopped early on a signal
UPDATE, DONE, STOP = 0, 1, 2


def wait_all(
    requests: list[Any],
    timeout_s: float,
    missing: Callable[[], str],
    spin_s: float = SPIN_S,
    receives: int = 0,
) -> None:
    """Complete MPI requests (the first `receives` of them receives), polling (MPI's Wait
    spins a core): without pauses for the first spin_s seconds, then with growing sleeps; on
    timeout give them up (give_up) and raise TrainingError(missing())."""
    from mpi4py import MPI

    start = time.monotonic()
    deadline, spin_until = start + timeout_s, start + spin_s
    pause = 1e-4
    while not MPI.Request.Testall(requests):
        now = time.monotonic()
        if now > deadline:
            give_up(requests, receives)
            raise TrainingError(missing())
        if now < spin_until:
            time.sleep(0)  # lets the training thread have the GIL between polls
            continue
        time.sleep(pause)
        pause = min(pause * 2, MAX_PAUSE)


def give_up(requests: list[Any], receives: int) -> None:
    """Abandon MPI requests whose peer may never answer: the receives (the first `receives`)
    cancelled, the sends left to complete on their own (cancelling a large send crashes
    MPICH), all freed."""
    from mpi4py import MPI

    for i, request in enumerate(requests):
        if request != MPI.REQUEST_NULL:
            if i < receives:
                request.Cancel()
            request.Free()


class StopNotice:
    """The server's word that the run stops: one receive, posted at the start and tested
    after every step (a microsecond), given up at the end if it never came."""

    def __init__(self, comm: Any, server: int) -> None:
        self._buffer = np.zeros(1, dtype=np.int64)
        self._request: Any = comm.Irecv(self._buffer, source=server, tag=TAG_STOP)
        self.received = False

    def __call__(self) -> bool:
        if self._request is not None and self._request.Test():
            self._request, self.received = None, True
        return self.received

    def close(self) -> None:
        if self._request is not None:
            give_up([self._request], receives=1)
            self._request = None


class Client:
    """One side of the exchange: send header + payload, receive the reply (with a deadline).
    With a shared-memory `slot` (server on this node) payload and reply live in it and only
    the header and a notice of the reply travel as messages."""

    def __init__(
        self,
        comm: Any,
        me: int,
        server: int,
        size: int,
        timeout_s: float,
        slot: Slot | None,
        wakeable: bool = False,
    ) -> None:
        self.comm, self.me, self.server, self.timeout_s = comm, me, server, timeout_s
        self.header = np.zeros(4, dtype=np.int64)
        self.slot = slot
        self.payload = slot.payload if slot is not None else torch.zeros(size)
        self.reply = slot.reply if slot is not None else torch.zeros(size)
        self.notice = np.zeros(1, dtype=np.int64)  # that the reply is in the slot
        # `wakeable` (where the process goes on after giving its server up: a study's
        # trial): a receive from ourselves that the exchange thread waits on beside its
        # exchange, which wake() completes (posted at the first exchange, kept across them).
        # Else the exchange waits in MPI_Waitall, which costs less CPU time (MPICH, 2 cores:
        # 7.6 against 9.5 ms per step of a worker)
        self.wakeable = wakeable
        self._wake: Any = None
        self._wake_buffer = np.zeros(1, dtype=np.int64)
        self._wake_signal = np.ones(1, dtype=np.int64)  # kept: MPI may read it later

    def receive(self, into: torch.Tensor, what: str, startup_s: float | None = None) -> None:
        """One message from the server, within timeout_s (or `startup_s` while it starts)."""
        request = self.comm.Irecv(into.numpy(), source=self.server, tag=TAG_REPLY)
        allowance = startup_s or self.timeout_s
        wait_all([request], allowance, lambda: self.silent(what, startup_s), receives=1)

    def exchange(
        self, kind: int, step: int, wait: str = "poll", clock: tuple[float, float] | None = None
    ) -> torch.Tensor:
        """Send and wait for the reply. `wait`: poll (here, with the deadline); spin (in
        MPI_Waitall, which holds no GIL while it progresses the messages: for the exchange
        thread, whose caller keeps the deadline); sleep (like spin, but the master's work is
        waited for in short sleeps, probing for its reply). `clock`: the sender's seconds on
        exchanges and since it began (None: not a worker)."""
        from mpi4py import MPI

        spent, elapsed = (-1, -1) if clock is None else (round(t * 1e6) for t in clock)
        self.header[:] = (kind, step, spent, elapsed)
        # in a slot, the reply is written there and only its notice travels
        into = self.notice if self.slot is not None else self.reply.numpy()
        # posted first, the reply lands in place; probed for (sleep), it waits unmatched
        requests = [] if wait == "sleep" else [self.comm.Irecv(into, self.server, TAG_REPLY)]
        if self.slot is not None:
            self.slot.publish()  # the payload is in the slot before the header arrives
        else:
            requests.append(self.comm.Isend(self.payload.numpy(), self.server, TAG_PAYLOAD))
        requests.append(self.comm.Isend(self.header, dest=self.server, tag=TAG_HEADER))
        if wait == "poll":
            wait_all(
                requests, self.timeout_s, lambda: self.silent(f"reply at step {step}"), receives=1
            )
        elif self.wakeable:
            self._wait_unless_woken(requests, receives=0 if wait == "sleep" else 1)
        else:
            MPI.Request.Waitall(requests)
        if wait == "sleep":
            pause = REPLY_PAUSE
            while not self.comm.Iprobe(source=self.server, tag=TAG_REPLY):
                if self._wake is not None and self._wake.Test():
                    self._woken([], 0)
                time.sleep(pause)
                pause = min(2 * pause, REPLY_MAX_PAUSE)
            self.comm.Irecv(into, source=self.server, tag=TAG_REPLY).Wait()
        if self.slot is not None:
            self.slot.observe()
        return self.reply

    def _wait_unless_woken(self, requests: list[Any], receives: int) -> None:
        """Complete `requests` (the first `receives` of them receives) in MPI_Waitany (no GIL
        held while MPI waits), unless wake() is called first: then TrainingError."""
        from mpi4py import MPI

        if self._wake is None:
            self._wake = self.comm.Irecv(self._wake_buffer, source=self.me, tag=TAG_WAKE)
        waiting = [*requests, self._wake]
        while any(r != MPI.REQUEST_NULL for r in requests):
            if MPI.Request.Waitany(waiting) == len(requests):
                self._woken(requests, receives)

    def _woken(self, requests: list[Any], receives: int) -> None:
        self._wake = None
        give_up(requests, receives)
        raise TrainingError(f"exchange with parameter server rank {self.server} abandoned")

    def wake(self) -> None:
        """From another thread: end the exchange thread's wait (see _wait_unless_woken)."""
        self.comm.Isend(self._wake_signal, dest=self.me, tag=TAG_WAKE).Free()

    def close(self) -> None:
        """Withdraw the wake-up receive (the exchange thread must not be waiting)."""
        if self._wake is not None:
            self._wake.Cancel()
            self._wake.Wait()
            self._wake = None

    def silent(self, what: str, startup_s: float | None = None) -> str:
        # the CLI prefixes "error: rank R:" (this rank)
        limit, key = (self.timeout_s, "timeout_s")
        if startup_s:
            limit, key = startup_s, "startup_timeout_s"
        return (
            f"no {what} from parameter server rank {self.server} within {limit:g} s "
            f"(parallel.{key}); it died, hung or is validating longer"
        )
