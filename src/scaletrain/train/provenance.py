"""Provenance: what produced a run (versions, commit, seeds, data checksums, hardware)."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

import scaletrain

# whole-file hashes of very large files would dominate start-up time
_FULL_HASH_LIMIT = 256 * 1024 * 1024
_PARTIAL_BYTES = 4 * 1024 * 1024


def environment_info(probe: bool = True) -> dict[str, Any]:
    """Versions, devices, MPI. `probe`: start CUDA and MPI to name the GPU and the MPI library
    (`scaletrain info`); without it only what this process already started is named, so
    that a CPU run creates no CUDA context (GPU memory, seconds, on a machine with GPUs) and
    one process does not initialise MPI."""
    info: dict[str, Any] = {
        "scaletrain": scaletrain.__version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "none",
        "cuda devices": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu cores": os.cpu_count(),
        "torch threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available() and (probe or torch.cuda.is_initialized()):
        info["gpu"] = torch.cuda.get_device_name()
    info["mpi"] = _mpi_library(probe)
    commit = git_commit()
    if commit:
        info["git commit"] = commit
    return info


def _mpi_library(probe: bool) -> str:
    if not probe and "mpi4py.MPI" not in sys.modules:  # importing it initialises MPI
        return "not started (one process)"
    try:
        from mpi4py import MPI

        return MPI.Get_library_version().splitlines()[0].strip()
    except Exception as exc:  # MPI is optional for one process
        return f"unavailable ({type(exc).__name__})"


def git_commit() -> str | None:
    """The commit of the scaletrain source tree, when it runs from a git checkout."""
    source = Path(scaletrain.__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def file_checksum(path: Path) -> str:
    """sha256 of the file, or of its size, head and tail for files above 256 MiB."""
    size = path.stat().st_size
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        if size <= _FULL_HASH_LIMIT:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
            return "sha256:" + digest.hexdigest()
        digest.update(str(size).encode())
        digest.update(fh.read(_PARTIAL_BYTES))
        fh.seek(size - _PARTIAL_BYTES)
        digest.update(fh.read(_PARTIAL_BYTES))
    return "sha256-head-tail:" + digest.hexdigest()


def write_provenance(
    run_dir: Path,
    config_digest: str,
    seed: int,
    data_files: list[Path],
    world: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> Path:
    record = {
        "environment": environment_info(probe=False),
        "config_digest": config_digest,
        "seed": seed,
        "world": world,
        "data": {str(p): file_checksum(p) for p in data_files},
        "command": sys.argv,
        **(extra or {}),
    }
    path = run_dir / "provenance.json"
    tmp = path.with_name(".provenance.json.tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str))
    os.replace(tmp, path)
    return path
