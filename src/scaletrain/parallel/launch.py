"""`--np N`: re-execute this very command under `mpiexec -n N` and hand back its exit code.

`SCALETRAIN_MPIEXEC` names the launcher; else the mpiexec next to the Python interpreter
comes first (the `mpich` wheel installs one in the virtual environment, matching the MPI
library that mpi4py loads), then the one on PATH.

Stop signals go to the processes themselves, not through mpiexec: Open MPI's mpirun answers
SIGTERM by killing its processes within seconds, before a slow step can end with a
checkpoint. So mpiexec runs in a session of its own, out of reach of signals sent to this
process's group (`timeout`, Ctrl-C), and each process on this host registers its pid in a
directory this process made (`register_with_launcher`).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from scaletrain.errors import ConfigError

MPIEXEC_ENV = "SCALETRAIN_MPIEXEC"
PIDS_ENV = "SCALETRAIN_LAUNCHER_PIDS"  # the directory where a relaunched process registers


def find_mpiexec() -> str:
    """Path of an MPI launcher: $SCALETRAIN_MPIEXEC, next to sys.executable, else mpiexec /
    mpirun on PATH."""
    chosen = os.environ.get(MPIEXEC_ENV)
    if chosen:
        found = shutil.which(chosen)
        if not found:
            raise ConfigError(f"{MPIEXEC_ENV}={chosen}: no such executable")
        return found
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


def register_with_launcher() -> None:
    """Tell a `--np` launcher on this host this process's pid, for its stop signals."""
    pids = os.environ.get(PIDS_ENV)
    if pids and Path(pids).is_dir():  # not there: started on another host
        (Path(pids) / f"{socket.gethostname()}-{os.getpid()}").touch()


def registered(pids: Path) -> list[int]:
    host = f"{socket.gethostname()}-"
    return [int(p.name.removeprefix(host)) for p in pids.glob(f"{host}*")]


def _term_on_parent_exit() -> Callable[[], None] | None:
    """For the child before exec (Linux): SIGTERM when this launcher dies, even by SIGKILL,
    so that mpiexec in its own session does not outlive it."""
    try:  # looked up here: the child may only call it
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (AttributeError, OSError):
        return None
    return lambda: prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


def child_env(pids: Path, terminal: bool) -> dict[str, str]:
    env = {**os.environ, PIDS_ENV: str(pids)}
    if not terminal:  # Open MPI gives its processes terminals of their own: without this
        env["TERM"] = "dumb"  # they would write colours and progress bars into log files
    return env


def relaunch(n: int, argv: list[str], forward: Sequence[signal.Signals] = ()) -> int:
    """Run `scaletrain <argv>` on n processes under mpiexec; returns its exit code. The
    `forward` signals sent to this process go on to the processes registered on this host
    (one is enough: it tells the others), or to mpiexec while none has registered yet.
    Ctrl-C otherwise stops mpiexec."""
    pids = Path(tempfile.mkdtemp(prefix="scaletrain-np-"))
    process = subprocess.Popen(
        relaunch_command(n, argv),
        env=child_env(pids, terminal=sys.stdout.isatty()),
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_term_on_parent_exit() if sys.platform == "linux" else None,
    )

    def pass_on(signum: int, _frame: object) -> None:
        ranks = registered(pids)
        if not ranks:  # still starting: nothing to save
            process.send_signal(signum)
        for pid in ranks:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    previous = {s: signal.signal(s, pass_on) for s in forward}
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.send_signal(signal.SIGINT)
        process.wait()
        return 130
    finally:
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
        if process.poll() is None:  # this process is failing: take its job down with it
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        shutil.rmtree(pids, ignore_errors=True)
