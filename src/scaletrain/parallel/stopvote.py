"""A stop that every process of a group agrees on, taken by all of them at the same step.

Each step every process adds whether it was asked to stop (a signal) to a non-blocking
all-reduce over MPI (one host integer: nothing waits for a GPU) and reads the result of the
step before. The answer is one step late, and it costs no waiting: that all-reduce had a
whole step to complete, and every process asks for it at the same step.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import numpy as np

from scaletrain.errors import TrainingError

SPIN_S = 0.01  # then the vote is late: a process is slower this step, or lost


class StopVote:
    """Collective: every process of `comm` calls it once per step, in the same steps."""

    def __init__(self, comm: Any, timeout_s: float) -> None:
        self.comm, self.timeout_s = comm, timeout_s
        self._mine = np.zeros(1, dtype=np.int32)
        self._any = np.zeros(1, dtype=np.int32)
        self._request: Any = None

    def __call__(self, requested: bool) -> bool:
        """Whether some process of the group asked to stop by the step before this one."""
        from mpi4py import MPI

        if self._request is not None:
            self._complete()
            if self._any[0]:
                return True  # no vote after this: every process stops here
        self._mine[0] = requested
        self._request = self.comm.Iallreduce(self._mine, self._any, op=MPI.MAX)
        return False

    def _complete(self) -> None:
        # done or nearly (the others joined it a step ago): spin, since a sleep, even of 0 s,
        # costs 50-100 us (2 cores, MPICH: 12 against 100 us a vote); then pause
        start = time.monotonic()
        pause = 0.0
        while not self._request.Test():
            now = time.monotonic()
            if now - start > self.timeout_s:
                raise TrainingError(
                    f"the group's stop vote did not complete within {self.timeout_s:g} s "
                    "(parallel.timeout_s): a process is lost or stuck"
                )
            if now - start > SPIN_S:
                pause = min(max(pause * 2, 1e-4), 1e-2)
                time.sleep(pause)
        self._request = None

    def close(self) -> None:
        """The last vote, still on its way at the end of training, completed (a process
        lost by then is another part's to report)."""
        if self._request is not None:
            with contextlib.suppress(TrainingError):
                self._complete()
