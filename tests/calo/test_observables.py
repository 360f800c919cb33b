"""Observables of hand-made and simulated showers."""

from __future__ import annotations

import numpy as np
import pytest

from scaletrain.calo import compute_observables
from scaletrain.calo.observables import CELL_BINS, cell_bin_edges
from scaletrain.data.simulator import simulate_showers
from scaletrain.errors import DataError


def one_cell(x: int, y: int, z: int, e: float = 2.0) -> np.ndarray:
    img = np.zeros((25, 25, 25), np.float32)
    img[x, y, z] = e
    return img


def test_moments_of_two_cells_are_their_centre_and_half_distance():
    img = one_cell(10, 12, 3) + one_cell(14, 12, 3)
    obs = compute_observables({"ECAL": img[None], "energy": np.array([100.0])})
    s = {k: float(v[0]) for k, v in obs.scalars.items()}
    assert s["esum"] == pytest.approx(4.0)
    assert s["sf"] == pytest.approx(0.04)
    assert (s["mean_x"], s["mean_y"], s["mean_z"]) == pytest.approx((12.0, 12.0, 3.0))
    assert (s["width_x"], s["width_y"], s["width_z"]) == pytest.approx((2.0, 0.0, 0.0), abs=1e-6)
    assert obs.long[0, 3] == pytest.approx(4.0)
    assert obs.prof_x[0, 10] == pytest.approx(2.0) and obs.prof_y[0, 12] == pytest.approx(4.0)


def test_hits_count_cells_above_threshold_and_fill_the_spectrum():
    img = one_cell(0, 0, 0, 5e-5) + one_cell(1, 1, 1, 2e-4) + one_cell(2, 2, 2, 0.3)
    obs = compute_observables({"ECAL": img[None], "energy": np.array([10.0])}, threshold=1e-4)
    assert obs.scalars["hits"][0] == 2
    edges = cell_bin_edges()
    assert obs.cell_hist.shape == (1, CELL_BINS) and obs.cell_hist.sum() == 2
    assert obs.cell_hist[0, np.searchsorted(edges, 0.3) - 1] == 1


def test_an_empty_shower_has_no_hits_and_undefined_moments():
    obs = compute_observables({"ECAL": np.zeros((1, 25, 25, 25)), "energy": np.array([50.0])})
    assert obs.scalars["hits"][0] == 0 and obs.scalars["sf"][0] == 0
    assert np.isnan(obs.scalars["mean_z"][0]) and np.isnan(obs.scalars["width_x"][0])


def test_direction_follows_the_shower_angle():
    theta = (np.radians(60), np.radians(120))
    showers = simulate_showers(60, 100.0, theta=theta, seed=5)
    obs = compute_observables(showers)
    tilt = np.abs(showers["theta"] - np.pi / 2)
    assert np.corrcoef(obs.scalars["direction"], tilt)[0, 1] > 0.95


@pytest.mark.parametrize(
    ("showers", "message"),
    [
        ({"energy": np.ones(2)}, "no 'ECAL'"),
        ({"ECAL": np.zeros((2, 25, 25)), "energy": np.ones(2)}, "shape"),
        ({"ECAL": np.zeros((2, 25, 25, 25)), "energy": np.ones(3)}, "2 showers"),
        ({"ECAL": np.zeros((1, 25, 25, 25)), "energy": np.zeros(1)}, "positive"),
    ],
)
def test_bad_showers_raise_data_error(showers, message):
    with pytest.raises(DataError, match=message):
        compute_observables(showers)
