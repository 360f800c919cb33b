"""Shower samples for the validation tests, made on the fly with the project's simulator."""

from __future__ import annotations

import numpy as np
import pytest

from scaletrain.data.io import write_showers
from scaletrain.data.simulator import simulate_showers

#: Fixed primary energies of the test samples (GeV): one low, one middle, one high.
ENERGIES = (20.0, 100.0, 300.0)
#: Showers per sample: enough for the held-out AUC to sit within 0.5 +- 0.03 (its standard
#: deviation is about 1/sqrt(6 n) = 0.0075 for n = 3000 showers per class).
N_SHOWERS = 3000


def showers_at(n: int, energies=ENERGIES, *, seed: int) -> dict:
    """n showers cycling through fixed energies."""
    e = np.asarray(energies, dtype=np.float64)[np.arange(n) % len(energies)]
    return simulate_showers(n, e, seed=seed)


@pytest.fixture(scope="session")
def reference() -> dict:
    return showers_at(N_SHOWERS, seed=1)


@pytest.fixture(scope="session")
def independent() -> dict:
    """Another sample of the same simulator (another seed): what a perfect generator gives."""
    return showers_at(N_SHOWERS, seed=2)


@pytest.fixture(scope="session")
def small_pair() -> tuple[dict, dict]:
    """Small generated/reference pair for report and CLI tests."""
    return showers_at(400, (50.0, 200.0), seed=3), showers_at(400, (50.0, 200.0), seed=4)


@pytest.fixture(scope="session")
def small_files(tmp_path_factory, small_pair) -> tuple:
    """The small pair written as HDF5 files."""
    d = tmp_path_factory.mktemp("showers")
    gen, ref = small_pair
    return write_showers(d / "gen.h5", gen), write_showers(d / "ref.h5", ref)
