"""`--np N`: re-execute this very command under `mpiexec -n N` and hand back its exit code.

The mpiexec next to the Python interpreter comes first (the `mpich` wheel installs one in the
virtual environment, matching the MPI library that mpi4py loads), then the one on PATH.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from scaletrain.errors import ConfigError


def find_mpiexec() -> str:
    """Path of an MPI launcher: next to sys.executable, else mpiexec / mpirun on PATH."""
    here = Path(sys.executable).parent
    for name in ("mpiexec", "mpirun"):
        candidate = here / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    for name in ("mpiexec", "mpirun"):
        found = shutil.which(name)
        if found:
            return found
    raise ConfigError(
        "--np needs an MPI launcher, but no mpiexec or mpirun was found next to "
        f"{sys.executable} or on PATH; install one with: pip install mpich"
    )


def without_np(argv: list[str]) -> list[str]:
    """argv with `--np N` / `--np=N` removed (the relaunched processes must not relaunch)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--np":
            skip = True
        elif not arg.startswith("--np="):
            out.append(arg)
    return out


def relaunch_command(n: int, argv: list[str]) -> list[str]:
    return [find_mpiexec(), "-n", str(n), sys.executable, "-m", "scaletrain", *without_np(argv)]


def relaunch(n: int, argv: list[str], forward: Sequence[signal.Signals] = ()) -> int:
    """Run `scaletrain <argv>` on n processes under mpiexec; returns its exit code. The
    `forward` signals sent to this process go on to mpiexec, which passes them to its
    processes (Ctrl-C reaches mpiexec from the terminal itself)."""
    process = subprocess.Popen(relaunch_command(n, argv))
    previous = {
        s: signal.signal(s, lambda signum, _: process.send_signal(signum))
        for s in forward
        if s != signal.SIGINT
    }
    try:
        return process.wait()
    except KeyboardInterrupt:  # mpiexec got the same signal and stops its processes
        return 130
    finally:
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
