"""The Grindhammer–Peters (GFlash) parametrization of electromagnetic showers.

Pure, vectorized formulas; see calo-physics.md. Energies in GeV, depths in X0, radii in
Molière radii. Every function takes arrays of showers (or of showers × depth bins).
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammainc


def longitudinal_moments(energy: np.ndarray, z: float, ec_gev: float) -> tuple[np.ndarray, ...]:
    """<ln T>, <ln α>, σ(ln T), σ(ln α), ρ for a homogeneous medium of atomic number z."""
    ln_y = np.log(np.asarray(energy, dtype=np.float64) / ec_gev)
    mean_ln_t = np.log(ln_y - 0.812)
    mean_ln_a = np.log(0.81 + (0.458 + 2.26 / z) * ln_y)
    sigma_ln_t = 1.0 / (-1.4 + 1.26 * ln_y)
    sigma_ln_a = 1.0 / (-0.58 + 0.86 * ln_y)
    rho = 0.705 - 0.023 * ln_y
    return mean_ln_t, mean_ln_a, sigma_ln_t, sigma_ln_a, rho


def mean_profile_parameters(
    energy: np.ndarray, z: float, ec_gev: float
) -> tuple[np.ndarray, np.ndarray]:
    """(T, α) of the average shower: exp of the mean logarithms."""
    mean_ln_t, mean_ln_a, *_ = longitudinal_moments(energy, z, ec_gev)
    return np.exp(mean_ln_t), np.exp(mean_ln_a)


def sample_profile_parameters(
    energy: np.ndarray, z: float, ec_gev: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Per-shower (T, α) with the correlated fluctuations of ln T and ln α."""
    mean_ln_t, mean_ln_a, sigma_ln_t, sigma_ln_a, rho = longitudinal_moments(energy, z, ec_gev)
    z1, z2 = rng.standard_normal((2, np.size(mean_ln_t)))
    plus, minus = np.sqrt((1 + rho) / 2), np.sqrt((1 - rho) / 2)
    ln_t = mean_ln_t + sigma_ln_t * (plus * z1 + minus * z2)
    ln_a = mean_ln_a + sigma_ln_a * (plus * z1 - minus * z2)
    # α ≤ 1 has no maximum; such rare low-energy fluctuations are clipped just above it
    return np.exp(ln_t), np.maximum(np.exp(ln_a), 1.05)


def spot_profile_parameters(
    t_max: np.ndarray, alpha: np.ndarray, z: float
) -> tuple[np.ndarray, np.ndarray]:
    """(T_s, α_s) of the spots' own longitudinal profile."""
    return t_max * (0.698 + 0.00212 * z), np.maximum(alpha * (0.639 + 0.00334 * z), 1.05)


def profile_fractions(t_max: np.ndarray, alpha: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Fraction of the gamma profile (T, α) in each depth bin; shape (showers, bins)."""
    beta = (alpha - 1.0) / t_max
    cdf = gammainc(alpha[:, None], beta[:, None] * edges[None, :])
    return np.diff(cdf, axis=1)


def radial_parameters(
    tau: np.ndarray, energy: np.ndarray, z: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Rc, Rt, p) at relative depth τ = t/T; energy broadcasts against tau."""
    ln_e = np.log(energy)
    rc = (0.0251 + 0.00319 * ln_e) + (0.1162 - 0.000381 * z) * tau
    k1, k2, k3 = 0.659 - 0.00309 * z, 0.645, -2.59
    k4 = 0.3585 + 0.0412 * ln_e
    rt = k1 * (np.exp(k3 * (tau - k2)) + np.exp(k4 * (tau - k2)))
    p1, p2 = 2.632 - 0.00094 * z, 0.401 + 0.00187 * z
    p3 = 1.313 - 0.0686 * ln_e
    x = (p2 - tau) / p3
    p = np.clip(p1 * np.exp(x - np.exp(x)), 0.0, 1.0)
    return rc, rt, p


def gflash_spot_count(energy: np.ndarray, z: float) -> np.ndarray:
    """The homogeneous-medium spot count N = 93 ln(Z) E^0.876."""
    return 93.0 * np.log(z) * np.asarray(energy, dtype=np.float64) ** 0.876
