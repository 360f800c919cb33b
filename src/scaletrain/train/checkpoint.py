"""Checkpoints: written atomically, loaded with `weights_only=True`.

A checkpoint is a plain dict of tensors and Python primitives: the resolved config, every
model and optimizer, the RNG states, the epoch and step, and the task's own state.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

import torch

from scaletrain.errors import CheckpointError

FORMAT = "scaletrain-checkpoint-v1"
_STEP_FILE = re.compile(r"^ckpt-step(\d+)\.pt$")


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write `state` to `path` via a temporary file and a rename: never a half-written file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as fh:
            torch.save({"format": FORMAT, **state}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_checkpoint(
    path: str | Path, required: tuple[str, ...] = ("config", "models")
) -> dict[str, Any]:
    """Load and check a checkpoint (with the `required` keys) onto the host; any problem is
    one CheckpointError naming the file. On the host because random streams' states can be
    set only from CPU tensors (a resume on a GPU failed when they were mapped there); models
    and optimizers copy their states to their own devices."""
    path = Path(path)
    if path.is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise CheckpointError(f"{path}: no checkpoint in this directory")
        path = found
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsafe content"
        raise CheckpointError(
            f"{path}: refused to load (only tensors and plain data are allowed: {first[:160]})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: not a readable checkpoint (truncated or corrupt: "
            f"{str(exc).splitlines()[0][:120]})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a scaletrain checkpoint")
    for key in required:
        if key not in state:
            raise CheckpointError(f"{path}: checkpoint lacks {key!r}")
    return state


def checkpoint_name(step: int) -> str:
    return f"ckpt-step{step:08d}.pt"


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoints in a directory, oldest first (temporary files of a killed write excluded)."""
    directory = Path(directory)
    found = [
        (int(m.group(1)), p)
        for p in directory.glob("ckpt-step*.pt")
        if (m := _STEP_FILE.search(p.name))
    ]
    return [p for _, p in sorted(found)]


def latest_checkpoint(directory: str | Path) -> Path | None:
    found = list_checkpoints(directory)
    return found[-1] if found else None


def keep_last(directory: str | Path, k: int) -> None:
    for old in list_checkpoints(directory)[:-k]:
        old.unlink(missing_ok=True)


def publish_copy(source: Path, target: Path) -> None:
    """Make `target` (e.g. best.pt) a copy of `source`, atomically."""
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)  # cheap when the file system allows hard links
    except OSError:
        shutil.copy2(source, tmp)
    os.replace(tmp, target)


def model_states(state: dict[str, Any], names: list[str], path: str | Path) -> dict[str, Any]:
    """The model states a caller needs, with an error if the checkpoint is another model's."""
    missing = [n for n in names if n not in state["models"]]
    if missing:
        raise CheckpointError(
            f"{path}: checkpoint has models {', '.join(state['models'])}, not {', '.join(missing)}"
        )
    return {n: state["models"][n] for n in names}
