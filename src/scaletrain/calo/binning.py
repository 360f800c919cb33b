"""Primary-energy bins: explicit edges, or chosen automatically from the data's energies."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from scaletrain.errors import DataError

#: Default edges (GeV) for data flat in 2-500 GeV: finer where the response changes fastest.
DEFAULT_FLAT_EDGES = (2.0, 10.0, 50.0, 100.0, 200.0, 300.0, 400.0, 500.0)

#: Data with at most this many distinct primary energies are treated as fixed-energy samples
#: (the 3DGAN validation sets use 10, 50, 100, 200, 300, 400, 500 GeV): one bin per energy.
MAX_DISCRETE_ENERGIES = 16


@dataclass(frozen=True)
class EnergyBin:
    """Showers with lo <= Ep < hi (the last bin of a list also takes Ep == hi)."""

    lo: float
    hi: float
    closed: bool = False
    #: the single energy of a fixed-energy bin, which then names it
    fixed: float | None = None

    @property
    def label(self) -> str:
        if self.fixed is not None:
            return f"{self.fixed:g} GeV"
        return f"{self.lo:g}-{self.hi:g} GeV"

    def mask(self, energy: np.ndarray) -> np.ndarray:
        upper = energy <= self.hi if self.closed else energy < self.hi
        return (energy >= self.lo) & upper


def bins_from_edges(edges) -> list[EnergyBin]:
    """Bins between consecutive edges; the last one is closed on the right."""
    e = [float(x) for x in edges]
    if len(e) < 2 or any(b <= a for a, b in itertools.pairwise(e)):
        raise DataError(f"energy-bin edges must be at least two increasing numbers, got {e}")
    last = len(e) - 2
    return [EnergyBin(a, b, closed=i == last) for i, (a, b) in enumerate(itertools.pairwise(e))]


def auto_bins(energy: np.ndarray) -> list[EnergyBin]:
    """One bin per energy for fixed-energy data, else the default flat-spectrum edges.

    Fixed energies get edges at the geometric midpoints between neighbours, so each bin
    holds exactly one of them; default edges outside the data's range are dropped.
    """
    energy = np.asarray(energy, dtype=np.float64)
    distinct = np.unique(np.round(energy, 3))
    if len(distinct) <= MAX_DISCRETE_ENERGIES:
        mids = np.sqrt(distinct[:-1] * distinct[1:])
        edges = [distinct[0] * 0.99, *mids, distinct[-1] * 1.01]
        return [
            EnergyBin(float(a), float(b), closed=b == edges[-1], fixed=float(e))
            for a, b, e in zip(edges[:-1], edges[1:], distinct, strict=True)
        ]
    lo, hi = float(energy.min()), float(energy.max())
    inner = [x for x in DEFAULT_FLAT_EDGES if lo < x < hi]
    return bins_from_edges(
        [min(lo, DEFAULT_FLAT_EDGES[0]), *inner, max(hi, DEFAULT_FLAT_EDGES[-1])]
    )


def resolve_bins(energy_bins, reference_energy: np.ndarray) -> list[EnergyBin]:
    """Bins from user edges (sequence) or automatic ones (None)."""
    if energy_bins is None:
        return auto_bins(reference_energy)
    if energy_bins and isinstance(energy_bins[0], EnergyBin):
        return list(energy_bins)
    return bins_from_edges(energy_bins)


def quantile_edges(energy, showers_per_bin: int = 200, max_bins: int = 6) -> list[float]:
    """Energy-bin edges with enough showers in each bin for stable scores (used for the
    fidelity of small samples: during training, in benchmarks)."""
    n_bins = int(np.clip(len(energy) // showers_per_bin, 1, max_bins))
    edges = np.unique(np.quantile(energy, np.linspace(0, 1, n_bins + 1)))
    if len(edges) < 2:  # a single primary energy
        return [float(edges[0]) - 1.0, float(edges[0]) + 1.0]
    return [float(e) for e in edges]
