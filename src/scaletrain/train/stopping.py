"""A graceful stop on a signal: a batch system's notice that the job's time is up.

Slurm sends SIGTERM at the time limit (SIGKILL follows `KillWait` seconds later, 30 by
default), or a signal of the user's choice some time before it (`--signal=USR1@120`), to
every process of the job; MPICH's mpiexec passes SIGTERM and SIGUSR1 on to its processes
(Open MPI's mpirun follows SIGTERM with SIGKILL: docs/distributed.md). On the first signal
training finishes its step, writes a checkpoint and ends with EXIT_STOPPED, so that a
job with `--resume` continues from that step. Repeats are the same notice (under Slurm
every process of the job gets the signal, and a launcher passes it on as well); SIGKILL
still ends a run at once.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any

from scaletrain.errors import ConfigError

# EX_TEMPFAIL of sysexits.h: not finished, try again (here: with --resume)
EXIT_STOPPED = 75


def signal_number(name: str) -> signal.Signals:
    """`SIGTERM` or `TERM` as a signal of this platform, else ConfigError."""
    text = name.strip().upper()
    try:
        return signal.Signals[text if text.startswith("SIG") else f"SIG{text}"]
    except KeyError:
        raise ConfigError(
            f"train.stop_signals: unknown signal {name!r} (e.g. SIGTERM, SIGUSR1, SIGINT)"
        ) from None


class StopSignals:
    """While entered (in the main thread), any of `names` asks training to stop: `requested`
    then holds the name of the first that came."""

    def __init__(self, names: Sequence[str]) -> None:
        self.signals = [signal_number(n) for n in names]
        for s in self.signals:
            if s in (signal.SIGKILL, signal.SIGSTOP):
                raise ConfigError(f"train.stop_signals: {s.name} cannot be caught")
        self.requested: str | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # only there: Python's rule
            for s in self.signals:
                previous = signal.signal(s, self._handle)
                # None: a handler not set from Python, which cannot be put back; the default
                self._previous[s] = signal.SIG_DFL if previous is None else previous
        return self

    def __exit__(self, *exc: object) -> None:
        for s, previous in self._previous.items():
            signal.signal(s, previous)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is None:
            self.requested = signal.Signals(signum).name
