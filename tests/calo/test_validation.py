"""compare(): an independent sample passes, each distortion is caught by its observable."""

from __future__ import annotations

import numpy as np
import pytest

from scaletrain.calo import compare, fidelity_score

#: The bins of the test samples (fixed energies 20, 100, 300 GeV).
BINS = ("20 GeV", "100 GeV", "300 GeV")


def widen_transverse(ecal: np.ndarray, factor: float) -> np.ndarray:
    """Stretch x and y about the centre by `factor`, conserving energy.

    Each old cell's energy is spread uniformly over its width and redistributed to the new
    cells by overlap: new cell i covers old coordinates c + (edges - c) / factor.
    """
    n = ecal.shape[1]
    c = (n - 1) / 2
    edges = np.arange(n + 1) - 0.5
    old = c + (edges - c) / factor
    lo = np.maximum(old[:-1, None], edges[None, :-1])
    hi = np.minimum(old[1:, None], edges[None, 1:])
    m = np.clip(hi - lo, 0.0, None)  # (new, old) overlap lengths
    out = np.einsum("ix,nxyz->niyz", m, ecal)
    return np.einsum("jy,niyz->nijz", m, out).astype(np.float32)


def shift_one_layer(ecal: np.ndarray) -> np.ndarray:
    out = np.zeros_like(ecal)
    out[..., 1:] = ecal[..., :-1]
    return out


def empty_some(ecal: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    out = ecal.copy()
    out[np.random.default_rng(seed).random(len(out)) < fraction] = 0.0
    return out


@pytest.fixture(scope="module")
def same(independent, reference):
    return compare(independent, reference)


@pytest.fixture(scope="module")
def distorted(independent, reference):
    """compare() of each distorted copy of the independent sample with the reference."""
    ecal = independent["ECAL"]
    copies = {
        "energy_x1.05": ecal * np.float32(1.05),
        "shift_1_layer": shift_one_layer(ecal),
        "radial_x1.2": widen_transverse(ecal, 1.2),
        "empty_10pct": empty_some(ecal, 0.10),
    }
    return {k: compare({**independent, "ECAL": v}, reference) for k, v in copies.items()}


def test_independent_sample_is_indistinguishable(same):
    overall = same.scores["overall"]
    assert abs(overall["auc"] - 0.5) < 0.03
    assert same.fidelity < 0.25
    for label in BINS:
        s = same.scores["bins"][label]
        assert abs(s["sf_rel_error"]) < 0.005
        assert abs(np.log(s["resolution_ratio"])) < 0.1
        assert s["wasserstein_mean"] < 0.15
        assert all(abs(v) < 0.02 for v in s["moments_rel_error"].values())
        # neighbouring layers are strongly correlated, so chi2/ndf fluctuates more than for
        # independent bins: a loose bound that the distortions below exceed a hundredfold
        assert s["chi2_ndf"]["long_shape"] < 8


def test_every_distortion_worsens_fidelity(same, distorted):
    for name, result in distorted.items():
        assert result.fidelity > same.fidelity + 1.0, name


def test_energy_scale_is_caught_by_sampling_fraction(same, distorted):
    r = distorted["energy_x1.05"]
    for label in BINS:
        s = r.scores["bins"][label]
        assert s["sf_rel_error"] == pytest.approx(0.05, abs=0.005)
        # the shape of the shower is untouched
        assert abs(s["moments_rel_error"]["mean_z"]) < 0.02
        assert s["chi2_ndf"]["long_shape"] < 8
    assert r.scores["overall"]["wasserstein"]["sf"] > 1.0


def test_layer_shift_is_caught_by_longitudinal_chi2_and_z_moment(distorted):
    r = distorted["shift_1_layer"]
    for label in BINS:
        s = r.scores["bins"][label]
        assert s["chi2_ndf"]["long_shape"] > 50
        # one layer deeper: the mean depth grows by about one layer
        dz = s["moments_mean_gen"]["mean_z"] - s["moments_mean_ref"]["mean_z"]
        assert 0.8 < dz < 1.05
        assert abs(s["moments_rel_error"]["width_x"]) < 0.02
    assert r.scores["overall"]["wasserstein"]["mean_z"] > 0.3


def test_radial_widening_is_caught_by_transverse_widths(distorted):
    r = distorted["radial_x1.2"]
    for label in BINS:
        s = r.scores["bins"][label]
        for axis in ("width_x", "width_y"):
            assert 0.12 < s["moments_rel_error"][axis] < 0.3
        assert abs(s["moments_rel_error"]["width_z"]) < 0.02
        assert abs(s["sf_rel_error"]) < 0.005  # the widening conserves energy
        assert s["chi2_ndf"]["x"] > 50 and s["chi2_ndf"]["y"] > 50
        assert s["wasserstein"]["width_x"] > 1.0


def test_empty_showers_are_caught_by_hits_energy_and_auc(same, distorted):
    r = distorted["empty_10pct"]
    for label in BINS:
        s, s0 = r.scores["bins"][label], same.scores["bins"][label]
        assert s["hits_mean_gen"] / s["hits_mean_ref"] - 1 == pytest.approx(-0.1, abs=0.03)
        assert s["wasserstein"]["hits"] > s0["wasserstein"]["hits"] + 0.1
        assert s["wasserstein"]["sf"] > s0["wasserstein"]["sf"] + 0.5
    # 10 % perfectly separable showers give AUC 0.55 at most
    assert r.scores["overall"]["auc"] > 0.535


def test_fidelity_score_is_the_compare_fidelity(small_pair):
    gen, ref = small_pair
    assert fidelity_score(gen, ref, seed=3) == compare(gen, ref, seed=3).fidelity


def test_scores_are_deterministic_for_a_seed(small_pair):
    gen, ref = small_pair
    a, b = compare(gen, ref, seed=5), compare(gen, ref, seed=5)
    assert a.scores["overall"]["auc"] == b.scores["overall"]["auc"]


def test_user_edges_bin_the_showers(small_pair):
    gen, ref = small_pair
    result = compare(gen, ref, energy_bins=[10, 100, 400])
    assert list(result.scores["bins"]) == ["10-100 GeV", "100-400 GeV"]
    assert result.scores["bins"]["10-100 GeV"]["n_ref"] == 200


def test_a_bin_with_too_few_showers_is_skipped(small_pair):
    gen, ref = small_pair
    result = compare(gen, ref, energy_bins=[1, 2, 100, 400])
    assert result.scores["bins"]["1-2 GeV"]["skipped"]
    assert np.isfinite(result.fidelity)
