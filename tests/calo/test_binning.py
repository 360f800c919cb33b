"""Energy bins: automatic for fixed and flat energies, or from edges."""

from __future__ import annotations

import numpy as np
import pytest

from scaletrain.calo.binning import auto_bins, bins_from_edges, resolve_bins
from scaletrain.errors import DataError


def test_fixed_energies_get_one_bin_each():
    energies = np.repeat([10.0, 50.0, 100.0, 200.0, 300.0, 400.0, 500.0], 3)
    bins = auto_bins(energies)
    assert [b.label for b in bins] == [f"{e:g} GeV" for e in (10, 50, 100, 200, 300, 400, 500)]
    assert all(b.mask(energies).sum() == 3 for b in bins)


def test_flat_energies_get_the_default_edges():
    energies = np.random.default_rng(0).uniform(2, 500, 1000)
    bins = auto_bins(energies)
    assert [(b.lo, b.hi) for b in bins][:2] == [(2.0, 10.0), (10.0, 50.0)]
    assert bins[-1].hi == 500.0
    assert sum(b.mask(energies).sum() for b in bins) == 1000


def test_last_edge_is_inclusive():
    bins = bins_from_edges([10, 100, 500])
    assert bins[-1].mask(np.array([500.0]))[0] and not bins[0].mask(np.array([100.0]))[0]


@pytest.mark.parametrize("edges", [[10], [10, 10], [100, 50]])
def test_bad_edges_raise_data_error(edges):
    with pytest.raises(DataError, match="increasing"):
        resolve_bins(edges, np.ones(3))
