"""Shower samples for the validation tests, made on the fly."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special

#: Fixed primary energies of the test samples (GeV): one low, one middle, one high.
ENERGIES = (20.0, 100.0, 300.0)
#: Showers per sample: enough for the held-out AUC to sit within 0.5 +- 0.03 (its standard
#: deviation is about 1/sqrt(6 n) for n showers per class).
N_SHOWERS = 3000


def toy_showers(n: int, energies=ENERGIES, *, seed: int = 0) -> dict:
    """Plausible showers: gamma longitudinal profile, Gaussian transverse profile widening
    with depth, spot (Poisson) fluctuations and a 0.1 MeV readout threshold."""
    rng = np.random.default_rng(seed)
    energy = np.asarray(energies, dtype=np.float64)[np.arange(n) % len(energies)]
    rng.shuffle(energy)
    y = energy / 8e-3  # E / Ec for tungsten
    ln_t = np.log(np.log(y) - 0.812) + rng.normal(0, 0.12, n)
    ln_a = np.log(0.81 + (0.458 + 2.26 / 74) * np.log(y)) + rng.normal(0, 0.08, n)
    alpha = np.exp(ln_a)
    beta = (alpha - 1) / np.exp(ln_t)
    edges = np.arange(26, dtype=np.float64)
    long = np.diff(special.gammainc(alpha[:, None], beta[:, None] * edges[None, :]), axis=1)
    sigma = 0.5 + 0.06 * np.arange(25)  # transverse width (cells) per layer
    cell_edges = np.arange(26) - 12.5
    trans = np.diff(special.ndtr(cell_edges[None, :] / sigma[:, None]), axis=1)  # (z, x)
    sf = 0.02 * (1 + rng.normal(0, 0.17, n) / np.sqrt(energy))
    ecal = np.empty((n, 25, 25, 25), dtype=np.float32)
    for i in range(0, n, 256):
        sl = slice(i, i + 256)
        deposit = (energy[sl] * sf[sl])[:, None] * long[sl]  # (m, z)
        mu = np.einsum("mz,zx,zy->mxyz", deposit, trans, trans)
        spot = (energy[sl] * 0.02 / (400 * energy[sl] ** 0.876))[:, None, None, None]
        cells = rng.poisson(mu / spot) * spot
        cells[cells < 1e-4] = 0.0
        ecal[sl] = cells
    return {
        "ECAL": ecal,
        "energy": energy.astype(np.float32),
        "theta": np.full(n, np.pi / 2, dtype=np.float32),
        "pdg": np.full(n, 11, dtype=np.int32),
    }


@pytest.fixture(scope="session")
def reference() -> dict:
    return toy_showers(N_SHOWERS, seed=1)


@pytest.fixture(scope="session")
def independent() -> dict:
    """Another sample of the same distribution (another seed)."""
    return toy_showers(N_SHOWERS, seed=2)


@pytest.fixture(scope="session")
def small_pair() -> tuple[dict, dict]:
    """Small generated/reference pair for report and CLI tests."""
    return toy_showers(300, (50.0, 200.0), seed=3), toy_showers(300, (50.0, 200.0), seed=4)
