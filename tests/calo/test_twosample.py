"""Two-sample statistics on samples with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from scaletrain.calo import twosample


def test_auc_is_one_for_separated_and_half_for_tied_scores():
    assert twosample.auc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 1.0
    assert twosample.auc(np.ones(5), np.ones(7)) == 0.5


def test_normalized_wasserstein_of_a_one_sigma_shift_is_one():
    r = np.random.default_rng(0).normal(0, 3.0, 20000)
    assert twosample.wasserstein_normalized(r + 3.0, r) == pytest.approx(1.0, rel=0.01)


def test_frechet_distance_is_zero_for_the_same_data_and_the_squared_shift_otherwise():
    x = np.random.default_rng(0).normal(size=(5000, 3))
    assert twosample.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    assert twosample.frechet_distance(x + np.array([2.0, 0, 0]), x) == pytest.approx(4.0, rel=1e-3)


def test_classifier_separates_shifted_and_not_identical_gaussians():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(2000, 4))
    same = rng.normal(size=(2000, 4))
    shifted = same + np.array([1.0, 0, 0, 0])
    g, r = twosample.classifier_scores(same, ref, seed=1)
    assert abs(twosample.auc(g, r) - 0.5) < 0.03
    g, r = twosample.classifier_scores(shifted, ref, seed=1)
    # the best possible AUC for a one-sigma shift is Phi(1/sqrt(2)) = 0.76
    assert twosample.auc(g, r) > 0.72
