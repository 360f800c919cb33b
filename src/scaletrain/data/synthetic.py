"""A small synthetic classification data set in the shower file layout, for fast tests.

Each sample is a tiny "image" (default 4×4×2 cells) whose class (stored as pdg 11 or 211)
is the parity of two hidden binary factors (an XOR, so a linear model cannot separate it),
plus Gaussian noise; the best achievable accuracy is about 95 %. Files are ordinary shower
files (ECAL, energy, pdg), so `ShowerData`, the supervised task (target: pdg) and every CLI
command read them unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from scaletrain.data.io import write_showers

CLASSES = (11, 211)


def make_classification(
    n: int, *, shape: tuple[int, int, int] = (4, 4, 2), noise: float = 0.6, seed: int = 0
) -> dict[str, np.ndarray]:
    """Arrays {ECAL (n, *shape), energy (n,), pdg (n,)} of the XOR-of-factors problem."""
    rng = np.random.default_rng(seed)
    d = int(np.prod(shape))
    basis = np.linalg.qr(np.random.default_rng(1234).normal(size=(d, 2)))[0].T  # 2 directions
    factors = rng.integers(0, 2, size=(n, 2))
    label = factors[:, 0] ^ factors[:, 1]
    x = (2.0 * factors - 1.0) @ basis + noise * rng.normal(size=(n, d))
    return {
        "ECAL": x.astype(np.float32).reshape(n, *shape),
        "energy": np.full(n, 100.0, dtype=np.float32),
        "pdg": np.asarray(CLASSES, dtype=np.int64)[label],
    }


def write_classification(
    out_dir: str | os.PathLike, n: int, *, shards: int = 1, seed: int = 0, **kw
) -> Path:
    """Write `n` samples as `shards` files into out_dir; returns the directory."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = make_classification(n, seed=seed, **kw)
    for i, rows in enumerate(np.array_split(np.arange(n), shards)):
        write_showers(out / f"synthetic_{i:03d}.h5", {k: v[rows] for k, v in data.items()})
    return out
