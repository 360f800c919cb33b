"""The simulator against its parametrization (calo-physics.md), and its determinism."""

from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy.special import gammainc

from scaletrain.data import _gflash
from scaletrain.data.simulator import Geometry, SimConfig, simulate_showers, simulate_to_files
from scaletrain.errors import ConfigError, RunDirError

LAYER_CENTRES = np.arange(25) + 0.5
# every shower contained, no noise and no threshold: sums measure the sampling alone
CONTAINED = SimConfig(geometry=Geometry(cell_mm=20.0, n_z=40), noise_gev=0, threshold_gev=0)


def _z_barycentre(ecal: np.ndarray) -> np.ndarray:
    per_layer = ecal.sum(axis=(1, 2))
    return (per_layer * LAYER_CENTRES).sum(1) / per_layer.sum(1)


def test_output_layout_and_energy_specs() -> None:
    out = simulate_showers(6, (10.0, 20.0), theta=(1.2, 1.9), particle="gamma", seed=1)
    assert out["ECAL"].shape == (6, 25, 25, 25) and out["ECAL"].dtype == np.float32
    assert out["energy"].dtype == np.float32 and out["theta"].dtype == np.float32
    assert out["pdg"].dtype == np.int32 and set(out["pdg"]) == {22}
    assert np.all((out["energy"] >= 10) & (out["energy"] <= 20))
    assert np.all((out["theta"] >= 1.2) & (out["theta"] <= 1.9))
    fixed = simulate_showers(3, [5.0, 6.0, 7.0])
    np.testing.assert_array_equal(fixed["energy"], [5, 6, 7])
    np.testing.assert_allclose(fixed["theta"], np.pi / 2)
    with pytest.raises(ConfigError):
        simulate_showers(3, [1.0, 2.0])
    with pytest.raises(ConfigError, match="particle"):
        simulate_showers(1, 10.0, particle="muon")


def test_mean_longitudinal_profile_follows_the_gamma_profile() -> None:
    ecal = simulate_showers(200, 100.0, seed=1)["ECAL"]
    measured = ecal.sum(axis=(0, 1, 2))
    measured /= measured.sum()
    t_max, alpha = _gflash.mean_profile_parameters(np.array([100.0]), 74.0, 0.008)
    cdf = gammainc(alpha, (alpha - 1) / t_max * np.arange(26.0))
    analytic = np.diff(cdf) / (cdf[-1] - cdf[0])
    # Layer fractions peak at 0.094. Spot statistics (200 × 5,200 spots) give ~3e-4 per layer;
    # averaging over the ln T, ln α fluctuations instead of using the mean parameters, and the
    # lateral leakage growing with depth, shift layers by up to ~1e-3 (measured 1.2e-3).
    np.testing.assert_allclose(measured, analytic, atol=2.5e-3)


def test_shower_depth_grows_with_log_energy() -> None:
    depth = [_z_barycentre(simulate_showers(40, e, seed=2)["ECAL"]).mean() for e in (10.0, 500.0)]
    # T = ln(E / Ec) − 0.812: about one X0 deeper per e-fold of energy
    slope = (depth[1] - depth[0]) / np.log(50.0)
    assert 0.75 < slope < 1.15


@pytest.mark.parametrize("energy", [10.0, 100.0])
def test_sampling_fraction_and_stochastic_resolution(energy: float) -> None:
    ecal = simulate_showers(300, energy, seed=4, config=CONTAINED)["ECAL"]
    ratio = ecal.sum(axis=(1, 2, 3)) / energy
    # 300 showers: the mean is known to 0.17/√(E·300) ≤ 0.6 %, the width to 4 %
    assert ratio.mean() == pytest.approx(CONTAINED.sampling_fraction_at(energy), rel=0.015)
    assert ratio.std() / ratio.mean() == pytest.approx(0.17 / np.sqrt(energy), rel=0.15)


def test_sampling_fraction_depends_mildly_on_energy() -> None:
    f = SimConfig().sampling_fraction_at(np.array([2.0, 100.0, 500.0]))
    assert f[1] == pytest.approx(0.02) and 0.0195 < f[2] < f[1] < f[0] < 0.021


def test_energy_is_radially_contained_and_widens_with_depth() -> None:
    ecal = simulate_showers(100, 100.0, seed=5)["ECAL"].astype(np.float64)
    core = ecal[:, 10:15, 10:15, :].sum() / ecal.sum()  # ±2 cells = ±1.4 Molière radii
    assert core > 0.88
    offsets = (np.arange(25) - 12) ** 2

    def rms_x(layer: int) -> float:
        profile = ecal[:, :, :, layer].sum(axis=(0, 2))
        return float(np.sqrt((profile * offsets).sum() / profile.sum()))

    assert rms_x(4) < rms_x(10) < rms_x(18)


