"""Multi-process test helpers: mpiexec from the interpreter's directory, bounded runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from scaletrain.parallel.launch import find_mpiexec

DRIVER = Path(__file__).with_name("_driver.py")


def clean_env() -> dict[str, str]:
    """The environment without an enclosing launcher's variables, one thread per process."""
    skip = ("PMI_", "PMIX_", "OMPI_", "MPI_LOCAL", "HYDRA_", "SLURM_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(skip)}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def scaletrain(args: list[str], timeout: float = 200) -> subprocess.CompletedProcess:
    """`python -m scaletrain args...` (which may launch MPI itself, e.g. --np), bounded."""
    command = [sys.executable, "-m", "scaletrain", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=clean_env())


def metric_values(run_dir: Path, key: str) -> list:
    """Every value of `key` in a run's metrics.jsonl, in the order logged."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r[key] for r in rows if key in r]


def mpirun(n: int, args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    """`mpiexec -n n python args...`, killed after `timeout` seconds."""
    command = [find_mpiexec(), "-n", str(n), sys.executable, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=clean_env())


def run_driver(n: int, runs: list[dict], tmp_path: Path, timeout: float = 150):
    """Several trainings in one MPI job of n processes (see _driver.py); returns
    (results of rank 0, per-rank weight checksums, the finished process)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    spec, out = tmp_path / "spec.json", tmp_path / "out.json"
    spec.write_text(json.dumps({"runs": runs}))
    proc = mpirun(n, [str(DRIVER), str(spec), str(out)], timeout=timeout)
    results = json.loads(out.read_text()) if out.exists() else {}
    ranks = [tmp_path / f"out.json.rank{r}.json" for r in range(n)]
    checksums = [json.loads(p.read_text()) if p.exists() else {} for p in ranks]
    return results, checksums, proc
