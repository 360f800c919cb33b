"""Run directories: created fresh, resumed, or explicitly overwritten; never clobbered."""

from __future__ import annotations

import shutil
from pathlib import Path

from scaletrain.errors import RunDirError


def prepare_run_dir(path: str | Path, *, resume: bool = False, overwrite: bool = False) -> Path:
    path = Path(path)
    if resume and overwrite:
        raise RunDirError("--resume and --overwrite exclude each other")
    if path.exists() and not path.is_dir():
        raise RunDirError(f"run directory {path} exists and is not a directory")
    used = path.exists() and any(path.iterdir())
    if resume:
        if not used:
            raise RunDirError(f"nothing to resume in {path}: it does not exist or is empty")
        return path
    if used:
        if not overwrite:
            raise RunDirError(
                f"run directory {path} already holds a run; use --resume to continue it or "
                "--overwrite to replace it"
            )
        shutil.rmtree(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise RunDirError(f"cannot write to run directory {path}: {exc.strerror}") from None
    return path
