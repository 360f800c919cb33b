"""Fault-injection helpers: MPI jobs in their own process group, the pid of each rank (from
/proc), bounded waits, and the exit codes that mpiexec -print-all-exitcodes reports."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from scaletrain.parallel.launch import find_mpiexec


def clean_env() -> dict[str, str]:
    """The environment without an enclosing launcher's variables, one thread per process."""
    skip = ("PMI_", "PMIX_", "OMPI_", "MPI_LOCAL", "HYDRA_", "SLURM_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(skip)}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@dataclass
class Job:
    """`mpiexec -n N python -m scaletrain ...` in a new session (killpg ends all of it)."""

    proc: subprocess.Popen
    out: Path
    err: Path

    @property
    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL to the launcher and every rank (the whole process group)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def wait(self, timeout: float) -> int:
        """The launcher's exit code; a job still running after `timeout` s is killed and the
        test fails (a hang must never block the suite)."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"the job did not end within {timeout} s; stderr:\n{self.stderr[-3000:]}"
            ) from None

    def ranks(self, n: int, timeout: float = 60) -> dict[int, int]:
        """{rank: pid} of the n processes of this job, once they have all started."""
        pids = wait_until(lambda: _rank_pids(self.proc.pid, n), timeout, "ranks to start")
        return pids


def launch(tmp: Path, n: int, args: list[str], *, name: str = "job") -> Job:
    """Start `scaletrain args` on n processes, output in tmp/name.out and .err. (mpiexec ends
    the job when a process dies, even with -disable-auto-cleanup: docs/reliability.md.)"""
    command = [find_mpiexec(), "-print-all-exitcodes", "-n", str(n), sys.executable, "-m",
               "scaletrain", *args]  # fmt: skip
    out, err = tmp / f"{name}.out", tmp / f"{name}.err"
    with open(out, "w") as fo, open(err, "w") as fe:
        proc = subprocess.Popen(
            command, stdout=fo, stderr=fe, env=clean_env(), start_new_session=True
        )
    return Job(proc, out, err)


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def gone(pid: int) -> bool:
    """Whether the process has ended (a zombie counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True
    return state in ("Z", "X")


def exit_times(pids: dict[int, int], since: float, timeout: float) -> dict[int, float]:
    """Seconds after `since` (time.monotonic) at which each process ended; ranks still
    running after `timeout` s are left out."""
    out: dict[int, float] = {}
    deadline = since + timeout
    while len(out) < len(pids) and time.monotonic() < deadline:
        for rank, pid in pids.items():
            if rank not in out and gone(pid):
                out[rank] = time.monotonic() - since
        time.sleep(0.02)
    return out


def exit_codes(output: str) -> list[int]:
    """Per-rank exit codes from mpiexec -print-all-exitcodes ("Exit codes: [host] 768,0,9":
    wait statuses), as subprocess reports them: the code, or -N when killed by signal N.
    Hydra reports 0 for some of the processes that it stops itself."""
    match = re.search(r"Exit codes: \[[^\]]*\] ([\d,]+)", output)
    assert match, f"no exit codes in mpiexec's output:\n{output[-2000:]}"
    statuses = [int(c) for c in match.group(1).split(",")]
    return [-(s & 0x7F) if s & 0x7F else s >> 8 for s in statuses]


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _rank_pids(root: int, n: int) -> dict[int, int] | None:
    """Descendants of `root` whose environment has the launcher's PMI_RANK."""
    found: dict[int, int] = {}
    todo = [root]
    while todo:
        for child in _children(todo.pop()):
            todo.append(child)
            try:
                env = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
                python = b"python" in Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            rank = next((e[9:] for e in env if e.startswith(b"PMI_RANK=")), None)
            if rank is not None and python:
                found[int(rank)] = child
    return found if len(found) == n else None
