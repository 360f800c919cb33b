"""Fixtures of the HPO tests: a tiny classification data set and a search config on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml


@pytest.fixture(scope="session")
def xor_dir(tmp_path_factory) -> Path:
    """600 tiny 4×4×2 "showers" whose class (pdg 11 / 211) is an XOR of two hidden factors."""
    from scaletrain.data.io import write_showers

    out = tmp_path_factory.mktemp("xor")
    rng = np.random.default_rng(0)
    n, d = 600, 32
    basis = np.linalg.qr(rng.normal(size=(d, 2)))[0].T
    factors = rng.integers(0, 2, size=(n, 2))
    x = (2.0 * factors - 1.0) @ basis + 0.6 * rng.normal(size=(n, d))
    pdg = np.array([11, 211])[factors[:, 0] ^ factors[:, 1]]
    for i, rows in enumerate(np.array_split(np.arange(n), 2)):
        write_showers(
            out / f"xor_{i}.h5",
            {"ECAL": x[rows].astype(np.float32).reshape(-1, 4, 4, 2),
             "energy": np.full(len(rows), 100.0, np.float32), "pdg": pdg[rows]},
        )  # fmt: skip
    return out


@pytest.fixture
def search_config(xor_dir, tmp_path):
    """Write a search config (an MLP on the XOR data) with `extra` merged in; returns its path."""

    def make(extra: dict | None = None, name: str = "study.yaml") -> Path:
        cfg = {
            "run": {"dir": str(tmp_path / "study"), "device": "cpu", "threads": 1},
            "data": {"path": str(xor_dir), "val_fraction": 0.25},
            "task": "supervised",
            "model": {"name": "mlp", "args": {"in_features": 32, "hidden": [16]}},
            "supervised": {"target": "pdg"},
            "optim": {"name": "sgd", "lr": 0.01, "momentum": 0.9},
            "train": {"epochs": 2, "batch_size": 32, "progress": False, "log_every": 50},
            "search": {
                "params": {
                    "optim.lr": {"type": "float", "low": 1e-3, "high": 0.3, "log": True},
                    "optim.name": {"type": "categorical", "choices": ["sgd", "adam"]},
                },
                "objective": "val/loss",
                "trials": 3,
                "sampler": "random",
            },
        }
        for section, values in (extra or {}).items():
            if isinstance(values, dict) and isinstance(cfg.get(section), dict):
                cfg[section] = {**cfg[section], **values}
            else:
                cfg[section] = values
        path = tmp_path / name
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path

    return make