def test_photons_start_deeper_than_electrons() -> None:
    photons = _z_barycentre(simulate_showers(150, 50.0, particle="gamma", seed=6)["ECAL"])
    electrons = _z_barycentre(simulate_showers(150, 50.0, seed=6)["ECAL"])
    # mean conversion depth 9/7 X0; the barycentre scatters by ~1 X0 per shower
    assert photons.mean() - electrons.mean() == pytest.approx(9 / 7, abs=0.45)


def test_incidence_angle_tilts_the_shower_in_x_versus_z() -> None:
    def x_barycentre(theta: float) -> float:
        ecal = simulate_showers(30, 50.0, theta=theta, seed=7)["ECAL"]
        return float((ecal.sum(axis=(0, 2, 3)) * (np.arange(25) - 12)).sum() / ecal.sum())

    forward, straight, backward = (x_barycentre(np.radians(d)) for d in (60, 90, 120))
    # barycentre depth ~9 layers of 3.5 mm: x moves by 9·3.5·cot 60° = 18 mm ≈ 3.6 cells
    assert 2.5 < forward < 4.5 and abs(straight) < 0.3 and -4.5 < backward < -2.5


def test_threshold_makes_low_energy_images_sparse() -> None:
    low = simulate_showers(20, 2.0, seed=8)["ECAL"]
    high = simulate_showers(20, 100.0, seed=8)["ECAL"]
    assert (low > 0).mean() < 0.2 * (high > 0).mean()
    assert low[low > 0].min() >= SimConfig().threshold_gev
    no_threshold = simulate_showers(20, 2.0, seed=8, config=SimConfig(threshold_gev=0))["ECAL"]
    assert (low > 0).sum() < (no_threshold > 0).sum()


def test_gflash_spot_mode_agrees_on_the_mean() -> None:
    # without threshold: the reference's 0.07 MeV spots would mostly fall below it
    ref_config = SimConfig(spots="gflash", threshold_gev=0)
    ref = simulate_showers(40, 20.0, seed=9, config=ref_config)["ECAL"]
    fast = simulate_showers(40, 20.0, seed=9, config=SimConfig(threshold_gev=0))["ECAL"]
    assert ref.sum() / fast.sum() == pytest.approx(1.0, abs=0.03)
    assert _z_barycentre(ref).mean() == pytest.approx(_z_barycentre(fast).mean(), abs=0.4)


SMALL_BLOCKS = SimConfig(block_size=8)


def test_same_seed_same_showers_regardless_of_workers() -> None:
    one = simulate_showers(20, (2.0, 20.0), seed=11, config=SMALL_BLOCKS)
    again = simulate_showers(20, (2.0, 20.0), seed=11, config=SMALL_BLOCKS, workers=2)
    other = simulate_showers(20, (2.0, 20.0), seed=12, config=SMALL_BLOCKS)
    for key in one:
        np.testing.assert_array_equal(one[key], again[key])
    assert not np.array_equal(one["ECAL"], other["ECAL"])
    assert not np.array_equal(one["energy"], other["energy"])


def _contents(paths: list[Path]) -> list[dict[str, np.ndarray]]:
    out = []
    for path in paths:
        with h5py.File(path, "r") as f:
            out.append({k: f[k][()] for k in ("ECAL", "energy", "theta", "pdg")})
    return out


def test_files_are_identical_for_one_or_two_workers(tmp_path: Path) -> None:
    kw = {"seed": 3, "shard_size": 15, "config": SMALL_BLOCKS, "progress": False}
    serial = simulate_to_files(tmp_path / "a", 40, (2.0, 10.0), workers=1, **kw)
    parallel = simulate_to_files(tmp_path / "b", 40, (2.0, 10.0), workers=2, **kw)
    assert [p.name for p in serial] == ["showers_000.h5", "showers_001.h5", "showers_002.h5"]
    for a, b in zip(_contents(serial), _contents(parallel), strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    with pytest.raises(RunDirError, match="overwrite"):
        simulate_to_files(tmp_path / "a", 10, 5.0, progress=False)
    # overwriting with fewer showers removes the stale shards
    assert len(simulate_to_files(tmp_path / "a", 10, 5.0, progress=False, overwrite=True)) == 1
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["showers_000.h5"]


def test_pions_are_mips_or_wide_hadronic_showers() -> None:
    out = simulate_showers(200, 50.0, particle="pi+", seed=13)
    assert set(out["pdg"]) == {211}
    ecal = out["ECAL"]
    sums = ecal.sum(axis=(1, 2, 3))
    sf = SimConfig().sampling_fraction_at(50.0)
    # a MIP deposits 7.7 MeV per X0: at most ~0.2 GeV absorbed over the 25 layers
    mip_like = sums < 0.25 * sf
    passing = np.exp(-25 * 3.5 / 99.0)  # no interaction within 25 X0
    assert mip_like.mean() == pytest.approx(passing, abs=0.1)
    track = ecal[mip_like][:, 12, 12, :].sum() / ecal[mip_like].sum()
    assert track > 0.99  # the track stays in the axis cells
    assert sums[~mip_like].std() / sums[~mip_like].mean() > 0.4  # strongly fluctuating
