"""Bring-your-own-model tests: the user's code is `byom_user.py` next to these tests.

Keras is imported with the torch backend (set here, before anything imports keras).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("KERAS_BACKEND", "torch")

HERE = Path(__file__).parent


@pytest.fixture
def write_config(tmp_path):
    """Write a run config: a small classifier of the user's blobs, with `extra` merged in."""

    def make(extra: dict | None = None, name: str = "config.yaml") -> Path:
        cfg = {
            "run": {"dir": str(tmp_path / "run"), "device": "cpu", "threads": 1},
            "data": {"source": "byom_user:blobs", "args": {"n": 480}, "val_fraction": 0.25},
            "task": "supervised",
            "model": {"name": "byom_user:torch_mlp", "args": {"hidden": 16}},
            "supervised": {"target": "label"},
            "optim": {"name": "adam", "lr": 0.01},
            "train": {
                "epochs": 3,
                "batch_size": 32,
                "progress": False,
                "log_every": 5,
                "best_metric": "val/accuracy",
                "best_mode": "max",
            },
        }
        for section, values in (extra or {}).items():
            if isinstance(values, dict) and isinstance(cfg.get(section), dict):
                cfg[section] = {**cfg[section], **values}
            else:
                cfg[section] = values
        path = tmp_path / name
        path.write_text(yaml.safe_dump(cfg))
        return path

    return make


@pytest.fixture
def user_env() -> dict[str, str]:
    """Environment of subprocesses: the user's module importable, no enclosing launcher."""
    skip = ("PMI_", "PMIX_", "OMPI_", "MPI_LOCAL", "HYDRA_", "SLURM_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(skip)}
    path = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH")) if p)
    return {**env, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
