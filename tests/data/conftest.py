"""Fixtures: tiny shower files made on the fly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scaletrain.data.io import write_showers


def make_indexed_files(directory: Path, sizes: list[int], shape=(2, 2, 2)) -> list[Path]:
    """Files whose `energy` is the global shower index, so tests can track every row."""
    paths, first = [], 0
    for i, n in enumerate(sizes):
        index = np.arange(first, first + n, dtype=np.float32)
        ecal = np.broadcast_to(index[:, None, None, None], (n, *shape)).copy()
        paths.append(write_showers(directory / f"part_{i}.h5", {"ECAL": ecal, "energy": index}))
        first += n
    return paths


@pytest.fixture
def make_files():
    """The make_indexed_files helper, for tests that need their own sizes."""
    return make_indexed_files


@pytest.fixture
def indexed_files(tmp_path: Path) -> list[Path]:
    return make_indexed_files(tmp_path, [700, 450, 333])
